"""What a tenant's cluster needs in itself for its workers, as plain data (nothing here talks to
a cluster).

A tenant worker runs the seed nodes' agents (kubelet, kube-proxy and flanneld under systemd, the
tenant's material from the store), so the tenant's cluster needs what a seed's does for them:

- node CIDRs: the tenant's controller-manager allocates them (``--allocate-node-cidrs``, the
  tenant's pod network: see :mod:`metalseed.kube.tenant`), nothing to apply;
- flanneld's RBAC (its own identity, ``metalseed:flannel``, issued by the tenant's CA);
- kube-proxy: its identity ``system:kube-proxy`` is bound by the API server's own bootstrap
  policy (``system:node-proxier``), nothing to apply;
- no CoreDNS: a tenant pod reaches the tenant's API by the ``kubernetes`` Service, whose
  endpoint is the API server pod's address on the seed's pod network, which a tenant worker does
  not route (the tenant's API is reached through the edge, by SNI); CoreDNS, which watches the
  API that way, would not start. Pods run, ``kubectl logs`` and ``exec`` work without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from metalseed.kube.client import condition
from metalseed.kube.objects import flannel_rbac

Obj = dict[str, Any]


def worker_objects() -> list[Obj]:
    """Applied to a tenant's API before its workers start."""
    return flannel_rbac()


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
