"""What the Cilium agents need from a cluster's API, as plain data: Cilium's CRDs (from the mirror,
:mod:`metalseed.kube.crd`) and the RBAC of their identity (the store's ``kubeconfig/cilium``).

The agents (systemd units, :mod:`metalseed.render.cilium`) run without the operator: nothing else
registers the CRDs, so metalseed applies the ones the agent waits for before the nodes start.
"""

from __future__ import annotations

from typing import Any

from metalseed.kube.crd import CRDSchemas
from metalseed.pki.profiles import CILIUM_USER

Obj = dict[str, Any]
NAMESPACE = "kube-system"
"""The agents' namespace (``CILIUM_K8S_NAMESPACE`` in their unit)."""
READ = ["get", "list", "watch"]


def rbac() -> list[Obj]:
    """What an agent reads and writes (the rules of upstream's agent ClusterRole that apply to
    metalseed's flags: no BGP, no Envoy, no egress gateway)."""
    rules: list[Obj] = [
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": READ},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ},
        # Not secrets (upstream's role reads every Secret, for TLS-inspecting L7 policies): a
        # seed's Secrets hold its tenants' keys, and metalseed's agents run no L7 proxy.
        {"apiGroups": [""], "resources": ["namespaces", "services", "pods", "nodes"],
         "verbs": READ},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": ["create", "get", "update", "list", "delete"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": READ},
        {"apiGroups": ["cilium.io"], "verbs": ["list", "watch"], "resources": [
            "ciliumclusterwidenetworkpolicies", "ciliumnetworkpolicies", "ciliumendpoints",
            "ciliumendpointslices", "ciliumidentities", "ciliumnodes", "ciliumnodeconfigs",
            "ciliumcidrgroups", "ciliumloadbalancerippools", "ciliuml2announcementpolicies",
            "ciliumpodippools", "ciliumlocalredirectpolicies", "ciliumegressgatewaypolicies",
            "ciliumenvoyconfigs", "ciliumclusterwideenvoyconfigs", "ciliumdatapathplugins"]},
        {"apiGroups": ["cilium.io"], "resources": ["ciliumidentities", "ciliumendpoints",
                                                   "ciliumnodes"], "verbs": ["create"]},
        {"apiGroups": ["cilium.io"], "resources": ["ciliumidentities"], "verbs": ["update"]},
        {"apiGroups": ["cilium.io"], "resources": ["ciliumendpoints"], "verbs": ["delete", "get"]},
        {"apiGroups": ["cilium.io"], "resources": ["ciliumnodes", "ciliumnodes/status"],
         "verbs": ["get", "update"]},
        {"apiGroups": ["cilium.io"], "resources": ["ciliumendpoints", "ciliumendpoints/status"],
         "verbs": ["patch"]},
        {"apiGroups": ["policy.networking.k8s.io"], "resources": ["clusternetworkpolicies"],
         "verbs": READ},
    ]
    binding = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CILIUM_USER}
    config = {"name": CILIUM_USER, "namespace": NAMESPACE}
    return [
        # The agents watch their configuration ConfigMap (cilium-config; none here, so the
        # flags are all there is), in their namespace only.
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": config,
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": READ}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": config,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": CILIUM_USER}, "subjects": [binding]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": CILIUM_USER}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": CILIUM_USER},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": CILIUM_USER},
         "subjects": [binding]},
    ]


def crds(schemas: CRDSchemas) -> list[Obj]:
    out = []
    for doc in schemas.objects:
        obj = {k: v for k, v in doc.items() if k in ("apiVersion", "kind", "metadata", "spec")}
        # Upstream's files carry generator annotations only: metalseed's label instead.
        obj["metadata"] = {"name": doc["metadata"]["name"],
                           "labels": {"app.kubernetes.io/managed-by": "metalseed"}}
        out.append(obj)
    return out


def objects(schemas: CRDSchemas) -> list[Obj]:
    return [*crds(schemas), *rbac()]
