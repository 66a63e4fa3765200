"""Cluster objects as plain data, pure functions of the model: CoreDNS and the nodes' role labels.

Applied by :mod:`metalseed.kube.apply` with server-side apply; nothing here talks to a cluster.
"""

from __future__ import annotations

import hashlib
from typing import Any

from metalseed.model import Cluster, Node
from metalseed.render.templates import render

Obj = dict[str, Any]
NAMESPACE = "kube-system"
COREDNS = "coredns"
COREDNS_REPLICAS = 2
COREDNS_LABELS = {"k8s-app": "kube-dns"}
CONTROL_PLANE_ROLE = "node-role.kubernetes.io/control-plane"
WORKER_ROLE = "node-role.kubernetes.io/worker"


def corefile(cluster: Cluster) -> str:
    return render("kubernetes/Corefile.j2", domain=cluster.dns_domain)


TRUST_ANNOTATION = "metalseed.io/kube-ca-bundle-sha256"


def trust_annotations(ca_bundle: bytes) -> dict[str, str]:
    """For the pod template of an add-on that talks to the API server: the digest of the cluster
    CA's trust bundle. A pod reads the bundle (its projected ``ca.crt``, from the kube-root-ca.crt
    ConfigMap) once, when its client starts, so a CA rotation must restart exactly these pods
    once the ConfigMap holds the new bundle: a new digest rolls them."""
    return {TRUST_ANNOTATION: hashlib.sha256(ca_bundle).hexdigest()}


def coredns(cluster: Cluster, image: str, ca_bundle: bytes) -> list[Obj]:
    meta = {"namespace": NAMESPACE, "labels": dict(COREDNS_LABELS)}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": COREDNS, **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": COREDNS, "namespace": NAMESPACE}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": COREDNS, **meta},
         "data": {"Corefile": corefile(cluster)}},
        _coredns_deployment(image, meta, ca_bundle),
        # A drain (deploys/kubernetes-upgrade.py) evicts one replica at a time: DNS keeps answering.
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
         "metadata": {"name": COREDNS, **meta},
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(COREDNS_LABELS)}}},
        {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", **meta},
            "spec": {
                "selector": dict(COREDNS_LABELS),
                "clusterIP": str(cluster.cluster_dns_address),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
                ],
            },
        },
    ]


def _coredns_deployment(image: str, meta: Obj, ca_bundle: bytes) -> Obj:
    container = {
        "name": COREDNS,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "70Mi"}, "limits": {"memory": "170Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "initialDelaySeconds": 60,
                          "timeoutSeconds": 5, "failureThreshold": 5},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}},
        # The image's binary carries the file capability to bind port 53 as its non-root user.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": COREDNS, **meta},
        "spec": {
            "replicas": COREDNS_REPLICAS,
            "selector": {"matchLabels": dict(COREDNS_LABELS)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": dict(COREDNS_LABELS),
                             "annotations": trust_annotations(ca_bundle)},
                "spec": {
                    "serviceAccountName": COREDNS,
                    "priorityClassName": "system-cluster-critical",
                    "dnsPolicy": "Default",
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                    # Two replicas on two nodes, so one node's loss leaves DNS answering.
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 100, "podAffinityTerm": {
                            "labelSelector": {"matchLabels": dict(COREDNS_LABELS)},
                            "topologyKey": "kubernetes.io/hostname"}}]}},
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {
                        "name": COREDNS, "items": [{"key": "Corefile", "path": "Corefile"}]}}],
                },
            },
        },
    }


def node_roles(cluster: Cluster) -> list[Obj]:
    """The role labels a kubelet may not set on itself (NodeRestriction): applied from here once
    the node registered. The masters' NoSchedule taint comes from the kubelet (registerWithTaints)."""
    return [_node_labels(n) for n in cluster.nodes]


def _node_labels(node: Node) -> Obj:
    role = CONTROL_PLANE_ROLE if node.is_master else WORKER_ROLE
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node.name, "labels": {role: ""}}}


def flannel_rbac() -> list[Obj]:
    """What flanneld (systemd, with the store's ``kubeconfig/flannel``) may do: read Nodes (their
    podCIDR and the other nodes' VTEP annotations) and patch a Node's status with its own."""
    from metalseed.pki.profiles import FLANNEL_USER

    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": FLANNEL_USER},
         "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": FLANNEL_USER},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": FLANNEL_USER},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": FLANNEL_USER}]},
    ]


def bootstrap_objects() -> list[Obj]:
    """Applied before the nodes start: what their agents need from the first request."""
    return flannel_rbac()


def addon_objects(cluster: Cluster, coredns_image: str, ca_bundle: bytes) -> list[Obj]:
    """Applied once every node registered (and kube-root-ca.crt holds ``ca_bundle``)."""
    return [*coredns(cluster, coredns_image, ca_bundle), *node_roles(cluster)]
