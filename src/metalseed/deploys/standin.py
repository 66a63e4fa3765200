"""LAB STAND-IN for the ingress controller, on lab workers only.

The lab has no Kubernetes, so nothing listens on the ingress NodePort. This installs a tiny nginx
(its own unit and config, not the packaged ``nginx.service``) that answers every request with the
worker's name and the Host / X-Forwarded-* headers it received -- enough for the edge tests to see
which worker served a request and what the edge passed on. Never deployed by ``deploys/cluster.py``.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from metalseed.deploys.converge import HostSpec, ManagedFile, converge
from metalseed.model import Cluster, cluster_from_inventory
from metalseed.render import edge as r


def standin_spec(cluster: Cluster) -> HostSpec:
    return HostSpec(
        files=(
            ManagedFile(r.STANDIN_CONF, r.standin_conf(cluster).encode(),
                        check="nginx -t -q -c {path}", unit=r.STANDIN_UNIT_NAME),
            ManagedFile(r.STANDIN_UNIT, r.standin_unit().encode(), unit=r.STANDIN_UNIT_NAME,
                        restart=True, unit_file=True),
        ),
        units=(r.STANDIN_UNIT_NAME,),
    )


@deploy("metalseed LAB STAND-IN: ingress NodePort answerer on lab workers")
def lab_ingress_standin() -> None:
    cluster = cluster_from_inventory(host.inventory)
    # Masters call it with nothing to do (see metalseed.deploys.edge.edge for why).
    is_worker = host.name in {w.inventory_name for w in cluster.workers}
    converge(name="lab stand-in: ingress NodePort answerer on the workers",
             spec=standin_spec(cluster) if is_worker else HostSpec())
