"""What every etcd playbook shares: the facts of a master, its files, the operator-side client
and the health gate. The playbooks themselves: :mod:`.deploy`, :mod:`.backup`, :mod:`.restore`,
:mod:`.replace`."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from pyinfra import host as current_host
from pyinfra.api import FactBase
from pyinfra.api.host import Host

from metalseed import etcdclient
from metalseed.deploys import artifacts
from metalseed.deploys.converge import HostSpec, ManagedDir, ManagedFile
from metalseed.errors import DeployError
from metalseed.model import Cluster, Node
from metalseed.pki.issue import store_for
from metalseed.render import etcd as r

HEALTH_TIMEOUT = 90.0
"""Seconds the gates wait for every member to be healthy (a first bootstrap takes a few)."""
FILES_OP = "etcd files (config, unit, certificates)"


class EtcdHostState(FactBase[dict[str, str]]):
    """Everything the etcd deploy needs to know about a master, in one command."""

    def command(self, data_dir: str, bin_dir: str) -> str:
        d, b = shlex.quote(data_dir), shlex.quote(bin_dir)
        unit, packaged = r.UNIT_NAME, r.PACKAGED_UNIT
        return "; ".join([
            f'if [ -d {d}/member ]; then echo data=yes; else echo data=no; fi',
            f'echo "active=$(systemctl is-active {unit} 2>/dev/null)"',
            f'echo "enabled=$(systemctl is-enabled {unit} 2>/dev/null)"',
            f'echo "packaged=$(systemctl is-enabled {packaged} 2>/dev/null)"',
            "dpkg-query -W -f='pkg=${Package}:${db:Status-Abbrev}\\n' "
            f"{' '.join(r.DEBIAN_PACKAGES)} 2>/dev/null",
            f'if [ -x {b}/etcd ] && [ -x {b}/etcdctl ]; then echo binary=yes; '
            'else echo binary=no; fi',
            f'if id -u {r.USER} >/dev/null 2>&1; then echo user=yes; else echo user=no; fi',
            "true",
        ])

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        installed = []
        for line in output:
            key, _, value = line.strip().partition("=")
            if key == "pkg":
                name, _, status = value.partition(":")
                if status.strip().startswith("ii"):
                    installed.append(name)
            elif key:
                out[key] = value.strip()
        out["installed"] = ",".join(sorted(installed))
        return out



def tls_files(cluster: Cluster) -> etcdclient.TLSFiles:
    store = store_for(cluster)
    client = f"{cluster.etcd.store_dir}/{cluster.etcd.admin_client}"
    return etcdclient.TLSFiles(
        # trusts both CAs while a rotation runs
        ca=store.cert_path(f"{cluster.etcd.store_dir}/ca-bundle"),
        cert=store.cert_path(client),
        key=store.key_path(client),
    )


def client_for(cluster: Cluster, timeout: float = 5.0,
               endpoints: Sequence[str] | None = None) -> etcdclient.EtcdClient:
    return etcdclient.EtcdClient(endpoints or cluster.etcd_client_urls(), tls_files(cluster),
                                 timeout=timeout)


def member_names(cluster: Cluster) -> dict[str, str]:
    return {r.member_client_url(cluster, m): m.name for m in cluster.masters}


def wait_cluster_healthy(cluster: Cluster, timeout: float = HEALTH_TIMEOUT,
                         skip: str | None = None) -> None:
    """HealthCheckError naming each member that is not healthy over mutual TLS within
    ``timeout``. ``skip`` leaves one member out (the one about to be restarted)."""
    endpoints = [r.member_client_url(cluster, m) for m in cluster.masters if m.name != skip]
    with client_for(cluster) as c:
        c.wait_healthy(timeout=timeout, endpoints=endpoints, names=member_names(cluster))



def read_store(cluster: Cluster, store_id: str, cert: bool) -> bytes:
    store = store_for(cluster)
    path = store.cert_path(store_id) if cert else store.key_path(store_id)
    data = store.read(path)
    if data is None:
        raise DeployError(f"{path} is missing from the PKI store (run `metalseed pki init`)")
    return data


def host_state(cluster: Cluster, h: Host) -> dict[str, str]:
    return h.get_fact(EtcdHostState, data_dir=cluster.etcd.data_dir, bin_dir=r.binary_dir(cluster))


def master_states(cluster: Cluster, inventory: Any) -> dict[str, dict[str, str] | None]:
    """Facts of every master (None: not reachable), gathered once per run."""
    attr = f"_metalseed_{cluster.etcd.store_dir}_states"  # the datastore's apart
    cached = getattr(inventory, attr, None)
    if cached is not None:
        return cached
    states: dict[str, dict[str, str] | None] = {}
    for m in cluster.masters:
        h = inventory.get_host(m.inventory_name)
        try:
            states[m.name] = host_state(cluster, h) if h.connected else None
        except Exception:  # an unreachable master must not decide anything
            states[m.name] = None
    setattr(inventory, attr, states)
    return states


def this_master(cluster: Cluster) -> Node | None:
    for m in cluster.masters:
        if m.inventory_name == current_host.name:
            return m
    return None


def host_spec(cluster: Cluster, member: Node, bootstrap: str | None) -> HostSpec:
    """Directories and files of one master, converged in one operation. ``bootstrap`` is the
    bootstrap.env text, written only for a member that has no data yet."""
    dirs = (
        ManagedDir("/etc/metalseed", 0o755),
        ManagedDir(r.CONFIG_DIR, 0o755),
        ManagedDir(r.PKI_DIR, 0o750, "root", r.USER),
        ManagedDir(cluster.etcd.data_dir, 0o700, r.USER, r.USER),
    )
    files = [
        ManagedFile(f.path, read_store(cluster, f.store_id, f.cert), f.mode, f.owner, f.group)
        for f in r.pki_files(member, cluster.etcd.store_dir, cluster.etcd.admin_client)
        if f.store_id is not None
    ]
    files += [
        ManagedFile(r.ENV_FILE, r.render_env(cluster, member).encode()),
        ManagedFile(r.ETCDCTL_ENV_FILE, r.render_etcdctl_env(cluster).encode()),
        ManagedFile(r.UNIT_PATH, r.render_unit(cluster, member).encode(), unit_file=True),
    ]
    if bootstrap is not None:
        files.append(ManagedFile(r.BOOTSTRAP_FILE, bootstrap.encode()))
    return HostSpec(dirs=dirs, files=tuple(files))


def binaries(cluster: Cluster) -> tuple[artifacts.Download, ...]:
    """The mirror's etcd and etcdctl for ``etcd_source = "mirror"`` (none otherwise), checked
    against the operator-side manifest (or the pinned upstream sha256) before they are used."""
    if cluster.etcd.source != "mirror":
        return ()
    return artifacts.component_downloads(cluster, "etcd", r.binary_dir(cluster))


def install_commands(cluster: Cluster, st: dict[str, str]) -> list[str]:
    """Pure: the commands that put etcd on a master, given its facts; none when it is there.

    Debian: Debian's own unit is masked *before* the package is installed, so its postinst
    cannot start a default single-member etcd (``--now`` stops one that already runs).
    Tarball: downloaded beside its final name and checked against the sha256 before it is
    renamed, unpacked beside its final directory and renamed: nothing half-done is ever used.
    """
    cmds: list[str] = []
    if cluster.etcd.source == "debian":
        if st.get("packaged") not in ("masked", "masked-runtime"):
            cmds.append(f"systemctl mask --now {r.PACKAGED_UNIT}")
        installed = set(filter(None, st.get("installed", "").split(",")))
        if not set(r.DEBIAN_PACKAGES) <= installed:
            cmds.append("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y "
                        f"-q --no-install-recommends {' '.join(r.DEBIAN_PACKAGES)}")
        return cmds
    if st.get("packaged") in ("enabled", "enabled-runtime", "disabled", "static", "alias"):
        # Debian's package is there (a host image that has it) though not used: its unit must
        # not start a single-member etcd on our client port.
        cmds.append(f"systemctl mask --now {r.PACKAGED_UNIT}")
    if st.get("user") != "yes":
        cmds.append(f"useradd --system --user-group --home-dir {r.data_dir_parent(cluster)} "
                    f"--no-create-home --shell /usr/sbin/nologin {r.USER}")
    if cluster.etcd.source == "mirror":
        return cmds  # the binaries come through artifacts.install (see binaries())
    assert cluster.etcd.tarball_url and cluster.etcd.tarball_sha256
    if st.get("binary") != "yes":
        tgz = r.tarball_path(cluster)
        url = shlex.quote(cluster.etcd.tarball_url)
        d = shlex.quote(r.binary_dir(cluster))
        cmds.append(
            f"mkdir -p {r.TARBALL_CACHE} && "
            f"(curl -fsSL --retry 3 -o {tgz}.part {url} || wget -q -O {tgz}.part {url}) && "
            f"echo '{cluster.etcd.tarball_sha256}  {tgz}.part' | sha256sum -c --quiet && "
            f"mv -f {tgz}.part {tgz} && "
            f"rm -rf {d}.new && mkdir -p {d}.new && "
            f"tar -xzf {tgz} -C {d}.new --strip-components=1 --no-same-owner && "
            f"test -x {d}.new/etcd && test -x {d}.new/etcdctl && rm -rf {d} && mv {d}.new {d}")
    return cmds


