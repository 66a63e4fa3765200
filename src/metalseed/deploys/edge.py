"""The HA edge on the masters: keepalived holds the VIP, nginx terminates TLS on it.

What is applied comes from :mod:`metalseed.render.edge`; this module ships it. A whole master is
converged by ONE operation of :mod:`metalseed.deploys.converge`: the packages, the sysctl that lets
nginx bind the VIP on a master that does not hold it, the configurations (each checked with
``nginx -t`` / ``keepalived -t`` before it replaces the live one), and the units; nginx reloads
gracefully (in-flight requests finish) only when its own files changed, and must answer its health
check again before the next master.

Masters are converged one at a time (``_serial``), so a reload never happens on two at once.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import StringCommand, deploy

from metalseed.deploys.converge import HostSpec, ManagedFile, converge
from metalseed.deploys.gates import gate
from metalseed.errors import DeployError, HealthCheckError
from metalseed.model import Cluster, Node, cluster_from_inventory
from metalseed.pki.issue import ensure_store
from metalseed.render import edge as r

EDGE_OP = "edge: nginx + keepalived on the masters"
HEALTH_WAIT = (f"/usr/bin/curl -fsS -o /dev/null --retry 15 --retry-connrefused --retry-delay 1 "
               f"--max-time 2 http://127.0.0.1:{r.HEALTH_PORT}{r.HEALTH_PATH}")
VIP_SETTLE_TIMEOUT = 30.0
"""Seconds the deploy waits for the VIP to rest on its holder (several VRRP down intervals)."""


# --------------------------------------------------------------------------------------------
# The edge


def serving_material(cluster: Cluster) -> tuple[bytes, bytes]:
    """(certificate chain, key) PEM: the operator's own files, or the PKI store's edge/server."""
    from metalseed.pki.issue import store_for

    if cluster.edge.cert_file is not None and cluster.edge.key_file is not None:
        cert_path, key_path = cluster.edge.cert_file, cluster.edge.key_file
    else:
        store = store_for(cluster)
        cert_path, key_path = store.cert_path("edge/server"), store.key_path("edge/server")
    try:
        return cert_path.read_bytes(), key_path.read_bytes()
    except OSError as e:
        raise DeployError(
            f"edge serving certificate: cannot read {e.filename}: {e.strerror}"
            " (run `metalseed pki init INVENTORY`, or fix edge_cert_file/edge_key_file)"
        ) from e


def master_spec(cluster: Cluster, node: Node, material: tuple[bytes, bytes]) -> HostSpec:
    b = r.bundle(*material)
    others = f"! -name {shlex.quote(Path(b.path).name)}"
    # A seed's nginx passes tenants' APIs to their Services' ClusterIPs: they need a route.
    route = (ManagedFile(f"/etc/systemd/system/{r.SERVICE_ROUTE_UNIT}",
                         r.service_route_unit(cluster, node).encode(), unit=r.SERVICE_ROUTE_UNIT,
                         restart=True, unit_file=True),) if cluster.tenants else ()
    return HostSpec(
        packages=r.PACKAGES,
        sysctls=tuple(r.SYSCTLS.items()),
        files=(
            *route,
            ManagedFile(r.SYSCTL_CONF, r.sysctl_conf().encode()),
            # The bundle first: the staged nginx.conf names it, and nginx -t reads it.
            ManagedFile(b.path, b.content, mode=0o600, dir_mode=0o700, unit="nginx.service"),
            ManagedFile(r.NGINX_CONF, r.nginx_conf(cluster, b.path).encode(),
                        check="nginx -t -q -c {path}", unit="nginx.service"),
            ManagedFile(r.KEEPALIVED_CONF, r.keepalived_conf(cluster, node).encode(),
                        check="keepalived -t -f {path}", unit="keepalived.service"),
        ),
        # nginx first: keepalived's check asks nginx, so the VIP only comes to a serving master.
        units=((r.SERVICE_ROUTE_UNIT,) if cluster.tenants else ()) + r.UNITS,
        health={"nginx.service": HEALTH_WAIT},
        cleanup=f"find {r.NGINX_DIR} -maxdepth 1 -name 'edge-*.pem*' {others} -delete",
    )


def _this_node(cluster: Cluster) -> Node:
    try:
        return cluster.node(host.name)
    except KeyError:
        raise DeployError(f"host {host.name!r} is not a node of cluster {cluster.name!r}") from None


@deploy("metalseed edge: keepalived VIP + nginx TLS termination")
def edge() -> None:
    cluster = cluster_from_inventory(host.inventory)
    node = _this_node(cluster)
    # Every host makes the same calls from the same lines, workers with nothing to do: pyinfra's
    # API orders operations by their count per host and its CLI by the lines that call them, so
    # a host that skipped one, or called it from elsewhere, would run it out of order.
    spec = _master_spec(cluster, node) if node.is_master else HostSpec()
    op = converge(name=EDGE_OP, spec=spec, _serial=True)
    if op.will_change:
        host.state.__dict__["_metalseed_edge_changed"] = True
    inventory, state = host.inventory, host.state
    gate(name="edge: the VIP has settled on its holder", description="vip",
         check=lambda: (wait_vip_settled(cluster, inventory)
                        if state.__dict__.get("_metalseed_edge_changed") else None),
         _run_once=True)


def _master_spec(cluster: Cluster, node: Node) -> HostSpec:
    if cluster.edge.cert_file is None:  # with the operator's own certificate the edge needs no store
        ensure_store(cluster, host.inventory)
    # Read once per run: every master ships the same bundle.
    cache = vars(host.inventory)
    if "_metalseed_edge_material" not in cache:
        cache["_metalseed_edge_material"] = serving_material(cluster)
    return master_spec(cluster, node, cache["_metalseed_edge_material"])


def vip_holders(cluster: Cluster, inventory: Any) -> list[str]:
    """Masters that hold the VIP now, asked over SSH (unreachable ones hold nothing)."""
    out = []
    for m in cluster.masters:
        h = inventory.get_host(m.inventory_name)
        if not h.connected:
            continue
        ok, output = h.run_shell_command(StringCommand(
            f"ip -4 -o addr show dev {shlex.quote(cluster.vip_interface)}"))
        if ok and f" {cluster.vip}/" in output.stdout:
            out.append(m.name)
    return out


def wait_vip_settled(cluster: Cluster, inventory: Any, timeout: float = VIP_SETTLE_TIMEOUT) -> None:
    """Return once the VIP sits on the master that keeps it: the first reachable one by priority.

    Right after keepalived starts, a lower-priority master may take the VIP first (it started
    while the first master was still waiting out its own down interval) and lose it to
    preemption a few seconds later. A deploy that returned then would hand the operator a VIP
    that moves once more; waiting for the expected holder means it does not.
    """
    reachable = [m for m in cluster.masters if inventory.get_host(m.inventory_name).connected]
    if not reachable:
        raise HealthCheckError("edge: no master is reachable to hold the VIP")
    expected = reachable[0].name
    deadline = time.monotonic() + timeout
    holders: list[str] = []
    while time.monotonic() < deadline:
        holders = vip_holders(cluster, inventory)
        if holders == [expected]:
            return
        time.sleep(0.25)
    raise HealthCheckError(
        f"edge: VIP {cluster.vip} did not settle on {expected} within {timeout:.0f}s "
        f"(held by: {', '.join(holders) or 'nobody'}); see `journalctl -u keepalived` there")
