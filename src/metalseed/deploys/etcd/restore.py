"""Rebuild etcd from a snapshot after quorum is lost.  (``deploys/etcd-restore.py``)

Refused while a quorum is healthy (a restore discards every write since the snapshot) unless
``etcd_restore_force`` is set; the snapshot is checked against its manifest first. Every member
is rebuilt from the one snapshot as a new cluster (a new cluster token, so a machine of the old
cluster that comes back cannot talk to the restored one by mistake), then all start together.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from pyinfra import host as current_host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from metalseed.deploys import artifacts
from metalseed.deploys.converge import converge
from metalseed.deploys.etcd.backup import SNAPSHOT_NAME, backup_dir, list_snapshots, sha256_file
from metalseed.deploys.etcd.common import (
    FILES_OP,
    client_for,
    host_spec,
    install_commands,
    master_states,
    this_master,
    wait_cluster_healthy,
)
from metalseed.deploys.etcd.common import binaries as binaries_for
from metalseed.deploys.gates import gate, run_commands, shared
from metalseed.errors import DeployError
from metalseed.model import Cluster, cluster_from_inventory, playbook_inputs
from metalseed.pki.issue import ensure_store
from metalseed.render import etcd as r

DEFAULTS = {"etcd_snapshot": None, "etcd_restore_force": False}
"""The playbook's inputs (pyinfra data) and their defaults: the snapshot (default: the newest
in the backup directory), and whether to restore even while a quorum is healthy."""


def _restore_precheck(cluster: Cluster, snapshot: Path, force: bool) -> None:
    manifest_path = snapshot.with_suffix(".json")
    if not snapshot.is_file():
        raise DeployError(f"snapshot {snapshot} does not exist")
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("cluster") != cluster.name:
            raise DeployError(f"snapshot {snapshot} is of cluster {manifest.get('cluster')!r}, "
                              f"not {cluster.name!r}")
        # Manifests from before the datastore existed have no "etcd": they are the seed's.
        if manifest.get("etcd", "etcd") != cluster.etcd.store_dir:
            raise DeployError(f"snapshot {snapshot} is of {cluster.name}'s "
                              f"{manifest.get('etcd', 'etcd')!r}, not of its "
                              f"{cluster.etcd.store_dir!r}")
        if sha256_file(snapshot) != manifest.get("sha256"):
            raise DeployError(f"snapshot {snapshot} does not match the sha256 in {manifest_path}")
    if force:
        return
    with client_for(cluster, timeout=2.0) as c:
        healthy = [h for h in c.cluster_health(timeout=2.0) if h.healthy]
    if healthy:
        raise DeployError(
            "etcd still has a quorum (healthy: " + ", ".join(h.endpoint for h in healthy)
            + "); a restore would discard every write since the snapshot. Replace failed "
            "members instead, or give --data etcd_restore_force=true to restore anyway.")


def restore_token(cluster: Cluster, snapshot: Path) -> str:
    # A new cluster id: members of the old cluster (a machine that comes back later) cannot
    # talk to the restored one by mistake.
    return f"{cluster.name}-etcd-restore-{hashlib.sha256(snapshot.name.encode()).hexdigest()[:8]}" \
           f"-{int(time.time())}"


@deploy("etcd restore", data_defaults=DEFAULTS)
def etcd_restore() -> None:
    """Rebuild every member from one snapshot (the newest in backups/<cluster>/ by default) as
    a new cluster of all masters, then start them together and wait until all are healthy."""
    cluster = cluster_from_inventory(current_host.inventory)
    restore(cluster, cluster, playbook_inputs(cluster, current_host.data, DEFAULTS))


def restore(cluster: Cluster, model: Cluster, inputs: dict[str, Any]) -> None:
    """The restore of ``cluster``'s etcd: the seed's, or the tenant datastore's
    (:meth:`~metalseed.model.Cluster.datastore_view`); ``model`` is the whole cluster, whose PKI
    store is converged first."""
    member = this_master(cluster)
    if member is None:
        return
    snapshot, force = inputs["etcd_snapshot"], inputs["etcd_restore_force"]
    if snapshot is None:
        snaps = list_snapshots(cluster)
        if not snaps:
            raise DeployError(f"no snapshot in {backup_dir(cluster)}; give one with "
                              "--data etcd_snapshot=PATH")
        snapshot = snaps[-1].path
    snap = Path(snapshot)
    inv: Any = current_host.inventory
    ensure_store(model, inv)
    token = getattr(inv, "_metalseed_restore_token", None) or restore_token(cluster, snap)
    inv._metalseed_restore_token = token

    gate(name=f"{cluster.etcd.store_dir} restore: snapshot verified, quorum lost",
         description="restore",
         check=lambda: shared(current_host.state, "restore-precheck",
                              lambda: _restore_precheck(cluster, snap, force)))
    st = master_states(cluster, inv).get(member.name) or {}
    run_commands(name="Install etcd", commands=install_commands(cluster, st))
    artifacts.install(name="etcd binaries (checked against their sha256)",
                      downloads=binaries_for(cluster))
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
    gate(name=f"{cluster.etcd.store_dir}: every member healthy over mutual TLS",
         description="health", check=lambda: wait_cluster_healthy(cluster), _run_once=True)


