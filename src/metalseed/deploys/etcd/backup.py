"""A consistent etcd snapshot, fetched to the operator's machine.  (``deploys/etcd-backup.py``)

The snapshot comes from a healthy follower (the leader has enough to do), lands in
``<etcd_backup_dir>/<cluster>/`` beside a JSON manifest (revision, hash, keys, size, sha256), and
only the newest ``etcd_backup_retention`` snapshots are kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyinfra import host as current_host
from pyinfra.api import StringCommand, deploy
from pyinfra.api.host import Host
from pyinfra.api.state import State
from pyinfra.operations import python

from metalseed.deploys.etcd.common import client_for, this_master
from metalseed.errors import EtcdError, HealthCheckError
from metalseed.model import Cluster, Node, cluster_from_inventory, playbook_inputs
from metalseed.render import etcd as r

SNAPSHOT_NAME = "metalseed-snapshot.db"
DEFAULTS = {"etcd_backup_retention": 7}
"""The playbook's inputs (pyinfra data) and their defaults."""

def backup_dir(cluster: Cluster) -> Path:
    """``<backup_dir>/<cluster>/``; the tenant datastore's in its ``datastore/`` below that."""
    d = cluster.etcd.backup_dir / cluster.name
    return d if cluster.etcd.store_dir == "etcd" else d / cluster.etcd.store_dir


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


def sha256_file(path: Path) -> str:
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
        "etcd": cluster.etcd.store_dir,  # the seed's etcd, or its tenant datastore
        "member": member.name,
        "created": stamp,
        "revision": status["revision"],
        "hash": status["hash"],
        "total_keys": status["totalKey"],
        "size": local.stat().st_size,
        "sha256": sha256_file(local),
    }
    local.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    host.log_styled(f"etcd snapshot {local} (revision {status['revision']}, "
                    f"hash {status['hash']}, {status['totalKey']} keys)")

    for old in list_snapshots(cluster)[:-retention]:
        old.path.unlink(missing_ok=True)
        old.path.with_suffix(".json").unlink(missing_ok=True)


@deploy("etcd backup", data_defaults=DEFAULTS)
def etcd_backup() -> None:
    """A consistent snapshot from one healthy member, fetched to backups/<cluster>/ with its
    revision and hash; keeps the newest ``etcd_backup_retention`` snapshots."""
    cluster = cluster_from_inventory(current_host.inventory)
    backup(cluster, playbook_inputs(cluster, current_host.data, DEFAULTS))


def backup(cluster: Cluster, inputs: dict[str, Any]) -> None:
    """The snapshot of ``cluster``'s etcd: the seed's, or the tenant datastore's
    (:meth:`~metalseed.model.Cluster.datastore_view`)."""
    if this_master(cluster) is None:
        return
    python.call(name=f"{cluster.etcd.store_dir}: snapshot to the operator's machine",
                function=_take_backup, cluster=cluster,
                retention=inputs["etcd_backup_retention"], _run_once=True)

