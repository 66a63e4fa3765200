"""The ingress controller's objects, rendered from the model (no cluster): Traefik's ingress-nginx
provider behind IngressClass nginx, on every worker, reached on ingress_http_nodeport without SNAT,
trusting X-Forwarded-* from the masters (and the VIP) only."""

from __future__ import annotations

from typing import Any

from metalseed.kube import ingress
from metalseed.model import Cluster, build_cluster

from .test_model import hosts

IMAGE = "docker.io/traefik:v3.6.12"


def cluster(**data: Any) -> Cluster:
    return build_cluster(hosts(common={"kubernetes": True, **data}))


def by_kind(c: Cluster) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in ingress.ingress_objects(c, IMAGE, b"CA")}


def flags(c: Cluster) -> dict[str, str]:
    return dict(a.partition("=")[::2] for a in ingress.traefik_args(c))


def test_x_forwarded_headers_are_trusted_from_the_masters_and_the_vip_only() -> None:
    c = cluster()
    trusted = flags(c)["--entryPoints.web.forwardedHeaders.trustedIPs"].split(",")
    assert trusted == [f"{m.address}/32" for m in c.masters] + [f"{c.vip}/32"]
    assert not {f"{w.address}/32" for w in c.workers} & set(trusted)
    assert "--entryPoints.web.forwardedHeaders.insecure" not in flags(c)


def test_the_provider_is_ingress_nginx_compatible_and_air_gapped() -> None:
    c = cluster()
    f = flags(c)
    assert f["--providers.kubernetesIngressNGINX"] == "true"
    assert f["--providers.kubernetesIngressNGINX.ingressClass"] == "nginx"
    assert f["--providers.kubernetesIngressNGINX.controllerClass"] == "k8s.io/ingress-nginx"
    assert f["--providers.kubernetesIngressNGINX.publishStatusAddress"] == str(c.vip)
    assert f["--global.checkNewVersion"] == f["--global.sendAnonymousUsage"] == "false"
    cls = by_kind(c)["IngressClass"]
    assert (cls["metadata"]["name"], cls["spec"]) == ("nginx", {"controller": "k8s.io/ingress-nginx"})


def test_a_daemonset_on_the_workers_behind_a_local_nodeport() -> None:
    c = cluster(ingress_http_nodeport=31080)
    objs = by_kind(c)
    pod = objs["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"][ingress.WORKER_ROLE] == ""
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    svc = objs["Service"]["spec"]
    assert svc["type"] == "NodePort" and svc["externalTrafficPolicy"] == "Local"
    assert [(p["nodePort"], p["targetPort"]) for p in svc["ports"]] == [(31080, "web")]
    assert svc["selector"] == objs["DaemonSet"]["spec"]["selector"]["matchLabels"]
    # Only plain HTTP is published: TLS is the edge's.
    assert c.ingress_https_nodeport not in [p["nodePort"] for p in svc["ports"]]


def test_the_controller_meets_pod_security_restricted() -> None:
    objs = by_kind(cluster())
    assert objs["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    (container,) = objs["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] != 0 and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert all(p["containerPort"] > 1024 for p in container["ports"])


def test_the_provider_may_read_what_it_watches_and_write_ingress_status() -> None:
    objs = ingress.rbac()
    role = next(o for o in objs if o["kind"] == "ClusterRole")
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    for group, resource in (("", "services"), ("", "secrets"), ("discovery.k8s.io", "endpointslices"),
                            ("networking.k8s.io", "ingresses"),
                            ("networking.k8s.io", "ingressclasses")):
        assert {(group, resource, "list"), (group, resource, "watch")} <= granted
    assert ("networking.k8s.io", "ingresses/status", "update") in granted
    assert not any(v in ("create", "delete", "patch") for _, _, v in granted)
