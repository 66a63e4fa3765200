"""Certificate profiles: which CAs and leaves a cluster needs, as pure data from the model.

Store paths follow /etc/kubernetes/pki: ``ca``, ``front-proxy-ca``, ``etcd/ca`` and so on; each id
below is the path of the ``.crt``/``.key`` pair without its suffix. Per-member etcd material lives
under ``etcd/<member>/`` and kubelet client certificates under ``kubelet/<node>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from ipaddress import IPv4Address

from metalseed.model import DATASTORE_ROOT_USER, Cluster, Node

SERVER = "server"
CLIENT = "client"


@dataclass(frozen=True)
class CASpec:
    id: str
    common_name: str
    lifetime: timedelta


@dataclass(frozen=True)
class LeafSpec:
    id: str
    ca: str
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[IPv4Address, ...] = ()
    usages: frozenset[str] = frozenset({CLIENT})
    hosts: tuple[str, ...] = ()
    """Node names that receive this certificate (empty: stays on the operator's machine)."""
    kubeconfig: str | None = None
    """If set, a kubeconfig of this name is rendered around the certificate."""
    kubeconfig_server: str | None = None
    kubeconfig_dir: str = "kubeconfig"
    """Where in the store the kubeconfig goes: ``<kubeconfig_dir>/<kubeconfig>.conf``."""
    kubeconfig_cluster: str | None = None
    """The cluster's name inside the kubeconfig (None: the cluster's own)."""
    tls_server_name: str | None = None
    """The name the kubeconfig's client sends (SNI) and checks, when its server is an address
    that is not that name (a tenant's API behind the seed's VIP)."""

    @property
    def kubeconfig_path(self) -> str:
        return f"{self.kubeconfig_dir}/{self.kubeconfig}.conf"


CLUSTER_CA = "ca"
ETCD_CA = "etcd/ca"
FRONT_PROXY_CA = "front-proxy-ca"
EDGE_CA = "edge/ca"
DATASTORE_CA = "datastore/ca"
SERVICE_ACCOUNT_KEY = "sa"


def ca_specs(cluster: Cluster) -> list[CASpec]:
    life = cluster.pki.ca_lifetime
    name = cluster.name
    return [
        CASpec(CLUSTER_CA, f"{name}-kubernetes-ca", life),
        CASpec(ETCD_CA, f"{name}-etcd-ca", life),
        CASpec(FRONT_PROXY_CA, f"{name}-front-proxy-ca", life),
        CASpec(EDGE_CA, f"{name}-edge-ca", life),
        *(ca for t in cluster.tenants for ca in tenant_ca_specs(cluster, t.name)),
        # The tenant datastore's own CA: a certificate of the cluster's etcd CA (the API
        # server's, say) must never be a client of tenant data, nor a tenant's of the cluster's.
        *([CASpec(DATASTORE_CA, f"{name}-datastore-ca", life)] if cluster.datastore else []),
    ]


# A tenant's material: pki/<seed>/tenants/<name>/, laid out like a cluster's own (ca, front-proxy-ca,
# apiserver, ..., sa.key/sa.pub, admin.conf), so the same code issues, inspects and renews it.
TENANTS_DIR = "tenants"


def tenant_dir(tenant: str) -> str:
    return f"{TENANTS_DIR}/{tenant}"


def tenant_id(tenant: str, item: str) -> str:
    """The store id of ``item`` (``ca``, ``apiserver``, ``sa``...) of ``tenant``."""
    return f"{tenant_dir(tenant)}/{item}"


def tenant_ca_specs(cluster: Cluster, tenant: str) -> list[CASpec]:
    life = cluster.pki.ca_lifetime
    prefix = f"{cluster.name}-{tenant}"
    return [CASpec(tenant_id(tenant, CLUSTER_CA), f"{prefix}-kubernetes-ca", life),
            CASpec(tenant_id(tenant, FRONT_PROXY_CA), f"{prefix}-front-proxy-ca", life)]


def tenant_service_names(cluster: Cluster, tenant: str) -> tuple[str, ...]:
    """The in-seed names of the Service in front of ``tenant``'s API servers."""
    from metalseed.kube.tenant import API_SERVICE
    from metalseed.tenants.spec import NAMESPACE_PREFIX

    ns = f"{NAMESPACE_PREFIX}{tenant}"
    return (API_SERVICE, f"{API_SERVICE}.{ns}", f"{API_SERVICE}.{ns}.svc",
            f"{API_SERVICE}.{ns}.svc.{cluster.dns_domain}")


def tenant_leaf_specs(cluster: Cluster, tenant: str) -> list[LeafSpec]:
    """A tenant's leaves; none is installed on a seed host (they reach the tenant's pods as a
    Secret), so every one but its workers' stays in the store (``hosts=()``)."""
    ca, fp = tenant_id(tenant, CLUSTER_CA), tenant_id(tenant, FRONT_PROXY_CA)
    endpoint = cluster.tenant_endpoint(tenant)
    domain = cluster.dns_domain
    vip_url = f"https://{cluster.vip}:{cluster.apiserver_port}"
    # The controller-manager and scheduler share the API server's pod: its loopback.
    local_url = f"https://127.0.0.1:{cluster.apiserver_port}"
    kubeconfig = {"kubeconfig_dir": tenant_dir(tenant), "kubeconfig_cluster": tenant}
    return [
        LeafSpec(tenant_id(tenant, "apiserver"), ca, "kube-apiserver",
                 dns_names=(endpoint, *tenant_service_names(cluster, tenant), "kubernetes",
                            "kubernetes.default", "kubernetes.default.svc",
                            f"kubernetes.default.svc.{domain}", "localhost"),
                 # The tenant's own `kubernetes` Service address (the tenant's service network
                 # is the seed's: see kube.tenant) and the pod's loopback.
                 ip_addresses=(cluster.first_service_address, IPv4Address("127.0.0.1")),
                 usages=frozenset({SERVER})),
        LeafSpec(tenant_id(tenant, "apiserver-kubelet-client"), ca,
                 "kube-apiserver-kubelet-client", organizations=("system:masters",)),
        LeafSpec(tenant_id(tenant, "front-proxy-client"), fp, "front-proxy-client"),
        # Through the seed's VIP, with the endpoint as TLS server name: the edge routes it by
        # SNI, and no DNS record is needed.
        LeafSpec(tenant_id(tenant, "admin"), ca, "kubernetes-admin",
                 organizations=("system:masters",), kubeconfig="admin", kubeconfig_server=vip_url,
                 tls_server_name=endpoint, **kubeconfig),  # type: ignore[arg-type]
        LeafSpec(tenant_id(tenant, "controller-manager"), ca, "system:kube-controller-manager",
                 kubeconfig="controller-manager", kubeconfig_server=local_url,
                 **kubeconfig),  # type: ignore[arg-type]
        LeafSpec(tenant_id(tenant, "scheduler"), ca, "system:kube-scheduler",
                 kubeconfig="scheduler", kubeconfig_server=local_url,
                 **kubeconfig),  # type: ignore[arg-type]
        *tenant_worker_specs(cluster, tenant),
    ]


def tenant_worker_specs(cluster: Cluster, tenant: str) -> list[LeafSpec]:
    """What ``tenant``'s workers get, issued by the tenant's CA like a seed node's by the seed's:
    each kubelet's client certificate (its kubeconfig) and serving certificate, and the
    kube-proxy and flanneld identities. Every kubeconfig names the seed's VIP with the tenant's
    endpoint as TLS server name: the workers reach their control plane through the edge."""
    workers = cluster.workers_of(tenant)
    if not workers:
        return []
    ca = tenant_id(tenant, CLUSTER_CA)
    names = tuple(n.name for n in workers)
    edge = {"kubeconfig_server": f"https://{cluster.vip}:{cluster.apiserver_port}",
            "tls_server_name": cluster.tenant_endpoint(tenant),
            "kubeconfig_dir": tenant_dir(tenant), "kubeconfig_cluster": tenant}
    specs: list[LeafSpec] = []
    for n in workers:
        specs.append(LeafSpec(tenant_id(tenant, f"kubelet/{n.name}"), ca, f"system:node:{n.name}",
                              organizations=("system:nodes",), hosts=(n.name,),
                              kubeconfig=f"kubelet/{n.name}", **edge))  # type: ignore[arg-type]
        specs.append(LeafSpec(tenant_id(tenant, kubelet_serving_id(n.name)), ca,
                              f"system:node:{n.name}", organizations=("system:nodes",),
                              dns_names=(n.name,), ip_addresses=(n.address,),
                              usages=frozenset({SERVER}), hosts=(n.name,)))
    specs.append(LeafSpec(tenant_id(tenant, "kube-proxy"), ca, "system:kube-proxy", hosts=names,
                          kubeconfig="kube-proxy", **edge))  # type: ignore[arg-type]
    specs.append(LeafSpec(tenant_id(tenant, "flannel"), ca, FLANNEL_USER, hosts=names,
                          kubeconfig="flannel", **edge))  # type: ignore[arg-type]
    return specs


def key_pair_ids(cluster: Cluster) -> list[str]:
    """Store ids of the service-account key pairs (``<id>.key`` + ``<id>.pub``): the cluster's
    and each tenant's."""
    return [SERVICE_ACCOUNT_KEY, *(tenant_id(t.name, SERVICE_ACCOUNT_KEY) for t in cluster.tenants)]


ENCRYPTION_KEY = "encryption-at-rest.key"
"""The store file (0600) holding the key Secrets are encrypted with at rest (aescbc, 32 bytes,
base64): made once with Kubernetes, never printed."""


FLANNEL_USER = "metalseed:flannel"
CILIUM_USER = "metalseed:cilium"


def kubelet_serving_id(node: str) -> str:
    return f"kubelet-serving/{node}"


def etcd_member_ids(member: str, store_dir: str = "etcd") -> tuple[str, str]:
    """Store ids of a member's (server, peer) certificates (``datastore`` for the datastore's)."""
    return f"{store_dir}/{member}/server", f"{store_dir}/{member}/peer"


def _etcd_member_specs(members: tuple[Node, ...], store_dir: str, ca: str) -> list[LeafSpec]:
    local = ("localhost",)
    loopback = (IPv4Address("127.0.0.1"),)
    specs = []
    for m in members:
        server_id, peer_id = etcd_member_ids(m.name, store_dir)
        for id in (server_id, peer_id):
            specs.append(LeafSpec(id, ca, m.name, usages=frozenset({SERVER, CLIENT}),
                                  hosts=(m.name,), dns_names=(m.name, *local),
                                  ip_addresses=(m.address, *loopback)))
    return specs


def datastore_specs(cluster: Cluster) -> list[LeafSpec]:
    """The datastore's members, its ``root`` administration client (metalseed's own, and
    etcdctl's on the members) and each tenant's client, whose CN is its etcd user."""
    from metalseed.tenants import datastore as ds

    if cluster.datastore is None:
        return []
    members = cluster.datastore.members
    specs = _etcd_member_specs(members, "datastore", DATASTORE_CA)
    specs.append(LeafSpec(ds.ROOT_CLIENT_ID, DATASTORE_CA, DATASTORE_ROOT_USER,
                          hosts=tuple(m.name for m in members)))
    for t in cluster.tenants:
        specs.append(LeafSpec(ds.client_id(t.name), DATASTORE_CA, ds.user(t.name)))
    return specs


def leaf_specs(cluster: Cluster) -> list[LeafSpec]:
    """Every leaf certificate of the cluster, in a stable order."""
    masters = tuple(m.name for m in cluster.masters)
    specs: list[LeafSpec] = _etcd_member_specs(cluster.masters, "etcd", ETCD_CA)

    specs.append(LeafSpec("etcd/healthcheck-client", ETCD_CA, "kube-etcd-healthcheck-client",
                          hosts=masters))
    specs.append(LeafSpec("apiserver-etcd-client", ETCD_CA, "kube-apiserver-etcd-client",
                          hosts=masters))

    domain = cluster.dns_domain
    specs.append(LeafSpec(
        "apiserver", CLUSTER_CA, "kube-apiserver",
        dns_names=(*(m.name for m in cluster.masters), "kubernetes", "kubernetes.default",
                   "kubernetes.default.svc", f"kubernetes.default.svc.{domain}"),
        ip_addresses=_unique((cluster.vip, *(m.address for m in cluster.masters),
                              cluster.first_service_address)),
        usages=frozenset({SERVER}), hosts=masters,
    ))
    specs.append(LeafSpec("apiserver-kubelet-client", CLUSTER_CA, "kube-apiserver-kubelet-client",
                          organizations=("system:masters",), hosts=masters))
    specs.append(LeafSpec("front-proxy-client", FRONT_PROXY_CA, "front-proxy-client",
                          hosts=masters))

    vip_url = f"https://{cluster.vip}:{cluster.apiserver_port}"
    local_url = f"https://127.0.0.1:{cluster.apiserver_port}"
    specs.append(LeafSpec("kubeconfig/admin", CLUSTER_CA, "kubernetes-admin",
                          organizations=("system:masters",), kubeconfig="admin",
                          kubeconfig_server=vip_url))
    specs.append(LeafSpec("kubeconfig/controller-manager", CLUSTER_CA,
                          "system:kube-controller-manager", hosts=masters,
                          kubeconfig="controller-manager", kubeconfig_server=local_url))
    specs.append(LeafSpec("kubeconfig/scheduler", CLUSTER_CA, "system:kube-scheduler",
                          hosts=masters, kubeconfig="scheduler", kubeconfig_server=local_url))

    kube = cluster.kubernetes.enabled
    for n in cluster.nodes:
        # With Kubernetes, each kubelet gets its kubeconfig (server: the VIP) around this client
        # certificate, so the Node authorizer sees system:node:<name> from the first request.
        specs.append(LeafSpec(f"kubelet/{n.name}", CLUSTER_CA, f"system:node:{n.name}",
                              organizations=("system:nodes",), hosts=(n.name,),
                              kubeconfig=f"kubelet/{n.name}" if kube else None,
                              kubeconfig_server=vip_url if kube else None))
    if kube:
        # The kubelet's serving certificate is issued here, like every other leaf, rather than
        # by the kubelet itself (serverTLSBootstrap): its SANs are the node's name and address
        # (the API server reaches kubelets by InternalIP and checks them against the cluster CA),
        # no CSR approver is needed, and rotate-certs.py renews it with the rest.
        for n in cluster.nodes:
            specs.append(LeafSpec(kubelet_serving_id(n.name), CLUSTER_CA, f"system:node:{n.name}",
                                  organizations=("system:nodes",), dns_names=(n.name,),
                                  ip_addresses=(n.address,), usages=frozenset({SERVER}),
                                  hosts=(n.name,)))
        specs.append(LeafSpec("kubeconfig/kube-proxy", CLUSTER_CA, "system:kube-proxy",
                              hosts=tuple(n.name for n in cluster.nodes), kubeconfig="kube-proxy",
                              kubeconfig_server=vip_url))
        # flanneld lists every Node (the Node authorizer lets a kubelet read only its own) and
        # patches its own Node's status: an identity of its own, bound by metalseed's RBAC.
        specs.append(LeafSpec("kubeconfig/flannel", CLUSTER_CA, FLANNEL_USER,
                              hosts=tuple(n.name for n in cluster.nodes), kubeconfig="flannel",
                              kubeconfig_server=vip_url))
        if cluster.kubernetes.network_policy == "cilium":
            # The agents (systemd, like flanneld) with an identity of their own, bound by
            # metalseed's RBAC (metalseed.kube.cilium).
            specs.append(LeafSpec("kubeconfig/cilium", CLUSTER_CA, CILIUM_USER,
                                  hosts=tuple(n.name for n in cluster.nodes), kubeconfig="cilium",
                                  kubeconfig_server=vip_url))

    if cluster.edge.cert_file is None:
        specs.append(LeafSpec("edge/server", EDGE_CA, f"{cluster.name}-edge",
                              dns_names=cluster.edge.hostnames, ip_addresses=(cluster.vip,),
                              usages=frozenset({SERVER}), hosts=masters))
    for t in cluster.tenants:
        specs.extend(tenant_leaf_specs(cluster, t.name))
    specs += datastore_specs(cluster)
    return specs


def _unique(addresses: tuple[IPv4Address, ...]) -> tuple[IPv4Address, ...]:
    return tuple(dict.fromkeys(addresses))
