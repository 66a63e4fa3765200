"""etcd on the masters: the files each master runs from, as pure functions of the model.

Layout on a master::

    /etc/systemd/system/metalseed-etcd.service   the unit (our own, see UNIT_NAME)
    /etc/metalseed/etcd/etcd.env                 every setting that is fixed for a member
    /etc/metalseed/etcd/bootstrap.env            initial-cluster*: only read while the data dir is empty
    /etc/metalseed/etcd/etcdctl.env              for operators: `set -a; . etcdctl.env; etcdctl ...`
    /etc/metalseed/etcd/pki/                     this member's keys, the healthcheck client, the CA cert

Settings go to an environment file rather than etcd's YAML ``--config-file`` because etcd ignores
every environment variable once a config file is given, and the bootstrap settings must live in a
file of their own (see :func:`render_bootstrap`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

from metalseed.model import Cluster, Node
from metalseed.render.templates import render

UNIT_NAME = "metalseed-etcd.service"
"""Our own unit rather than Debian's ``etcd.service``: Debian's package starts a single-member etcd
on localhost as soon as it is installed, and restarts ``etcd.service`` on every package upgrade --
on all masters at once under unattended-upgrades, which loses quorum. Debian's unit is masked; ours
is restarted only by the deploy, one member at a time, behind a health gate."""
PACKAGED_UNIT = "etcd.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
CONFIG_DIR = "/etc/metalseed/etcd"
PKI_DIR = f"{CONFIG_DIR}/pki"
ENV_FILE = f"{CONFIG_DIR}/etcd.env"
BOOTSTRAP_FILE = f"{CONFIG_DIR}/bootstrap.env"
ETCDCTL_ENV_FILE = f"{CONFIG_DIR}/etcdctl.env"
USER = "etcd"
DEBIAN_PACKAGES = ("etcd-server", "etcd-client")
TARBALL_ROOT = "/opt/metalseed/etcd"
"""Tarball and mirror binaries live in a directory per version (or tarball hash), so a new one
never overwrites the binary a running member was started from."""
TARBALL_CACHE = "/var/cache/metalseed"

# ECDHE + AEAD only; why that is etcd 3.4's TLS 1.2 minimum: beside ETCD_CIPHER_SUITES in
# files/etcd/etcd.env.j2.
CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
)


@dataclass(frozen=True)
class HostFile:
    """A file the deploy keeps on a master; ``store_id`` files come from the PKI store."""

    path: str
    mode: int
    owner: str = "root"
    group: str = "root"
    store_id: str | None = None
    """PKI store id (``etcd/ca``); ``cert`` says whether the ``.crt`` or the ``.key`` is meant."""
    cert: bool = True


@dataclass(frozen=True)
class PKIFiles:
    ca: str
    cert: str
    key: str
    peer_cert: str
    peer_key: str
    client_cert: str
    client_key: str


PKI = PKIFiles(
    ca=f"{PKI_DIR}/ca.crt",
    cert=f"{PKI_DIR}/server.crt",
    key=f"{PKI_DIR}/server.key",
    peer_cert=f"{PKI_DIR}/peer.crt",
    peer_key=f"{PKI_DIR}/peer.key",
    client_cert=f"{PKI_DIR}/healthcheck-client.crt",
    client_key=f"{PKI_DIR}/healthcheck-client.key",
)


def pki_files(member: Node, store_dir: str = "etcd",
              client: str = "healthcheck-client") -> list[HostFile]:
    """What a master receives from the store: its own pairs, the healthcheck client, the CA trust
    bundle (the CA, plus the other CA while a rotation runs). Never a CA key, never another
    member's key. ``store_dir``/``client``: the datastore's (``datastore``, ``root``) instead."""
    server_id = f"{store_dir}/{member.name}/server"
    peer_id = f"{store_dir}/{member.name}/peer"
    client_id = f"{store_dir}/{client}"
    cert, key = 0o644, 0o600
    return [
        HostFile(PKI.ca, cert, USER, USER, f"{store_dir}/ca-bundle", cert=True),
        HostFile(PKI.cert, cert, USER, USER, server_id, cert=True),
        HostFile(PKI.key, key, USER, USER, server_id, cert=False),
        HostFile(PKI.peer_cert, cert, USER, USER, peer_id, cert=True),
        HostFile(PKI.peer_key, key, USER, USER, peer_id, cert=False),
        HostFile(PKI.client_cert, cert, USER, USER, client_id, cert=True),
        HostFile(PKI.client_key, key, USER, USER, client_id, cert=False),
    ]


def mirror_version() -> str:
    """The etcd version the mirror pins (``v3.6.16``)."""
    from metalseed.mirror import load_pins

    return load_pins().get("etcd").version


def binary_dir(cluster: Cluster) -> str:
    """Where ``etcd`` and ``etcdctl`` live: Debian's /usr/bin, or a directory per tarball hash or
    mirror version (see TARBALL_ROOT)."""
    if cluster.etcd.source == "tarball":
        assert cluster.etcd.tarball_sha256 is not None
        return f"{TARBALL_ROOT}/{cluster.etcd.tarball_sha256[:16]}"
    if cluster.etcd.source == "mirror":
        return f"{TARBALL_ROOT}/{mirror_version()}"
    return "/usr/bin"


def modern(cluster: Cluster) -> bool:
    """etcd >= 3.5 (the mirror's 3.6): ``--tls-min-version`` and feature gates exist, the v2 API
    and its switch are gone. Debian's package, and a tarball, are taken as 3.4."""
    return cluster.etcd.source == "mirror"


def tarball_path(cluster: Cluster) -> str:
    assert cluster.etcd.tarball_sha256 is not None
    return f"{TARBALL_CACHE}/etcd-{cluster.etcd.tarball_sha256[:16]}.tar.gz"


def etcdctl(cluster: Cluster) -> str:
    return f"{binary_dir(cluster)}/etcdctl"


def snapshot_tool(cluster: Cluster) -> str:
    """What reads and restores snapshot files: etcdutl since 3.6 (etcdctl kept only ``save``)."""
    return f"{binary_dir(cluster)}/etcdutl" if modern(cluster) else etcdctl(cluster)


def member_peer_url(cluster: Cluster, member: Node) -> str:
    return f"https://{member.address}:{cluster.etcd.peer_port}"


def member_client_url(cluster: Cluster, member: Node) -> str:
    return f"https://{member.address}:{cluster.etcd.client_port}"


def cluster_token(cluster: Cluster) -> str:
    """``<cluster>-etcd``, or ``<cluster>-datastore`` for the datastore: two etcd clusters of one
    name never share a token."""
    return f"{cluster.name}-{cluster.etcd.store_dir}"


_ENV_UNSAFE = " \t\"'\\$`"


def _checked_env(text: str) -> str:
    """``text`` unchanged, once every ``KEY=value`` line in it is safe to write bare.

    systemd's EnvironmentFile= takes VAR=value with optional double quotes; none of our values
    contains a space or a quote, so they are written bare (and stay valid for `sh` too). Checked on
    the rendered file, so the error names the variable as the host would see it.
    """
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        key, _, value = line.partition("=")
        if any(c in value for c in _ENV_UNSAFE):
            raise ValueError(f"{key}: value {value!r} cannot be written to an environment file")
    return text


def render_env(cluster: Cluster, member: Node) -> str:
    """Every setting that stays the same for the life of a member."""
    e = cluster.etcd
    addr = str(member.address)
    return _checked_env(render(
        "etcd/etcd.env.j2",
        member=member.name,
        cluster=cluster.name,
        data_dir=e.data_dir,
        peer_url=member_peer_url(cluster, member),
        listen_client_urls=",".join(dict.fromkeys(
            [f"https://{addr}:{e.client_port}", f"https://127.0.0.1:{e.client_port}"])),
        client_url=member_client_url(cluster, member),
        metrics_url=f"http://127.0.0.1:{e.metrics_port}",
        heartbeat_ms=e.heartbeat_ms,
        election_ms=e.election_ms,
        pki=PKI,
        cipher_suites=",".join(CIPHER_SUITES),
        modern=modern(cluster),
    ))


def render_bootstrap(initial_cluster: str, state: str, token: str) -> str:
    """The settings etcd reads only while its data directory is empty.

    They live apart from :func:`render_env` because they describe the cluster *as it was when
    this member joined*: keeping them out of etcd.env means a later membership change does not
    rewrite (and restart) every other member, and a member with data never sees a change.
    """
    if state not in ("new", "existing"):
        raise ValueError(f"initial cluster state {state!r}: 'new' or 'existing'")
    return _checked_env(render("etcd/bootstrap.env.j2", initial_cluster=initial_cluster,
                               state=state, token=token))


def render_etcdctl_env(cluster: Cluster) -> str:
    return _checked_env(render("etcd/etcdctl.env.j2", path=ETCDCTL_ENV_FILE,
                               endpoint=f"https://127.0.0.1:{cluster.etcd.client_port}", pki=PKI))


def render_unit(cluster: Cluster, member: Node) -> str:
    return render(
        "etcd/metalseed-etcd.service.j2",
        member=member.name,
        cluster=cluster.name,
        packaged_unit=PACKAGED_UNIT,
        user=USER,
        env_file=ENV_FILE,
        bootstrap_file=BOOTSTRAP_FILE,
        etcd=f"{binary_dir(cluster)}/etcd",
    )


def data_dir_parent(cluster: Cluster) -> str:
    return str(PurePosixPath(cluster.etcd.data_dir).parent)


# ---------------------------------------------------------------------------------------------
# Day-2 commands, rendered here so that their argv is unit-tested like the files.


def snapshot_save_command(cluster: Cluster, remote_path: str) -> str:
    """Save a snapshot of the local member (its own consistent copy of the keyspace) and print
    its status as JSON (hash, revision, totalKey, totalSize) on the last line."""
    ctl = shlex.quote(etcdctl(cluster))
    path = shlex.quote(remote_path)
    return (
        f"set -a && . {ETCDCTL_ENV_FILE} && set +a && umask 077 && "
        f"rm -f {path} {path}.part && {ctl} --command-timeout=120s snapshot save {path} >&2 && "
        f"{shlex.quote(snapshot_tool(cluster))} -w json snapshot status {path}"
    )


def snapshot_restore_command(cluster: Cluster, member: Node, snapshot: str, token: str) -> str:
    """Rebuild ``member``'s data directory from a snapshot as a member of a fresh cluster of all
    masters. The old data directory is kept beside it, renamed, never deleted."""
    tool = shlex.quote(snapshot_tool(cluster))
    data_dir = cluster.etcd.data_dir
    args = [
        tool, "snapshot", "restore", shlex.quote(snapshot),
        f"--name={member.name}",
        f"--initial-cluster={cluster.etcd_initial_cluster()}",
        f"--initial-cluster-token={token}",
        f"--initial-advertise-peer-urls={member_peer_url(cluster, member)}",
        f"--data-dir={shlex.quote(data_dir)}",
        # The restore runs before etcd's own corrupt check: refuse a snapshot whose hash is bad.
        "--skip-hash-check=false",
    ]
    d = shlex.quote(data_dir)
    return (
        f"set -e; rmdir {d} 2>/dev/null || true; "
        f"if [ -e {d} ]; then mv {d} {d}.before-restore-$(date +%Y%m%dT%H%M%S); fi; "
        f"{'' if modern(cluster) else 'ETCDCTL_API=3 '}{' '.join(args)} >&2; "
        f"chown -R {USER}:{USER} {d}; chmod 0700 {d}"
    )
