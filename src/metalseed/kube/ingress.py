"""The ingress controller behind the edge, as plain data: Traefik v3 with its
``kubernetesIngressNGINX`` provider, a DaemonSet on the workers behind a NodePort Service.

What an application sees is ingress-nginx's contract: IngressClass ``nginx`` (controller
``k8s.io/ingress-nginx``) and the common ``nginx.ingress.kubernetes.io/*`` annotations, which
Traefik's provider translates. ingress-nginx itself was retired upstream in March 2026; the edge
does not know which controller answers on the NodePort.

How the client's address gets to the pod:

- the edge (nginx on the masters) sets ``X-Forwarded-For``/``-Proto``/``-Host`` and connects to
  ``<worker>:ingress_http_nodeport``;
- the Service has ``externalTrafficPolicy: Local`` and the controller runs on every worker
  (DaemonSet), so kube-proxy hands the connection to the Traefik pod of the worker it arrived on
  without SNAT: Traefik sees the master's own address as the peer (with ``Cluster`` it would see
  the worker's, and could not tell the edge from anybody else);
- Traefik trusts ``X-Forwarded-*`` only from the masters' addresses (and the VIP, which only a
  master holds) -- ``entryPoints.web.forwardedHeaders.trustedIPs`` -- and strips them from any
  other peer, so a client talking to a worker's NodePort directly cannot claim another address
  or ``https``.

Only the plain HTTP entry point is published (``ingress_http_nodeport``): TLS is the edge's. No
HTTPS NodePort is opened, as nothing in front of the workers would use it and it would be a way
around the edge's TLS settings; ``ingress_https_nodeport`` stays reserved in the model.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from metalseed.kube.objects import trust_annotations
from metalseed.model import Cluster

Obj = dict[str, Any]

NAMESPACE = "metalseed-ingress"
NAME = "traefik"
INGRESS_CLASS = "nginx"
CONTROLLER = "k8s.io/ingress-nginx"
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "ingress-controller"}
WORKER_ROLE = "node-role.kubernetes.io/worker"

WEB_PORT = 8000
"""The pod's HTTP entry point: above 1024, so Traefik runs without NET_BIND_SERVICE as nobody."""
PING_PORT = 8080
"""Traefik's own entry point for ``/ping`` (probes); never published."""
RUN_AS = 65532
READY_PERIOD = 2
READY_FAILURES = 2
"""A terminating pod leaves its endpoints within READY_PERIOD x READY_FAILURES seconds; one
slow probe on a loaded node does not take a serving pod out."""
ACCEPT_GRACE = READY_PERIOD * READY_FAILURES + 4
"""Seconds a terminating Traefik still accepts requests: the readiness probe's failures plus
the endpoint update reaching kube-proxy on the node."""
DRAIN_GRACE = 10
"""Seconds after that for requests in flight."""
DIAL_TIMEOUT = "500ms"
RETRY_ATTEMPTS = 4
"""Traefik's retry may pick the same dead pod again (traefik/traefik#2723): with 2 pods, 3
attempts all went to the one on a crashed worker and the request failed. 4 attempts of
DIAL_TIMEOUT cost at most 2 s; a pod answers a connect within milliseconds, even on a loaded
node."""
RETRY = "metalseed-retry"
DYNAMIC_DIR = "/etc/traefik/dynamic"
DYNAMIC_FILE = "retry.yaml"
DYNAMIC = "traefik-dynamic"
DYNAMIC_ANNOTATION = "metalseed.io/traefik-dynamic-sha256"


def trusted_ips(cluster: Cluster) -> list[str]:
    """The peers whose X-Forwarded-* Traefik keeps: the masters (the edge) and the VIP."""
    addrs = [*(str(m.address) for m in cluster.masters), str(cluster.vip)]
    return [f"{a}/32" for a in dict.fromkeys(addrs)]


def traefik_args(cluster: Cluster) -> list[str]:
    """Traefik's static configuration as flags (what ``traefik --help`` documents)."""
    return [
        f"--entryPoints.web.address=:{WEB_PORT}",
        f"--entryPoints.web.forwardedHeaders.trustedIPs={','.join(trusted_ips(cluster))}",
        f"--entryPoints.traefik.address=:{PING_PORT}",
        "--ping=true",
        "--ping.entryPoint=traefik",
        "--providers.kubernetesIngressNGINX=true",
        f"--providers.kubernetesIngressNGINX.ingressClass={INGRESS_CLASS}",
        f"--providers.kubernetesIngressNGINX.controllerClass={CONTROLLER}",
        # Ingresses report the VIP as their address (kubectl get ingress), as clients reach them.
        f"--providers.kubernetesIngressNGINX.publishStatusAddress={cluster.vip}",
        # Air-gapped hosts: no version check, no usage report to the outside.
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        "--log.level=INFO",
        # On SIGTERM, keep serving for a while: /ping answers 503 at once, the readiness probe
        # takes the pod out of its Service, and only then do the listeners close. Without it a
        # rolling Traefik refused connections and the edge marked its worker failed.
        f"--entryPoints.web.transport.lifeCycle.requestAcceptGraceTimeout={ACCEPT_GRACE}s",
        f"--entryPoints.web.transport.lifeCycle.graceTimeOut={DRAIN_GRACE}s",
        # A pod on a crashed worker stays in its EndpointSlice until the node controller gives
        # the node up (tens of seconds): a connect to it fails after DIAL_TIMEOUT and the retry
        # middleware sends the request to the next pod, instead of a request that hangs.
        f"--serversTransport.forwardingTimeouts.dialTimeout={DIAL_TIMEOUT}",
        # No keep-alive to pods, as the edge keeps none to workers: a request written on a
        # pooled connection to a pod on a crashed worker waits for an answer that never comes
        # (no retry: the request was sent), while a fresh connect fails within DIAL_TIMEOUT and
        # is retried. In CI, the request after the crash of w2 met such a connection and timed
        # out. A pod on the node network answers a connect in well under a millisecond.
        "--serversTransport.maxIdleConnsPerHost=-1",
        f"--providers.file.filename={DYNAMIC_DIR}/{DYNAMIC_FILE}",
        "--providers.file.watch=false",
        f"--entryPoints.web.http.middlewares={RETRY}@file",
    ]


def _meta(name: str, namespaced: bool = True) -> Obj:
    meta: Obj = {"name": name, "labels": dict(LABELS)}
    if namespaced:
        meta["namespace"] = NAMESPACE
    return meta


def rbac() -> list[Obj]:
    """What the provider reads and writes (Traefik's kubernetes-ingress-nginx-rbac.yml for v3.6):
    it watches Ingresses, IngressClasses, Services, EndpointSlices and Secrets (TLS and auth
    secrets named by Ingresses) in every namespace and updates Ingress status."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": _meta(f"{NAMESPACE}:{NAME}", namespaced=False),
            "rules": [
                {"apiGroups": [""], "resources": ["services", "secrets"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"],
                 "verbs": ["update"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": _meta(f"{NAMESPACE}:{NAME}", namespaced=False),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": f"{NAMESPACE}:{NAME}"},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
    ]


def ingress_class() -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": _meta(INGRESS_CLASS, namespaced=False),
        "spec": {"controller": CONTROLLER},
    }


def namespace() -> Obj:
    # The controller meets Pod Security "restricted": enforce it here, not only the default.
    labels = {**LABELS, "pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": labels}}


def daemonset(cluster: Cluster, image: str, ca_bundle: bytes) -> Obj:
    probe = {"httpGet": {"path": "/ping", "port": "ping"}, "periodSeconds": READY_PERIOD,
             "timeoutSeconds": 2}
    container = {
        "name": NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # The binary itself: the image's entrypoint script would only prepend "traefik".
        "command": ["/usr/local/bin/traefik"],
        "args": traefik_args(cluster),
        "ports": [
            {"name": "web", "containerPort": WEB_PORT, "protocol": "TCP"},
            {"name": "ping", "containerPort": PING_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {**probe, "failureThreshold": READY_FAILURES},
        "livenessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 6,
                          "initialDelaySeconds": 10},
        "volumeMounts": [{"name": "dynamic", "mountPath": DYNAMIC_DIR, "readOnly": True}],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                      "limits": {"memory": "512Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": _meta(NAME),
        "spec": {
            "selector": {"matchLabels": dict(LABELS)},
            # The new pod starts beside the old one and is Ready before the old one is told to
            # stop: a worker always has a local Traefik (externalTrafficPolicy Local drops
            # connections to a worker without one). One worker at a time. No hostPort, so two
            # pods fit on one node.
            "updateStrategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                # Traefik watches the API with the pod's ca.crt, read once at start: a new
                # cluster CA bundle rolls it (see metalseed.kube.objects.trust_annotations).
                # The file provider reads its directory once (watch=false): a new configuration
                # rolls the pods through this digest.
                "metadata": {"labels": dict(LABELS), "annotations": {
                    **trust_annotations(ca_bundle),
                    DYNAMIC_ANNOTATION: hashlib.sha256(
                        dynamic_config_text().encode()).hexdigest()[:16]}},
                "spec": {
                    "serviceAccountName": NAME,
                    "nodeSelector": {"kubernetes.io/os": "linux", WORKER_ROLE: ""},
                    "terminationGracePeriodSeconds": ACCEPT_GRACE + DRAIN_GRACE + 5,
                    "containers": [container],
                    "volumes": [{"name": "dynamic", "configMap": {"name": DYNAMIC}}],
                },
            },
        },
    }


def dynamic_config() -> dict[str, Any]:
    """Traefik's file-provider configuration: the retry middleware every route on ``web`` passes
    (it retries only when the backend could not be reached, before anything was answered)."""
    return {"http": {"middlewares": {RETRY: {"retry": {"attempts": RETRY_ATTEMPTS}}}}}


def dynamic_config_text() -> str:
    """The file as the pods read it; its digest is what rolls them."""
    return json.dumps(dynamic_config(), sort_keys=True)


def dynamic_config_map() -> Obj:
    # JSON is YAML. One file, not the directory: a ConfigMap volume also holds each file under a
    # timestamped directory, which the provider would read twice.
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(DYNAMIC),
            "data": {DYNAMIC_FILE: dynamic_config_text()}}


def service(cluster: Cluster) -> Obj:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(NAME),
        "spec": {
            "type": "NodePort",
            # No SNAT on the way in: the peer Traefik sees is the edge's master (see above).
            "externalTrafficPolicy": "Local",
            "selector": dict(LABELS),
            "ports": [{"name": "web", "port": 80, "targetPort": "web", "protocol": "TCP",
                       "nodePort": cluster.ingress_http_nodeport}],
        },
    }


def ingress_objects(cluster: Cluster, image: str, ca_bundle: bytes) -> list[Obj]:
    """In apply order: the namespace first, the DaemonSet after what it runs as."""
    return [namespace(), *rbac(), ingress_class(), dynamic_config_map(),
            daemonset(cluster, image, ca_bundle), service(cluster)]
