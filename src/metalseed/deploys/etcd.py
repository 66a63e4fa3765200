"""etcd on the masters: install, converge, health-gate; backup, restore and member replacement.

Cost: a no-change run is one fact command and one file check per master, plus a health check
from the operator's machine. Everything else is added only when the facts say it is needed
(decided at prepare time), so a converged cluster costs about as much as two `ssh true` per host.

Safety rules this module keeps:

* The etcd CA key never leaves the operator's store; a master gets its own server and peer pairs,
  the healthcheck client pair and the CA certificate (:func:`metalseed.render.etcd.pki_files`).
* A member is restarted only when its own files changed, one member at a time, and only when
  every *other* member is healthy (so the restart cannot cost quorum); the next one waits until
  the restarted member is healthy again.
* A member bootstraps a *new* cluster only when every master was reached and none has data.
  A master without data beside masters with data joins only if the cluster lists it as an
  unstarted member; anything else is a replacement (``deploys/etcd-replace-member.py``), since
  a member that rejoins under its old identity after losing its data can break Raft's promises.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shlex
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pyinfra import host as current_host
from pyinfra.api import FactBase, FunctionCommand, StringCommand, deploy, operation
from pyinfra.api.host import Host
from pyinfra.api.state import State
from pyinfra.operations import files, python, server

from metalseed import etcdclient
from metalseed.deploys.converge import HostSpec, ManagedDir, ManagedFile, converge
from metalseed.errors import DeployError, EtcdError, HealthCheckError
from metalseed.model import Cluster, Node, cluster_from_inventory
from metalseed.pki.issue import ensure_store, store_for
from metalseed.render import etcd as r

T = TypeVar("T")

HEALTH_TIMEOUT = 90.0
FILES_OP = "etcd files (config, unit, certificates)"
"""Seconds the gates wait for every member to be healthy (a first bootstrap takes a few)."""
SNAPSHOT_NAME = "metalseed-snapshot.db"


# ---------------------------------------------------------------------------------------------
# Facts


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


def _raise(exc: BaseException) -> None:
    raise exc


@operation()
def gate(check: Callable[[], None], description: str) -> Generator[Any, None, None]:
    """Run ``check`` on the operator's machine when the deploy executes. It is not a change: a
    passing gate yields no command; a failing one yields a command that raises, so pyinfra
    reports the failure against this operation."""
    del description  # only names the operation
    if not current_host.state.is_executing:
        return
    try:
        check()
    except Exception as e:
        yield FunctionCommand(_raise, (e,), {})


# ---------------------------------------------------------------------------------------------
# Operator-side helpers


def tls_files(cluster: Cluster) -> etcdclient.TLSFiles:
    store = store_for(cluster)
    return etcdclient.TLSFiles(
        ca=store.cert_path("etcd/ca-bundle"),  # trusts both CAs while a rotation runs
        cert=store.cert_path("etcd/healthcheck-client"),
        key=store.key_path("etcd/healthcheck-client"),
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


_shared_lock = threading.Lock()


def shared(state: State, key: str, fn: Callable[[], T]) -> T:
    """Compute ``fn`` once per run and hand every host the same result -- or the same error, so
    that a failed gate stops *every* host, not only the first (pyinfra carries on with the hosts
    an operation did not fail on)."""
    cache: dict[str, tuple[bool, Any]] = state.__dict__.setdefault("_metalseed_shared", {})
    with _shared_lock:
        if key not in cache:
            try:
                cache[key] = (True, fn())
            except Exception as e:
                cache[key] = (False, e)
    ok, value = cache[key]
    if not ok:
        raise value
    return value


def _read_store(cluster: Cluster, store_id: str, cert: bool) -> bytes:
    store = store_for(cluster)
    path = store.cert_path(store_id) if cert else store.key_path(store_id)
    data = store.read(path)
    if data is None:
        raise DeployError(f"{path} is missing from the PKI store (run `metalseed pki init`)")
    return data


def _host_state(cluster: Cluster, h: Host) -> dict[str, str]:
    return h.get_fact(EtcdHostState, data_dir=cluster.etcd.data_dir, bin_dir=r.binary_dir(cluster))


def _master_states(cluster: Cluster, inventory: Any) -> dict[str, dict[str, str] | None]:
    """Facts of every master (None: not reachable), gathered once per run."""
    cached = getattr(inventory, "_metalseed_etcd_states", None)
    if cached is not None:
        return cached
    states: dict[str, dict[str, str] | None] = {}
    for m in cluster.masters:
        h = inventory.get_host(m.inventory_name)
        try:
            states[m.name] = _host_state(cluster, h) if h.connected else None
        except Exception:  # an unreachable master must not decide anything
            states[m.name] = None
    inventory._metalseed_etcd_states = states
    return states


def _this_master(cluster: Cluster) -> Node | None:
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
        ManagedFile(f.path, _read_store(cluster, f.store_id, f.cert), f.mode, f.owner, f.group)
        for f in r.pki_files(member) if f.store_id is not None
    ]
    files += [
        ManagedFile(r.ENV_FILE, r.render_env(cluster, member).encode()),
        ManagedFile(r.ETCDCTL_ENV_FILE, r.render_etcdctl_env(cluster).encode()),
        ManagedFile(r.UNIT_PATH, r.render_unit(cluster, member).encode(), unit_file=True),
    ]
    if bootstrap is not None:
        files.append(ManagedFile(r.BOOTSTRAP_FILE, bootstrap.encode()))
    return HostSpec(dirs=dirs, files=tuple(files))


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
    assert cluster.etcd.tarball_url and cluster.etcd.tarball_sha256
    if st.get("user") != "yes":
        cmds.append(f"useradd --system --user-group --home-dir {r.data_dir_parent(cluster)} "
                    f"--no-create-home --shell /usr/sbin/nologin {r.USER}")
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


@operation()
def run_commands(commands: Sequence[str]) -> Generator[Any, None, None]:
    """Shell commands decided at prepare time; no commands, no change.

    Every master calls every operation, with an empty list where nothing is needed: in
    pyinfra's API mode an operation is identified by its position, so hosts must make the same
    sequence of calls (the CLI goes by line number and would not mind)."""
    for c in commands:
        yield StringCommand(c)


@operation()
def call_if(needed: bool, function: Callable[..., None], **kwargs: Any
            ) -> Generator[Any, None, None]:
    """``function(state, host, **kwargs)`` on the operator's machine, only where ``needed``."""
    if needed:
        yield FunctionCommand(function, (), kwargs)


# ---------------------------------------------------------------------------------------------
# Runtime callbacks (executed by pyinfra, on the operator's machine)


def _check_joinable(state: State, host: Host, cluster: Cluster, member: Node) -> None:
    """Before first start of a member that has no data while others have: it may join only as
    the unstarted member the cluster already lists for it."""
    url = r.member_peer_url(cluster, member)
    with client_for(cluster) as c:
        members = c.members()
    listed = [m for m in members if url in m.peer_urls]
    wanted = {r.member_peer_url(cluster, m) for m in cluster.masters}
    current = {u for m in members for u in m.peer_urls}
    if listed and not listed[0].started and current == wanted:
        return
    raise DeployError(
        f"{member.name} has no etcd data but the cluster already exists (members: "
        + ", ".join(f"{m.name or '(unstarted)'} {','.join(m.peer_urls)}" for m in members)
        + "). Starting it would either fail or rejoin under the identity of a member that lost "
        "its data. Replace it instead: METALSEED_ETCD_REPLACE="
        f"{member.name} pyinfra INVENTORY deploys/etcd-replace-member.py"
    )


def _restart_member(state: State, host: Host, cluster: Cluster, member: Node) -> None:
    """Restart one member whose files changed, between two health gates."""
    try:
        wait_cluster_healthy(cluster, timeout=HEALTH_TIMEOUT, skip=member.name)
    except HealthCheckError as e:
        raise HealthCheckError(
            f"not restarting {member.name}: the other members must be healthy first, or the "
            f"restart could cost quorum. {e}") from None
    ok, out = host.run_shell_command(StringCommand(
        f"systemctl daemon-reload && systemctl restart {r.UNIT_NAME}"))
    if not ok:
        raise DeployError(f"{member.name}: restarting {r.UNIT_NAME} failed: "
                          + " ".join(out.stderr_lines[-5:]))
    wait_cluster_healthy(cluster, timeout=HEALTH_TIMEOUT)


# ---------------------------------------------------------------------------------------------
# The deploy


@deploy("etcd")
def etcd() -> None:
    """Install and converge etcd on every master, then wait until all members are healthy."""
    cluster = cluster_from_inventory(current_host.inventory)
    member = _this_master(cluster)
    if member is None:
        return
    ensure_store(cluster, current_host.inventory)
    states = _master_states(cluster, current_host.inventory)
    st = states.get(member.name) or {}
    has_data = st.get("data") == "yes"
    was_active = st.get("active") == "active"

    run_commands(name="Install etcd", commands=install_commands(cluster, st))

    bootstrap = None
    joining = False
    if not has_data:
        fresh = all(s is not None and s.get("data") != "yes" for s in states.values())
        joining = not fresh
        bootstrap = r.render_bootstrap(cluster.etcd_initial_cluster(),
                                       "new" if fresh else "existing", r.cluster_token(cluster))
    changed = converge(name=FILES_OP, spec=host_spec(cluster, member, bootstrap))

    call_if(name="Check the cluster expects this member", needed=joining,
            function=_check_joinable, cluster=cluster, member=member)
    start: list[str] = []
    if not was_active:
        # --no-block: a member of a new cluster reports ready only once a quorum of its peers
        # is up, so a blocking start would need every host's start running at the same time
        # (pyinfra's API mode without gevent's monkey-patching runs them one after another).
        # The health gate below does the waiting, for all members at once.
        start = ["systemctl daemon-reload", f"systemctl enable {r.UNIT_NAME}",
                 f"systemctl start --no-block {r.UNIT_NAME}"]
    elif st.get("enabled") != "enabled":
        start = [f"systemctl enable {r.UNIT_NAME}"]
    run_commands(name="Start etcd", commands=start)
    call_if(name="Rolling restart of etcd (health-gated)",
            needed=was_active and changed.will_change, function=_restart_member,
            cluster=cluster, member=member, _serial=True)
    gate(name="etcd: every member healthy over mutual TLS", description="health",
         check=lambda: wait_cluster_healthy(cluster), _run_once=True)


# ---------------------------------------------------------------------------------------------
# Backup


def backup_dir(cluster: Cluster) -> Path:
    return Path(os.environ.get("METALSEED_BACKUP_DIR", "backups")) / cluster.name


@dataclass(frozen=True)
class SnapshotInfo:
    path: Path
    manifest: dict[str, Any]


def list_snapshots(cluster: Cluster) -> list[SnapshotInfo]:
    """Snapshots under backups/<cluster>/, oldest first (names sort by time)."""
    out = []
    d = backup_dir(cluster)
    if d.is_dir():
        for p in sorted(d.glob("*.db")):
            m = p.with_suffix(".json")
            if m.is_file():
                out.append(SnapshotInfo(p, json.loads(m.read_text())))
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pick_snapshot_member(cluster: Cluster) -> Node:
    """A healthy member, a follower when there is one (the leader has enough to do)."""
    with client_for(cluster) as c:
        results = c.cluster_health(timeout=3.0)
    healthy = [h for h in results if h.healthy and h.status is not None]
    if not healthy:
        raise HealthCheckError("no healthy etcd member to take a snapshot from:\n  "
                               + "\n  ".join(h.error for h in results))
    healthy.sort(key=lambda h: h.status is not None and h.status.member_id == h.status.leader)
    by_url = {r.member_client_url(cluster, m): m for m in cluster.masters}
    return by_url[healthy[0].endpoint]


def _take_backup(state: State, host: Host, cluster: Cluster, retention: int) -> None:
    member = _pick_snapshot_member(cluster)
    target = state.inventory.get_host(member.inventory_name)
    remote = f"{r.data_dir_parent(cluster)}/{SNAPSHOT_NAME}"
    ok, out = target.run_shell_command(StringCommand(r.snapshot_save_command(cluster, remote)))
    if not ok:
        raise EtcdError(f"snapshot on {member.name} failed: " + " ".join(out.stderr_lines[-5:]))
    try:
        status = json.loads(out.stdout_lines[-1])
    except (IndexError, ValueError) as e:
        raise EtcdError(f"snapshot status from {member.name} unreadable: {out.stdout}") from e

    d = backup_dir(cluster)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = f"{cluster.name}-{stamp}-rev{status['revision']}"
    local = d / f"{base}.db"
    part = d / f"{base}.db.part"
    try:
        if not target.get_file(remote, str(part)):
            raise EtcdError(f"could not fetch {remote} from {member.name}")
        os.chmod(part, 0o600)
        part.replace(local)
    finally:
        part.unlink(missing_ok=True)
        target.run_shell_command(StringCommand(f"rm -f {shlex.quote(remote)}"))
    manifest = {
        "cluster": cluster.name,
        "member": member.name,
        "created": stamp,
        "revision": status["revision"],
        "hash": status["hash"],
        "total_keys": status["totalKey"],
        "size": local.stat().st_size,
        "sha256": _sha256_file(local),
    }
    local.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    host.log_styled(f"etcd snapshot {local} (revision {status['revision']}, "
                    f"hash {status['hash']}, {status['totalKey']} keys)")

    for old in list_snapshots(cluster)[:-retention]:
        old.path.unlink(missing_ok=True)
        old.path.with_suffix(".json").unlink(missing_ok=True)


@deploy("etcd backup")
def etcd_backup(retention: int = 7) -> None:
    """A consistent snapshot from one healthy member, fetched to backups/<cluster>/ with its
    revision and hash; keeps the newest ``retention`` snapshots."""
    if retention < 1:
        raise DeployError(f"etcd backup retention: found {retention}; accepted: 1 or more")
    cluster = cluster_from_inventory(current_host.inventory)
    if _this_master(cluster) is None:
        return
    python.call(name="etcd: snapshot to the operator's machine", function=_take_backup,
                cluster=cluster, retention=retention, _run_once=True)


# ---------------------------------------------------------------------------------------------
# Restore


def _restore_precheck(cluster: Cluster, snapshot: Path, force: bool) -> None:
    manifest_path = snapshot.with_suffix(".json")
    if not snapshot.is_file():
        raise DeployError(f"snapshot {snapshot} does not exist")
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("cluster") != cluster.name:
            raise DeployError(f"snapshot {snapshot} is of cluster {manifest.get('cluster')!r}, "
                              f"not {cluster.name!r}")
        if _sha256_file(snapshot) != manifest.get("sha256"):
            raise DeployError(f"snapshot {snapshot} does not match the sha256 in {manifest_path}")
    if force:
        return
    with client_for(cluster, timeout=2.0) as c:
        healthy = [h for h in c.cluster_health(timeout=2.0) if h.healthy]
    if healthy:
        raise DeployError(
            "etcd still has a quorum (healthy: " + ", ".join(h.endpoint for h in healthy)
            + "); a restore would discard every write since the snapshot. Replace failed "
            "members instead, or set METALSEED_ETCD_RESTORE_FORCE=1 to restore anyway.")


def restore_token(cluster: Cluster, snapshot: Path) -> str:
    # A new cluster id: members of the old cluster (a machine that comes back later) cannot
    # talk to the restored one by mistake.
    return f"{cluster.name}-etcd-restore-{hashlib.sha256(snapshot.name.encode()).hexdigest()[:8]}" \
           f"-{int(time.time())}"


@deploy("etcd restore")
def etcd_restore(snapshot: str | Path | None = None, force: bool = False) -> None:
    """Rebuild every member from one snapshot (the newest in backups/<cluster>/ by default) as
    a new cluster of all masters, then start them together and wait until all are healthy."""
    cluster = cluster_from_inventory(current_host.inventory)
    member = _this_master(cluster)
    if member is None:
        return
    if snapshot is None:
        snaps = list_snapshots(cluster)
        if not snaps:
            raise DeployError(f"no snapshot in {backup_dir(cluster)}; give one with "
                              "METALSEED_ETCD_SNAPSHOT=PATH")
        snapshot = snaps[-1].path
    snap = Path(snapshot)
    inv: Any = current_host.inventory
    ensure_store(cluster, inv)
    token = getattr(inv, "_metalseed_restore_token", None) or restore_token(cluster, snap)
    inv._metalseed_restore_token = token

    gate(name="etcd restore: snapshot verified, quorum lost", description="restore",
         check=lambda: shared(current_host.state, "restore-precheck",
                              lambda: _restore_precheck(cluster, snap, force)))
    st = _master_states(cluster, inv).get(member.name) or {}
    run_commands(name="Install etcd", commands=install_commands(cluster, st))
    converge(name=FILES_OP, spec=host_spec(cluster, member, None))
    remote = f"/root/{SNAPSHOT_NAME}"
    files.put(name="Upload the snapshot", src=str(snap), dest=remote, mode="0600")
    server.shell(name="Stop etcd", commands=[f"systemctl stop {r.UNIT_NAME}"])
    server.shell(name="Restore the data directory from the snapshot",
                 commands=[r.snapshot_restore_command(cluster, member, remote, token)])
    server.shell(name="Start etcd (all members together)", commands=[
        "systemctl daemon-reload", f"systemctl enable {r.UNIT_NAME}",
        f"systemctl start --no-block {r.UNIT_NAME}"])
    files.file(name="Remove the uploaded snapshot", path=remote, present=False)
    gate(name="etcd: every member healthy over mutual TLS", description="health",
         check=lambda: wait_cluster_healthy(cluster), _run_once=True)


# ---------------------------------------------------------------------------------------------
# Member replacement


@dataclass(frozen=True)
class ReplacePlan:
    member: Node
    remove: etcdclient.Member | None
    """The old member to remove (None when an earlier run already removed it)."""
    already_added: etcdclient.Member | None
    initial_cluster: str


def plan_replacement(cluster: Cluster, members: Sequence[etcdclient.Member],
                     healthy_urls: set[str], name: str) -> ReplacePlan:
    """Pure: which member to remove and what to add so that master ``name`` runs on the machine
    the model now gives it. The member removed is the one of that name or peer URL, or else the
    one member the model no longer has. Refuses whenever a step could cost quorum."""
    try:
        member = next(m for m in cluster.masters if m.name == name)
    except StopIteration:
        raise DeployError(f"etcd replace: {name!r} is not a master of cluster {cluster.name} "
                          f"(masters: {', '.join(m.name for m in cluster.masters)})") from None
    new_peer = r.member_peer_url(cluster, member)
    added = next((m for m in members if new_peer in m.peer_urls and m.name in ("", name)
                  and (m.is_learner or not m.started)), None)
    model_peers = {r.member_peer_url(cluster, m) for m in cluster.masters}
    model_names = {m.name for m in cluster.masters}
    same = [m for m in members if m is not added and (m.name == name or new_peer in m.peer_urls)]
    gone = [m for m in members if m is not added and m not in same
            and m.name not in model_names and not set(m.peer_urls) & model_peers]
    stale = same or gone
    if len(stale) > 1:
        raise DeployError(
            "etcd replace: more than one member to remove ("
            + ", ".join(f"{m.name or '(unstarted)'} {','.join(m.peer_urls)}" for m in stale)
            + "); replace one member per run")
    remove = stale[0] if stale else None
    if remove is not None and any(u in healthy_urls for u in remove.client_urls):
        raise DeployError(f"etcd replace: member {remove.name} ({','.join(remove.client_urls)}) "
                          "is healthy; replace only a member that is gone")
    voters = [m for m in members if not m.is_learner and m is not remove and m is not added]
    healthy_voters = [m for m in voters if any(u in healthy_urls for u in m.client_urls)]
    if not voters or len(healthy_voters) != len(voters):
        raise DeployError(
            "etcd replace: every remaining member must be healthy before a replacement "
            f"(healthy {len(healthy_voters)} of {len(voters)}); a second failure during the "
            "replacement would cost quorum. With quorum lost, use deploys/etcd-restore.py")
    parts = [f"{m.name}={u}" for m in voters for u in m.peer_urls]
    parts.append(f"{name}={new_peer}")
    return ReplacePlan(member, remove, added, ",".join(parts))


def _membership_plan(cluster: Cluster, name: str) -> ReplacePlan:
    with client_for(cluster, timeout=3.0) as c:
        health = c.cluster_health(timeout=2.0)
        healthy_urls = {h.endpoint for h in health if h.healthy}
        members = c.members()
    return plan_replacement(cluster, members, healthy_urls, name)


def _swap_member(state: State, host: Host, cluster: Cluster, plan: ReplacePlan) -> None:
    """Remove the dead member, add the replacement as a learner (it does not count towards
    quorum until promoted)."""
    others = [r.member_client_url(cluster, m) for m in cluster.masters
              if m.name != plan.member.name]
    with client_for(cluster, endpoints=others) as c:
        c.wait_healthy(timeout=30, names=member_names(cluster))
        if plan.remove is not None:
            c.remove(plan.remove.id)
        if plan.already_added is None:
            # etcd's strict reconfiguration check refuses a member change ("unhealthy cluster")
            # until the member handling it has been connected to every other member for 5 s;
            # right after the removal, or after a member restarted, that takes a moment.
            deadline = time.monotonic() + 30
            while True:
                try:
                    c.add_learner([r.member_peer_url(cluster, plan.member)])
                    break
                except EtcdError as e:
                    if "unhealthy cluster" not in str(e) or time.monotonic() > deadline:
                        raise
                    time.sleep(1.0)


def _promote(state: State, host: Host, cluster: Cluster, plan: ReplacePlan,
             timeout: float = 120.0) -> None:
    """Promote the learner once it has caught up (etcd refuses before), then wait for all."""
    url = r.member_peer_url(cluster, plan.member)
    deadline = time.monotonic() + timeout
    with client_for(cluster) as c:
        while True:
            learner = next((m for m in c.members() if url in m.peer_urls), None)
            if learner is None:
                raise EtcdError(f"{plan.member.name} is no longer a member")
            if not learner.is_learner:
                break
            try:
                c.promote(learner.id)
                break
            except EtcdError as e:
                if time.monotonic() > deadline:
                    raise EtcdError(f"{plan.member.name} did not catch up within "
                                    f"{timeout:.0f}s: {e}") from None
                time.sleep(0.5)
    wait_cluster_healthy(cluster)


@deploy("etcd replace member")
def etcd_replace_member(member_name: str) -> None:
    """Bring member ``member_name`` up on the machine the inventory now gives it (a fresh one), without
    losing quorum: remove the old member, add the new one as a learner, start it, promote it."""
    cluster = cluster_from_inventory(current_host.inventory)
    # (Not `name`: pyinfra takes that keyword for the operation name.)
    member = _this_master(cluster)
    if member is None or member.name != member_name:
        return
    ensure_store(cluster, current_host.inventory)
    plan = _membership_plan(cluster, member_name)
    st = _host_state(cluster, current_host)
    run_commands(name="Install etcd", commands=install_commands(cluster, st))
    resumed = plan.already_added is not None and plan.already_added.started
    if not resumed and (st.get("active") == "active" or st.get("data") == "yes"):
        d = shlex.quote(cluster.etcd.data_dir)
        server.shell(name="Set aside this machine's old etcd data", commands=[
            f"systemctl stop {r.UNIT_NAME}",
            # Recreated at once: the file check of this run saw it and will not create it.
            f"if [ -e {d} ]; then mv {d} {d}.replaced-$(date +%Y%m%dT%H%M%S); fi",
            f"install -d -m 700 -o {r.USER} -g {r.USER} {d}"])
    bootstrap = r.render_bootstrap(plan.initial_cluster, "existing", r.cluster_token(cluster))
    converge(name=FILES_OP, spec=host_spec(cluster, member, bootstrap))
    python.call(name="etcd: remove the old member, add this one as a learner",
                function=_swap_member, cluster=cluster, plan=plan)
    server.shell(name="Start etcd", commands=[
        "systemctl daemon-reload", f"systemctl enable {r.UNIT_NAME}",
        f"systemctl start --no-block {r.UNIT_NAME}"])
    python.call(name="etcd: promote the learner once it caught up", function=_promote,
                cluster=cluster, plan=plan)
