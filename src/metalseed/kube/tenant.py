"""A tenant's control plane on its seed, as plain data: pure functions of the tenant's spec, its
size profile and the material the store issued for it. Nothing here talks to a cluster.

Everything lives in namespace ``tenant-<name>``, labelled ``metalseed.io/tenant=<name>``:

- a Secret with the tenant's PKI (its CA certificate, API server and front-proxy leaves,
  service-account keys, datastore client certificate, the controller-manager's and scheduler's
  kubeconfigs), mounted read-only;
- one Deployment whose pods run kube-apiserver, kube-controller-manager and kube-scheduler side by
  side (as Kamaji does): the controller-manager and the scheduler talk to the API server over the
  pod's loopback, so they never depend on the seed's network for their own API server; replicas,
  requests, limits and the in-flight limits come from the profile; the pod template carries the
  Secret's sha256, so pods roll when a certificate they mount changes;
- a Service in front of the API servers (the edge routes the tenant's SNI name to it) and a
  PodDisruptionBudget where the profile has more than one replica.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metalseed.errors import PKIError
from metalseed.tenants.datastore import prefix
from metalseed.tenants.profiles import PROFILES, Resources
from metalseed.tenants.spec import TenantSpec

Obj = dict[str, Any]
TENANT_LABEL = "metalseed.io/tenant"
PKI_SECRET = "control-plane-pki"
API_SERVICE = "kube-apiserver"
"""The Service in front of a tenant's API servers (the edge routes the tenant's SNI name to it)."""
PKI_DIR = "/etc/kubernetes/pki"
API_PORT = 6443
DEPLOYMENT = "control-plane"
PDB = "control-plane"
# A terminating API server keeps serving this long while its /readyz fails: the seed's
# endpoint change (the pod is terminating) must reach kube-proxy on every master, the edge's path
# to the tenant's Service, before the server stops listening, or new connections meet a refusal.
# Measured under load on the lab seed: see tests/lab/test_seed.py's profile change.
SHUTDOWN_DELAY_S = 10
# Then in-flight requests drain and watches get their own grace (--shutdown-watch-termination-
# grace-period); the kubelet's SIGKILL must come after both, with room on a loaded node.
WATCH_GRACE_S = 10
TERMINATION_GRACE_S = SHUTDOWN_DELAY_S + WATCH_GRACE_S + 15
API_STARTUP_S = 600
"""How long a new API server may take to its first /readyz ok before the kubelet restarts it
(the datastore unreachable, a seed node under load)."""
RUN_AS = 65532
# Files of the PKI Secret, by the name each component reads.
PKI_FILES = (
    "ca.crt", "apiserver.crt", "apiserver.key", "apiserver-kubelet-client.crt",
    "apiserver-kubelet-client.key", "front-proxy-ca.crt", "front-proxy-client.crt",
    "front-proxy-client.key", "sa.key", "sa.pub", "datastore-ca.crt", "datastore-client.crt",
    "datastore-client.key", "controller-manager.conf", "scheduler.conf",
)


@dataclass(frozen=True)
class ControlPlaneInputs:
    tenant: TenantSpec
    images: Mapping[str, str]
    """component (kube-apiserver, ...) -> image reference the seed's nodes pull."""
    datastore_urls: tuple[str, ...]
    service_network: str
    pod_network: str
    endpoint_name: str
    """The DNS name clients use for the tenant's API (a SAN of its certificate; the edge's SNI)."""
    pki: Mapping[str, bytes]
    """File name (one of PKI_FILES) -> content, from the tenant's store."""


def labels(tenant: TenantSpec, component: str | None = None) -> dict[str, str]:
    out = {TENANT_LABEL: tenant.name, **dict(tenant.labels)}
    if component:
        out["app.kubernetes.io/component"] = component
    return out


def pki_checksum(pki: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(pki):
        h.update(name.encode() + b"\0" + pki[name] + b"\0")
    return h.hexdigest()


def apiserver_args(i: ControlPlaneInputs) -> list[str]:
    p = PROFILES[i.tenant.profile]
    return [
        f"--secure-port={API_PORT}",
        f"--etcd-servers={','.join(i.datastore_urls)}",
        # The tenant's etcd role covers exactly [/<name>/, /<name>0): see tenants.datastore.
        f"--etcd-prefix={prefix(i.tenant.name).decode().rstrip('/')}",
        f"--etcd-cafile={PKI_DIR}/datastore-ca.crt",
        f"--etcd-certfile={PKI_DIR}/datastore-client.crt",
        f"--etcd-keyfile={PKI_DIR}/datastore-client.key",
        # Compaction is a keyspace-wide operation a tenant's role must not hold: the datastore
        # compacts itself.
        "--etcd-compaction-interval=0",
        f"--client-ca-file={PKI_DIR}/ca.crt",
        f"--tls-cert-file={PKI_DIR}/apiserver.crt",
        f"--tls-private-key-file={PKI_DIR}/apiserver.key",
        f"--kubelet-client-certificate={PKI_DIR}/apiserver-kubelet-client.crt",
        f"--kubelet-client-key={PKI_DIR}/apiserver-kubelet-client.key",
        f"--kubelet-certificate-authority={PKI_DIR}/ca.crt",
        "--kubelet-preferred-address-types=InternalIP",
        f"--service-account-issuer=https://{i.endpoint_name}",
        f"--service-account-key-file={PKI_DIR}/sa.pub",
        f"--service-account-signing-key-file={PKI_DIR}/sa.key",
        f"--service-cluster-ip-range={i.service_network}",
        # The kubernetes Service's endpoint is the edge, applied with the tenant's workers
        # (kube.tenant_nodes): this server's own address is the seed's, unrouted where the
        # tenant's pods run, and a lease reconciler would also drop the endpoint each time a
        # replica stops.
        "--endpoint-reconciler-type=none",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--requestheader-client-ca-file={PKI_DIR}/front-proxy-ca.crt",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        f"--proxy-client-cert-file={PKI_DIR}/front-proxy-client.crt",
        f"--proxy-client-key-file={PKI_DIR}/front-proxy-client.key",
        f"--max-requests-inflight={p.max_requests_inflight}",
        f"--max-mutating-requests-inflight={p.max_mutating_requests_inflight}",
        "--profiling=false",
        "--allow-privileged=false",
        f"--shutdown-delay-duration={SHUTDOWN_DELAY_S}s",
        # Not --shutdown-send-retry-after: its 429 carries "Retry-After: 5", which the python
        # client and client-go honour, so a client still on a kept-alive connection to the old
        # pod stalls 5 s (seen in the lab: a 5.6 s gap in lists). Without it, the server closes
        # idle connections after the delay and the client reconnects at once, to a serving pod.
        f"--shutdown-watch-termination-grace-period={WATCH_GRACE_S}s",
    ]


def controller_manager_args(i: ControlPlaneInputs) -> list[str]:
    conf = f"{PKI_DIR}/controller-manager.conf"
    return [
        f"--kubeconfig={conf}", f"--authentication-kubeconfig={conf}",
        # On the pod's address, not loopback: the kubelet probes /healthz from the node.
        f"--authorization-kubeconfig={conf}", "--bind-address=0.0.0.0", "--leader-elect=true",
        "--allocate-node-cidrs=true", f"--cluster-cidr={i.pod_network}",
        "--node-cidr-mask-size=24", f"--service-cluster-ip-range={i.service_network}",
        f"--cluster-name={i.tenant.name}", f"--root-ca-file={PKI_DIR}/ca.crt",
        f"--service-account-private-key-file={PKI_DIR}/sa.key",
        "--use-service-account-credentials=true", "--profiling=false",
    ]


def scheduler_args() -> list[str]:
    conf = f"{PKI_DIR}/scheduler.conf"
    return [f"--kubeconfig={conf}", f"--authentication-kubeconfig={conf}",
            f"--authorization-kubeconfig={conf}", "--bind-address=0.0.0.0", "--leader-elect=true",
            "--profiling=false"]


def _resources(r: Resources) -> Obj:
    limits: dict[str, str] = {"memory": f"{r.memory_limit // 2**20}Mi"}
    if r.cpu_limit_m is not None:
        limits["cpu"] = f"{r.cpu_limit_m}m"
    return {"requests": {"cpu": f"{r.cpu_request_m}m", "memory": f"{r.memory_request // 2**20}Mi"},
            "limits": limits}


_RESTRICTED = {
    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def _container(i: ControlPlaneInputs, component: str, args: list[str], probe: Obj) -> Obj:
    r = PROFILES[i.tenant.profile].component(component)
    return {
        "name": component, "image": i.images[component], "imagePullPolicy": "IfNotPresent",
        # The image's own path: its config names no PATH for the runtime to search.
        "command": [f"/usr/local/bin/{component}"], "args": args, "resources": _resources(r),
        "volumeMounts": [{"name": "pki", "mountPath": PKI_DIR, "readOnly": True}],
        "securityContext": dict(_RESTRICTED), **probe,
    }


def _probes(path: str, port: int) -> Obj:
    def get(p: str, failure: int, period: int, initial: int = 0) -> Obj:
        probe: Obj = {"httpGet": {"path": p, "port": port, "scheme": "HTTPS"},
                      "periodSeconds": period, "failureThreshold": failure, "timeoutSeconds": 5}
        if initial:
            probe["initialDelaySeconds"] = initial
        return probe
    # Readiness every second: a new API server's first /readyz ok is what puts it behind the
    # tenant's Service (its first answer through the edge, a roll's next step).
    return {"readinessProbe": get(path, 3, 1), "livenessProbe": get("/livez" if port == API_PORT
                                                                   else "/healthz", 8, 10, 15)}


def api_server(i: ControlPlaneInputs) -> Obj:
    c = _container(i, "kube-apiserver", apiserver_args(i), _probes("/readyz", API_PORT))
    ready = c["readinessProbe"]
    startup = {**ready, "failureThreshold": API_STARTUP_S // ready["periodSeconds"]}
    return {**c, "restartPolicy": "Always", "startupProbe": startup}


def control_plane(i: ControlPlaneInputs) -> list[Obj]:
    t, p = i.tenant, PROFILES[i.tenant.profile]
    missing = [f for f in PKI_FILES if f not in i.pki]
    if missing:
        raise PKIError(f"tenant {t.name}: the PKI lacks {', '.join(missing)}")
    ns = t.namespace
    meta = {"namespace": ns, "labels": labels(t)}
    selector = {TENANT_LABEL: t.name, "app.kubernetes.io/component": "control-plane"}
    pod_spec: Obj = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                            "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
        # The API server is a sidecar (a restartable init container): the kubelet starts the
        # controller-manager and the scheduler only once its startup probe has seen /readyz ok,
        # that is once its bootstrap RBAC exists. Started beside it, the controller-manager was
        # refused extension-apiserver-authentication, exited, and under load its crash-loop
        # back-off kept the pod unready for the whole 300 s the seed deploy waits (CI, 168b9ee).
        # Being a sidecar it also stops last, after the two that talk to it.
        "initContainers": [api_server(i)],
        "containers": [
            _container(i, "kube-controller-manager", controller_manager_args(i),
                       _probes("/healthz", 10257)),
            _container(i, "kube-scheduler", scheduler_args(), _probes("/healthz", 10259)),
        ],
        "volumes": [{"name": "pki", "secret": {"secretName": PKI_SECRET, "defaultMode": 0o440}}],
        # Replicas on different seed nodes, so one node's loss leaves the tenant's API answering.
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": selector},
                                                "topologyKey": "kubernetes.io/hostname"}}]}},
    }
    objects: list[Obj] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": ns, "labels": {**labels(t),
                                             "pod-security.kubernetes.io/enforce": "restricted"}}},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": PKI_SECRET, **meta},
         "data": {name: _b64(i.pki[name]) for name in PKI_FILES}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": DEPLOYMENT, **meta},
         "spec": {
             "replicas": p.replicas,
             "selector": {"matchLabels": selector},
             # A new pod is Ready (its /readyz) before an old one goes: 0 failed requests.
             "strategy": {"type": "RollingUpdate",
                          "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
             "template": {
                 "metadata": {"labels": {**labels(t), **selector},
                              "annotations": {"metalseed.io/pki-sha256": pki_checksum(i.pki)}},
                 "spec": pod_spec,
             },
         }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": API_SERVICE, **meta},
         "spec": {"selector": selector,
                  "ports": [{"name": "https", "port": API_PORT, "targetPort": API_PORT,
                             "protocol": "TCP"}]}},
    ]
    if p.replicas > 1:
        objects.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                        "metadata": {"name": PDB, **meta},
                        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}}})
    return objects


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
