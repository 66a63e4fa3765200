"""etcd on the masters: install, converge, health-gate.  (``deploys/etcd.py``)

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

from pyinfra import host as current_host
from pyinfra.api import StringCommand, deploy
from pyinfra.api.host import Host
from pyinfra.api.state import State

from metalseed.deploys import artifacts
from metalseed.deploys.converge import converge
from metalseed.deploys.etcd.common import (
    FILES_OP,
    HEALTH_TIMEOUT,
    client_for,
    host_spec,
    install_commands,
    master_states,
    this_master,
    wait_cluster_healthy,
)
from metalseed.deploys.etcd.common import binaries as binaries_for
from metalseed.deploys.gates import call_if, gate, run_commands, shared
from metalseed.errors import DeployError, HealthCheckError
from metalseed.model import Cluster, Node, cluster_from_inventory
from metalseed.pki.issue import ensure_store
from metalseed.render import etcd as r


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
        "its data. Replace it instead: pyinfra INVENTORY deploys/etcd-replace-member.py "
        f"--data etcd_replace={member.name}"
    )


def _stopped(state: State, cluster: Cluster) -> dict[str, str]:
    """Why this run's rolling restart of ``cluster``'s etcd stopped, if it did (one per run)."""
    stopped: dict[str, str] = shared(state, f"{cluster.etcd.store_dir}-rolling-stopped", dict)
    return stopped


def _restart_member(state: State, host: Host, cluster: Cluster, member: Node) -> None:
    """Restart one member whose files changed, between two health gates. Once a gate failed,
    the later members fail at once instead of each waiting out HEALTH_TIMEOUT for the same
    unhealthy cluster (and nothing more is restarted: the rerun resumes)."""
    stopped = _stopped(state, cluster)
    if stopped:
        raise HealthCheckError(f"not restarting {member.name}: {stopped['why']}")
    try:
        wait_cluster_healthy(cluster, timeout=HEALTH_TIMEOUT, skip=member.name)
    except HealthCheckError as e:
        stopped["why"] = (f"the rolling restart stopped before {member.name}: the other members "
                          f"must be healthy first, or a restart could cost quorum. {e}")
        raise HealthCheckError(stopped["why"]) from None
    ok, out = host.run_shell_command(StringCommand(
        f"systemctl daemon-reload && systemctl restart {r.UNIT_NAME}"))
    if not ok:
        raise DeployError(f"{member.name}: restarting {r.UNIT_NAME} failed: "
                          + " ".join(out.stderr_lines[-5:]))
    try:
        wait_cluster_healthy(cluster, timeout=HEALTH_TIMEOUT)
    except HealthCheckError as e:
        stopped["why"] = f"the rolling restart stopped after {member.name}: {e}"
        raise


# ---------------------------------------------------------------------------------------------
# The deploy


@deploy("etcd")
def etcd() -> None:
    """Install and converge etcd on every master, then wait until all members are healthy."""
    cluster = cluster_from_inventory(current_host.inventory)
    converge_etcd(cluster, cluster)


def converge_etcd(cluster: Cluster, model: Cluster) -> None:
    """The etcd of ``cluster`` on its masters: the cluster's own, or the tenant datastore's
    (:meth:`~metalseed.model.Cluster.datastore_view`, its members as the masters). ``model`` is
    the whole cluster, whose PKI store is converged first."""
    member = this_master(cluster)
    if member is None:
        return
    ensure_store(model, current_host.inventory)
    states = master_states(cluster, current_host.inventory)
    st = states.get(member.name) or {}
    has_data = st.get("data") == "yes"
    was_active = st.get("active") == "active"

    run_commands(name="Install etcd", commands=install_commands(cluster, st))
    binaries = artifacts.install(name="etcd binaries (checked against their sha256)",
                                 downloads=binaries_for(cluster))

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
            needed=was_active and (changed.will_change or binaries.will_change),
            function=_restart_member,
            cluster=cluster, member=member, _serial=True)
    gate(name=f"{cluster.etcd.store_dir}: every member healthy over mutual TLS",
         description="health", check=lambda: _all_healthy(cluster), _run_once=True)


def _all_healthy(cluster: Cluster) -> None:
    stopped = _stopped(current_host.state, cluster)
    if stopped:  # the run has failed already; waiting for the same members again tells nothing
        raise HealthCheckError(stopped["why"])
    wait_cluster_healthy(cluster)

