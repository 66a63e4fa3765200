"""What a tenant's cluster needs in itself for its workers, as plain data (nothing here talks to
a cluster).

A tenant worker runs the seed nodes' agents (kubelet, kube-proxy and flanneld under systemd, the
tenant's material from the store), so the tenant's cluster needs what a seed's does for them:

- node CIDRs: the tenant's controller-manager allocates them (``--allocate-node-cidrs``, the
  tenant's pod network: see :mod:`metalseed.kube.tenant`), nothing to apply;
- flanneld's RBAC (its own identity, ``metalseed:flannel``, issued by the tenant's CA);
- kube-proxy: its identity ``system:kube-proxy`` is bound by the API server's own bootstrap
  policy (``system:node-proxier``), nothing to apply;
- the ``kubernetes`` Service's endpoint for its pods (in-cluster clients: client-go's in-cluster
  config dials the Service's ClusterIP): the seed's VIP at the edge's API port, written here as an
  EndpointSlice because the tenant's API server publishes none (``--endpoint-reconciler-type=
  none``, :mod:`metalseed.kube.tenant`: its own address is a pod address of the seed's network,
  which a tenant worker does not route). A client dialling an IP sends no TLS server name, so the
  edge routes such a connection from a tenant worker's address to that tenant's API (see
  :func:`metalseed.render.edge.tenant_source_routes`); a pod's connection leaves its worker
  masqueraded to the worker's address by flanneld (``--ip-masq``).
- no CoreDNS yet: pods run, reach their API, and ``kubectl logs`` and ``exec`` work without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from metalseed.kube.client import condition
from metalseed.kube.objects import flannel_rbac

Obj = dict[str, Any]


KUBERNETES_SLICE = "kubernetes"
SLICE_MANAGER = "metalseed.io"


def api_endpoint_slice(vip: str, port: int) -> Obj:
    """The tenant's ``default/kubernetes`` Service's one endpoint, the seed's edge: named and
    labelled as the API server's own reconciler names its slice, so it takes that one's place
    where a reconciler wrote one before (server-side apply with force takes its fields over)."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": KUBERNETES_SLICE, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "kubernetes",
                                    "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [vip], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


def worker_objects(vip: str, port: int) -> list[Obj]:
    """Applied to a tenant's API before its workers start."""
    return [*flannel_rbac(), api_endpoint_slice(vip, port)]


def nodes_not_ready(nodes: Iterable[Obj], expected: Sequence[str]) -> str | None:
    """None when every ``expected`` node is registered and Ready, else what is missing (the
    node's Ready message when it said one)."""
    by_name = {(n.get("metadata") or {}).get("name"): n for n in nodes}
    waiting = []
    for name in expected:
        node = by_name.get(name)
        if node is None:
            waiting.append(f"{name} not registered")
            continue
        ready = condition(node, "Ready")
        if ready is None or ready[0] != "True":
            waiting.append(f"{name} not Ready ({ready[1] if ready else 'no condition yet'})")
    return "; ".join(waiting) or None
