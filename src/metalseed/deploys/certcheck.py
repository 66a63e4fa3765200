"""The daily on-host certificate expiry check (script + service + timer): on the masters, and on
every node of a cluster with Kubernetes."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from metalseed.deploys.converge import HostSpec, ManagedFile, converge
from metalseed.model import cluster_from_inventory
from metalseed.render import certcheck as r

OP = "certcheck: daily expiry check on the masters (every node with Kubernetes)"


def master_spec() -> HostSpec:
    cluster = cluster_from_inventory(host.inventory)
    return HostSpec(
        files=(
            ManagedFile(r.SCRIPT_PATH, r.render_script(cluster).encode(), mode=0o755),
            ManagedFile(r.SERVICE_PATH, r.render_service().encode(), unit_file=True),
            ManagedFile(r.TIMER_PATH, r.render_timer().encode(), unit_file=True,
                        unit=r.TIMER_NAME, restart=True),
        ),
        units=(r.TIMER_NAME,),
    )


def removed_spec() -> HostSpec:
    """``pki_check_timer = False``: what an earlier run installed is stopped and removed."""
    return HostSpec(retired_units=(r.TIMER_NAME,),
                    absent=(r.TIMER_PATH, r.SERVICE_PATH, r.SCRIPT_PATH))


@deploy("metalseed certificate expiry check (systemd timer)")
def certcheck() -> None:
    cluster = cluster_from_inventory(host.inventory)
    node = cluster.node(host.name)
    # Every host runs the operation (workers with nothing to do) so API-mode ordering holds.
    # With Kubernetes every node holds certificates of its own (kubelet, kubeconfigs): every
    # node checks them; without it only the masters hold any.
    if not node.is_master and not cluster.kubernetes.enabled:
        spec = HostSpec()
    elif cluster.pki.check_timer:
        spec = master_spec()
    else:
        spec = removed_spec()
    converge(name=OP, spec=spec)
