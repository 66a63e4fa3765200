"""Tenant isolation on a seed, as plain data: the network policies of every tenant namespace, pure
functions of the seed's shape. Nothing here talks to a cluster.

One intent, rendered twice:

- **CiliumNetworkPolicies** (``cilium.io/v2``, validated against the pinned Cilium module's CRD
  schemas, :mod:`metalseed.kube.crd`) and one CiliumClusterwideNetworkPolicy;
- **standard NetworkPolicies** (``networking.k8s.io/v1``, validated against the pinned Kubernetes
  OpenAPI), for kube-router, the alternative engine (``network_policy``).

Per tenant namespace ``tenant-<name>``:

1. ``default-deny``: every pod of the namespace, nothing in, nothing out;
2. ``dns``: every pod to kube-dns (UDP and TCP 53);
3. ``apiserver-ingress``: the control plane pods (and the tenant's probe pod) accept the API port
   from the seed's nodes -- the masters' nginx (the edge) and the kubelets' probes, which Cilium
   sees as the entities ``host``/``remote-node`` (CIDR rules do not match nodes) where they come
   from a node's own address and as world where they come from flannel's per-node addresses
   (named by CIDR), and a NetworkPolicy engine as those addresses -- and from
   the tenant's own workers; the controller-manager's and scheduler's health ports from the nodes
   (their kubelets' probes);
4. ``apiserver-egress``: the control plane pods reach the datastore members' client port and their
   own workers' kubelets (10250).

The controller-manager and the scheduler reach their own API server over the pod's loopback (the
three run in one pod, :mod:`metalseed.kube.tenant`): loopback never leaves the pod, so no rule
is needed for it and none could stop it. Nothing is allowed between tenants: no policy names
another tenant's namespace, so each tenant's policies stand alone (a tenant added later is
isolated without touching the others', a deleted one takes its policies with its namespace).

Cluster-wide, ``metalseed-tenants-off-seed-apiserver`` denies every pod of a tenant namespace
(``metalseed.io/tenant`` on the namespace) egress to the seed's own API server (entity
``kube-apiserver``): a deny rule, which no allow rule can override.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metalseed.kube.tenant import API_PORT, TENANT_LABEL
from metalseed.tenants.spec import TenantSpec

Obj = dict[str, Any]
IPv4 = ipaddress.IPv4Address
Net4 = ipaddress.IPv4Network

COMPONENT_LABEL = "app.kubernetes.io/component"
CONTROL_PLANE = "control-plane"
PROBE = "isolation-probe"
"""The component label of a tenant's probe pod: selected by the control plane's allowances (it
probes what the control plane may reach) but not by the tenant's Service (whose selector is
``control-plane``)."""
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259
KUBELET_PORT = 10250
DNS_PORT = 53
DNS_NAMESPACE = "kube-system"
DNS_LABELS = {"k8s-app": "kube-dns"}
POLICY_NAMES = ("default-deny", "dns", "apiserver-ingress", "apiserver-egress")
CLUSTER_POLICY = "metalseed-tenants-off-seed-apiserver"
CILIUM_API = "cilium.io/v2"
MANAGED_BY = {"app.kubernetes.io/managed-by": "metalseed"}


@dataclass(frozen=True)
class IsolationInputs:
    """What the policies depend on beside the tenant's name."""

    datastore: tuple[IPv4, ...]
    datastore_port: int
    node_sources: tuple[Net4, ...]
    """Where the seed's nodes' own traffic comes from as a pod sees it: each node's address and,
    for a NetworkPolicy engine, flannel's addresses of that node (its podCIDR's first two: the
    vxlan device's, which other nodes' traffic leaves by, and the bridge's, which the node's own
    traffic to its pods leaves by). Cilium matches the nodes' own addresses as entities; chained
    over flannel it still needs flannel's addresses by CIDR (it knows no node by them)."""
    tenant_workers: Mapping[str, tuple[IPv4, ...]] = field(default_factory=dict)
    """Tenant name -> addresses of its own workers."""


def node_sources(addresses: Iterable[IPv4], pod_cidrs: Iterable[Net4]) -> tuple[Net4, ...]:
    """Each node address, and the first two addresses of each node's podCIDR (flannel's vxlan
    device holds the network address, the cni0 bridge the next), as /32s, sorted, once each."""
    out = {Net4(f"{a}/32") for a in addresses}
    for cidr in pod_cidrs:
        out |= {Net4(f"{cidr.network_address}/32"), Net4(f"{cidr.network_address + 1}/32")}
    return tuple(sorted(out))


def _meta(tenant: TenantSpec, name: str) -> Obj:
    return {"name": name, "namespace": tenant.namespace,
            "labels": {TENANT_LABEL: tenant.name, **MANAGED_BY}}


def _control_plane_selector(tenant: TenantSpec) -> Obj:
    return {"matchLabels": {TENANT_LABEL: tenant.name},
            "matchExpressions": [{"key": COMPONENT_LABEL, "operator": "In",
                                  "values": [CONTROL_PLANE, PROBE]}]}


def _cilium(kind: str, meta: Obj, spec: Obj) -> Obj:
    return {"apiVersion": CILIUM_API, "kind": kind, "metadata": meta, "spec": spec}


def _cports(*ports: tuple[int, str]) -> list[Obj]:
    return [{"ports": [{"port": str(p), "protocol": proto} for p, proto in ports]}]


def cilium_policies(tenant: TenantSpec, i: IsolationInputs) -> list[Obj]:
    """The tenant namespace's CiliumNetworkPolicies."""
    def cnp(name: str, spec: Obj) -> Obj:
        return _cilium("CiliumNetworkPolicy", _meta(tenant, name), spec)

    cp = _control_plane_selector(tenant)
    node_ports = _cports((API_PORT, "TCP"), (CONTROLLER_MANAGER_PORT, "TCP"),
                         (SCHEDULER_PORT, "TCP"))
    ingress: list[Obj] = [{"fromEntities": ["host", "remote-node"], "toPorts": node_ports}]
    if i.node_sources:
        # Chained over flannel, a node's traffic to another node's pod leaves by flannel.1, from
        # an address Cilium knows no node by (so: world): named by CIDR, like the NetworkPolicy
        # form does.
        ingress.append({"fromCIDRSet": [{"cidr": str(n)} for n in i.node_sources],
                        "toPorts": node_ports})
    workers = i.tenant_workers.get(tenant.name, ())
    if workers:
        ingress.append({"fromCIDRSet": [{"cidr": f"{w}/32"} for w in workers],
                        "toPorts": _cports((API_PORT, "TCP"))})
    egress: list[Obj] = [{"toCIDRSet": [{"cidr": f"{d}/32"} for d in i.datastore],
                          "toPorts": _cports((i.datastore_port, "TCP"))}]
    if workers:
        egress.append({"toCIDRSet": [{"cidr": f"{w}/32"} for w in workers],
                       "toPorts": _cports((KUBELET_PORT, "TCP"))})
    return [
        # An empty rule in each direction: default deny in and out, allowing nothing by itself.
        cnp("default-deny", {"endpointSelector": {}, "ingress": [{}], "egress": [{}]}),
        cnp("dns", {"endpointSelector": {}, "egress": [{
            "toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": DNS_NAMESPACE,
                                             **{f"k8s:{k}": v for k, v in DNS_LABELS.items()}}}],
            "toPorts": _cports((DNS_PORT, "UDP"), (DNS_PORT, "TCP"))}]}),
        cnp("apiserver-ingress", {"endpointSelector": cp, "ingress": ingress}),
        cnp("apiserver-egress", {"endpointSelector": cp, "egress": egress}),
    ]


def cilium_cluster_policy() -> Obj:
    """Tenant namespaces' pods never reach the seed's own API server (a deny: it wins)."""
    return _cilium("CiliumClusterwideNetworkPolicy", {"name": CLUSTER_POLICY, "labels": MANAGED_BY}, {
        "endpointSelector": {"matchExpressions": [
            {"key": f"k8s:io.cilium.k8s.namespace.labels.{TENANT_LABEL}", "operator": "Exists"}]},
        "egressDeny": [{"toEntities": ["kube-apiserver"]}],
    })


def _nports(*ports: tuple[int, str]) -> list[Obj]:
    return [{"port": p, "protocol": proto} for p, proto in ports]


def _blocks(nets: Iterable[Net4]) -> list[Obj]:
    return [{"ipBlock": {"cidr": str(n)}} for n in nets]


def network_policies(tenant: TenantSpec, i: IsolationInputs) -> list[Obj]:
    """The same intent as :func:`cilium_policies`, as standard NetworkPolicies. The seed's own
    API server needs no policy of its own here: default deny already keeps the namespace's pods
    from it, and no allowance names it."""
    def np(name: str, spec: Obj) -> Obj:
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": _meta(tenant, name), "spec": spec}

    cp = _control_plane_selector(tenant)
    workers = tuple(Net4(f"{w}/32") for w in i.tenant_workers.get(tenant.name, ()))
    ingress: list[Obj] = [{"from": _blocks(i.node_sources),
                           "ports": _nports((API_PORT, "TCP"), (CONTROLLER_MANAGER_PORT, "TCP"),
                                            (SCHEDULER_PORT, "TCP"))}]
    egress: list[Obj] = [{"to": _blocks(Net4(f"{d}/32") for d in i.datastore),
                          "ports": _nports((i.datastore_port, "TCP"))}]
    if workers:
        ingress.append({"from": _blocks(workers), "ports": _nports((API_PORT, "TCP"))})
        egress.append({"to": _blocks(workers), "ports": _nports((KUBELET_PORT, "TCP"))})
    return [
        np("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        np("dns", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": {"matchLabels": {
                        "kubernetes.io/metadata.name": DNS_NAMESPACE}},
                    "podSelector": {"matchLabels": dict(DNS_LABELS)}}],
            "ports": _nports((DNS_PORT, "UDP"), (DNS_PORT, "TCP"))}]}),
        np("apiserver-ingress", {"podSelector": cp, "policyTypes": ["Ingress"],
                                 "ingress": ingress}),
        np("apiserver-egress", {"podSelector": cp, "policyTypes": ["Egress"], "egress": egress}),
    ]


def all_cilium(tenants: Iterable[TenantSpec], i: IsolationInputs) -> list[Obj]:
    return [cilium_cluster_policy(), *(p for t in tenants for p in cilium_policies(t, i))]


def all_network_policies(tenants: Iterable[TenantSpec], i: IsolationInputs) -> list[Obj]:
    return [p for t in tenants for p in network_policies(t, i)]
