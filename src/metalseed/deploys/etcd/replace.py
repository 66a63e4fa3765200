"""Replace a dead etcd member without losing quorum.  (``deploys/etcd-replace-member.py``)

The dead member goes out, its replacement (the machine the inventory now gives that master)
comes in as a learner, which does not count towards quorum, and is promoted once it caught up.
Every step is refused when it could cost quorum; a run that stopped half-way resumes.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pyinfra import host as current_host
from pyinfra.api import deploy
from pyinfra.api.host import Host
from pyinfra.api.state import State
from pyinfra.operations import python, server

from metalseed import etcdclient
from metalseed.deploys import artifacts
from metalseed.deploys.converge import converge
from metalseed.deploys.etcd.common import (
    FILES_OP,
    client_for,
    host_spec,
    host_state,
    install_commands,
    member_names,
    this_master,
    wait_cluster_healthy,
)
from metalseed.deploys.etcd.common import binaries as binaries_for
from metalseed.deploys.gates import run_commands
from metalseed.errors import DeployError, EtcdError
from metalseed.model import Cluster, Node, cluster_from_inventory, playbook_inputs
from metalseed.pki.issue import ensure_store
from metalseed.render import etcd as r

DEFAULTS = {"etcd_replace": None}
"""The playbook's input (pyinfra data): the name of the master to replace; required."""


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


@deploy("etcd replace member", data_defaults=DEFAULTS)
def etcd_replace_member() -> None:
    """Bring master ``etcd_replace`` up on the machine the inventory now gives it (a fresh one),
    without losing quorum: remove the old member, add the new one as a learner, start it, promote
    it."""
    cluster = cluster_from_inventory(current_host.inventory)
    replace_member(cluster, cluster,
                   playbook_inputs(cluster, current_host.data, DEFAULTS)["etcd_replace"])


def replace_member(cluster: Cluster, model: Cluster, member_name: str) -> None:
    """The replacement of member ``member_name`` of ``cluster``'s etcd: the seed's, or the
    tenant datastore's (:meth:`~metalseed.model.Cluster.datastore_view`); ``model`` is the whole
    cluster, whose PKI store is converged first."""
    member = this_master(cluster)
    if member is None or member.name != member_name:
        return
    ensure_store(model, current_host.inventory)
    plan = _membership_plan(cluster, member_name)
    st = host_state(cluster, current_host)
    run_commands(name="Install etcd", commands=install_commands(cluster, st))
    artifacts.install(name="etcd binaries (checked against their sha256)",
                      downloads=binaries_for(cluster))
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
    python.call(name=f"{cluster.etcd.store_dir}: remove the old member, add this one as a learner",
                function=_swap_member, cluster=cluster, plan=plan)
    server.shell(name="Start etcd", commands=[
        "systemctl daemon-reload", f"systemctl enable {r.UNIT_NAME}",
        f"systemctl start --no-block {r.UNIT_NAME}"])
    python.call(name=f"{cluster.etcd.store_dir}: promote the learner once it caught up",
                function=_promote,
                cluster=cluster, plan=plan)
