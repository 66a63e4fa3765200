"""The alternative policy engine of seeds (``network_policy = "kube-router"``; Cilium is the
default), as plain data: kube-router's firewall alone (its router and service proxy off: flannel
routes, kube-proxy serves Services), a DaemonSet on every seed node.

kube-router watches pods, namespaces and NetworkPolicies and enforces them with iptables chains
and ipsets of the node it runs on (both built into this kernel). kube-network-policies, the other
NetworkPolicy engine, queues every policed packet to user space with nftables' ``queue``
statement, which this kernel lacks (CONFIG_NFT_QUEUE); see the README's isolation model.
"""

from __future__ import annotations

from typing import Any

from metalseed.kube.objects import trust_annotations
from metalseed.model import Cluster

Obj = dict[str, Any]
NAME = "kube-router"
NAMESPACE = "kube-system"
LABELS = {"k8s-app": NAME}
HEALTH_PORT = 20244
SYNC_PERIOD = "5m0s"
"""The full resync: a policy, pod or namespace change is applied at once on its watch event; this
only repairs rules something else removed."""


def _meta(name: str, namespaced: bool = True) -> Obj:
    meta: Obj = {"name": name, "labels": {**LABELS, "app.kubernetes.io/managed-by": "metalseed"}}
    if namespaced:
        meta["namespace"] = NAMESPACE
    return meta


def rbac() -> list[Obj]:
    """What the firewall reads: the watched kinds, nothing it writes."""
    read = ["get", "list", "watch"]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": _meta(f"metalseed:{NAME}", namespaced=False),
         "rules": [
             {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "nodes",
                                               "endpoints"], "verbs": read},
             {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
              "verbs": read},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _meta(f"metalseed:{NAME}", namespaced=False),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": f"metalseed:{NAME}"},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]},
    ]


def args(cluster: Cluster) -> list[str]:
    return [
        "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
        "--enable-cni=false", "--enable-ipv4=true", "--enable-ipv6=false",
        "--hostname-override=$(NODE_NAME)",
        f"--service-cluster-ip-range={cluster.service_network}",
        f"--iptables-sync-period={SYNC_PERIOD}",
        f"--health-port={HEALTH_PORT}", "--metrics-port=0",
    ]


def daemonset(cluster: Cluster, image: str, ca_bundle: bytes) -> Obj:
    container: Obj = {
        "name": NAME, "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/local/bin/kube-router"], "args": args(cluster),
        # PATH: it looks iptables and ipset up, and the image's config names none. The API at
        # the VIP, not the kubernetes Service: a host-network pod's connection to a ClusterIP
        # needs a route before kube-proxy's DNAT, and the nodes have none for the service
        # network ("dial tcp 10.96.0.1:443: connect: network is unreachable", seen).
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "PATH", "value": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
                {"name": "KUBERNETES_SERVICE_HOST", "value": str(cluster.vip)},
                {"name": "KUBERNETES_SERVICE_PORT", "value": str(cluster.apiserver_port)}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": HEALTH_PORT,
                                      "host": "127.0.0.1"},
                          "initialDelaySeconds": 10, "periodSeconds": 5, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                      "limits": {"memory": "256Mi"}},
        # The node's iptables and ipsets: the host network's, as root with NET_ADMIN and NET_RAW
        # (not privileged: the API servers refuse privileged pods, --allow-privileged=false);
        # the xtables lock shared with kube-proxy and flanneld so their restores never interleave.
        "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
        "volumeMounts": [{"name": "xtables-lock", "mountPath": "/run/xtables.lock"}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(NAME),
        "spec": {
            "selector": {"matchLabels": dict(LABELS)},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": dict(LABELS), "annotations": trust_annotations(ca_bundle)},
                "spec": {
                    "serviceAccountName": NAME, "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [container],
                    "volumes": [{"name": "xtables-lock",
                                 "hostPath": {"path": "/run/xtables.lock",
                                              "type": "FileOrCreate"}}],
                },
            },
        },
    }


def objects(cluster: Cluster, image: str, ca_bundle: bytes) -> list[Obj]:
    return [*rbac(), daemonset(cluster, image, ca_bundle)]
