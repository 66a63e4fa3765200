"""Tenant workers (the ``tenant_workers`` group, each named by one tenant's ``workers``): nodes
of their tenant's cluster, built by the seed nodes' own parts with the tenant's material.

On a tenant worker: the binaries of the tenant's Kubernetes version and flannel from the mirror,
containerd, then ONE converge of kubelet, kube-proxy and flanneld (the same
:func:`metalseed.deploys.kubernetes.node_spec`), whose certificates the store issued from the
tenant's CA (``pki/<seed>/tenants/<name>/kubelet/<node>``, ``kubelet-serving/<node>``,
``kube-proxy``, ``flannel``): nothing is generated on the host. Each kubeconfig names the seed's
VIP with the tenant's endpoint as TLS server name, so every agent reaches its control plane
through the edge, by SNI, as the tenant's admin.conf does.

The tenant's API server reaches each kubelet (``kubectl logs``, ``exec``) at the worker's node
address over the node network: its pod runs on the seed, whose flanneld masquerades what leaves
the pod network (``--ip-masq``), so the worker sees a seed node's address and answers it on the
node network. No konnectivity: the seed's nodes and the tenant's workers share a routed network.

Once, on the operator's machine: flanneld's RBAC and the ``kubernetes`` Service's endpoint (the
edge: :mod:`metalseed.kube.tenant_nodes`) server-side applied to each tenant's API (where a
dry run says it would change) before the workers start, then a wait until every tenant worker is
Ready in its tenant's API.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, operation

from metalseed.deploys import artifacts
from metalseed.deploys import kubernetes as kd
from metalseed.deploys.containerd import containerd
from metalseed.deploys.converge import converge
from metalseed.errors import KubernetesError
from metalseed.kube import apply as ka
from metalseed.kube import client as kc
from metalseed.kube import openapi
from metalseed.kube.tenant_nodes import nodes_not_ready, worker_objects
from metalseed.model import Cluster, cluster_from_inventory
from metalseed.tenants import apply as ta
from metalseed.tenants.spec import TenantSpec

OBJECTS_OP = ("seed: flanneld's RBAC and the kubernetes Service's endpoint in each tenant "
              "cluster with workers (server-side apply)")
BINARIES_OP = "seed: tenant worker binaries (kube, flanneld, flannel CNI plugin)"
NODE_OP = "seed: tenant worker kubelet, kube-proxy, flanneld (the tenant's PKI, through the edge)"
WAIT_OP = "seed: every tenant worker Ready in its tenant's API"
NODES_TIMEOUT = 300.0


def _objects(cluster: Cluster) -> list[dict[str, Any]]:
    return worker_objects(str(cluster.vip), cluster.apiserver_port)


def with_workers(cluster: Cluster) -> list[TenantSpec]:
    return [t for t in cluster.tenants if cluster.workers_of(t.name)]


def tenant_view(cluster: Cluster, tenant: TenantSpec) -> Cluster:
    """The cluster as the node parts see it on ``tenant``'s workers: the tenant's Kubernetes
    version (the networks and DNS settings are the seed's: see :mod:`metalseed.kube.tenant`), and
    no network policy engine of the seed's (a tenant's cluster brings its own, or none)."""
    return replace(cluster, kubernetes=replace(cluster.kubernetes,
                                               version=tenant.kubernetes_version,
                                               network_policy="none"))


def validate(cluster: Cluster) -> None:
    """Offline, before any host is touched: what the tenants' clusters get fits the schemas."""
    if with_workers(cluster):
        openapi.validate(_objects(cluster), openapi.load(cluster.mirror_dir))


@operation()
def apply_worker_objects(cluster: Cluster) -> Generator[Any, None, None]:
    """Apply worker_objects() to each tenant API where any would change (call with
    ``_run_once=True``); decided when the run is prepared, so a converged tenant reports none."""
    cache: dict[str, dict[str, list[str]]] = host.state.__dict__.setdefault(
        "_metalseed_tenant_workers", {})
    if OBJECTS_OP not in cache:
        todo: dict[str, list[str]] = {}
        for t in with_workers(cluster):
            try:
                api = ta.tenant_api(cluster, t.name)
            except KubernetesError:  # no admin.conf yet: a first run applies everything
                todo[t.name] = [ka.describe(o) for o in _objects(cluster)]
                continue
            pending = ka.pending(cluster, _objects(cluster), api)
            if pending:
                todo[t.name] = pending
        cache[OBJECTS_OP] = todo
    if not host.state.is_executing:
        for name, objs in sorted(cache[OBJECTS_OP].items()):
            host.log(f"would apply to tenant {name}: {', '.join(objs)}")
    if cache[OBJECTS_OP]:
        yield FunctionCommand(_apply, (cluster, sorted(cache[OBJECTS_OP])), {})


def _apply(cluster: Cluster, tenants: list[str]) -> None:
    for name in tenants:
        ka.validate_and_apply(cluster, _objects(cluster), ta.tenant_api(cluster, name))


def tenant_worker() -> None:
    """This host as a node of its tenant's cluster (call only on a tenant worker)."""
    cluster = cluster_from_inventory(host.inventory)
    tenant, node = cluster.tenant_worker(host.name)
    view = tenant_view(cluster, tenant)
    todo = kd.downloads(view)
    kube, flanneld = kd.binaries(view)
    artifacts.install(name=BINARIES_OP, downloads=todo)
    containerd()
    converge(name=NODE_OP, spec=kd.node_spec(view, node, kube, flanneld,
                                             kd.tenant_node_pki(tenant.name, node)))


def wait_workers_ready(cluster: Cluster, timeout: float = NODES_TIMEOUT) -> None:
    for t in with_workers(cluster):
        api = ta.tenant_api(cluster, t.name)
        dyn = kc.dynamic(api)
        expected = [n.name for n in cluster.workers_of(t.name)]

        def check() -> str | None:
            return nodes_not_ready(ka._list(dyn, "v1", "Node"), expected)  # noqa: B023 (called at once)

        kc.wait_for(f"tenant {t.name}'s workers", "every one Ready in the tenant's API", check,
                    timeout)


