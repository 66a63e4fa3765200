"""Certificate profiles: which CAs and leaves a cluster needs, as pure data from the model.

Store paths follow /etc/kubernetes/pki: ``ca``, ``front-proxy-ca``, ``etcd/ca`` and so on; each id
below is the path of the ``.crt``/``.key`` pair without its suffix. Per-member etcd material lives
under ``etcd/<member>/`` and kubelet client certificates under ``kubelet/<node>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from ipaddress import IPv4Address

from metalseed.model import Cluster

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


CLUSTER_CA = "ca"
ETCD_CA = "etcd/ca"
FRONT_PROXY_CA = "front-proxy-ca"
EDGE_CA = "edge/ca"
SERVICE_ACCOUNT_KEY = "sa"


def ca_specs(cluster: Cluster) -> list[CASpec]:
    life = cluster.pki.ca_lifetime
    name = cluster.name
    return [
        CASpec(CLUSTER_CA, f"{name}-kubernetes-ca", life),
        CASpec(ETCD_CA, f"{name}-etcd-ca", life),
        CASpec(FRONT_PROXY_CA, f"{name}-front-proxy-ca", life),
        CASpec(EDGE_CA, f"{name}-edge-ca", life),
    ]


ENCRYPTION_KEY = "encryption-at-rest.key"
"""The store file (0600) holding the key Secrets are encrypted with at rest (aescbc, 32 bytes,
base64): made once with Kubernetes, never printed."""


FLANNEL_USER = "metalseed:flannel"


def kubelet_serving_id(node: str) -> str:
    return f"kubelet-serving/{node}"


def etcd_member_ids(member: str) -> tuple[str, str]:
    """Store ids of a member's (server, peer) certificates."""
    return f"etcd/{member}/server", f"etcd/{member}/peer"


def leaf_specs(cluster: Cluster) -> list[LeafSpec]:
    """Every leaf certificate of the cluster, in a stable order."""
    masters = tuple(m.name for m in cluster.masters)
    local = ("localhost",)
    loopback = (IPv4Address("127.0.0.1"),)
    specs: list[LeafSpec] = []

    for m in cluster.masters:
        server_id, peer_id = etcd_member_ids(m.name)
        sans = {"dns_names": (m.name, *local), "ip_addresses": (m.address, *loopback)}
        specs.append(LeafSpec(server_id, ETCD_CA, m.name, usages=frozenset({SERVER, CLIENT}),
                              hosts=(m.name,), **sans))  # type: ignore[arg-type]
        specs.append(LeafSpec(peer_id, ETCD_CA, m.name, usages=frozenset({SERVER, CLIENT}),
                              hosts=(m.name,), **sans))  # type: ignore[arg-type]

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

    if cluster.edge.cert_file is None:
        specs.append(LeafSpec("edge/server", EDGE_CA, f"{cluster.name}-edge",
                              dns_names=cluster.edge.hostnames, ip_addresses=(cluster.vip,),
                              usages=frozenset({SERVER}), hosts=masters))
    return specs


def _unique(addresses: tuple[IPv4Address, ...]) -> tuple[IPv4Address, ...]:
    return tuple(dict.fromkeys(addresses))
