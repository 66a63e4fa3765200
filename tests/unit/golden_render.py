"""Every file text a host receives, rendered for a few inventories: the goldens' source.

``tests/unit/golden/<inventory>/<component>/<file>`` holds what these renders gave when the
renderers still built their text with f-strings; ``test_templates`` holds today's renders to them
byte for byte, so moving text into ``files/`` templates (or any later refactor) cannot change a
byte a host receives without a golden diff in review.

    .venv/bin/python -m tests.unit.golden_render --write   # regenerate after an intended change

Key-bearing files (the edge's serving bundle, the PKI store's files) are not templates and are left
out; where a render takes certificate material (the bundle's digest in ``nginx.conf``), the input is
a fixed PEM-shaped placeholder built here, so no key-like block is committed.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metalseed.lab import inventory as lab_inventory
from metalseed.lab import plan as lab_plan
from metalseed.lab import state as lab_state
from metalseed.model import Cluster, cluster_from_inventory, load_cluster
from metalseed.render import certcheck, containerd, edge, etcd, peer_edge
from metalseed.render import kubernetes as kube

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"

# A tarball digest for the variant that runs etcd from a tarball (it names the binary directory).
TARBALL_SHA = "0123456789abcdef" * 4
# containerd's files name the pinned version and the mirror's pause image: fixed here, so a pin
# bump does not move the goldens.
CONTAINERD_VERSION = "v2.2.9"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
# Kubernetes' units name the binaries' versions and digests: fixed here too.
KUBE_BINARY = kube.Binary("v1.36.3", "ab" * 32)
FLANNELD_BINARY = kube.Binary("v0.28.10", "cd" * 32, kube.FLANNELD)
ENCRYPTION_KEY = "Z29sZGVuLXBsYWNlaG9sZGVyLW5vdC1hLXJlYWwta2V5IQ=="  # base64 of a placeholder


def fake_pem(kind: bytes, body: bytes) -> bytes:
    """A PEM-shaped placeholder (not a real key or certificate)."""
    return b"-----BEGIN " + kind + b"-----\n" + body + b"\n-----END " + kind + b"-----\n"


def bundle_path() -> str:
    cert = fake_pem(b"CERTIFICATE", b"golden-placeholder-certificate")
    key = fake_pem(b"EC " + b"PRIVATE KEY", b"golden-placeholder-key")
    return edge.bundle(cert, key).path


def lab_cluster(**extra: Any) -> Cluster:
    """A lab-shaped cluster (as ``inventory/lab.py`` gives it) without a lab: 3 masters, 2 workers."""
    p = lab_plan.plan_lab("lab", 3, 2, ipaddress.IPv4Network("10.213.7.0/24"))
    s = lab_state.state_from_plan(p, Path("/var/lib/metalseed/lab/lab/id_ed25519"))
    return cluster_from_inventory(lab_inventory.pyinfra_inventory(s, **extra))


def inventories() -> dict[str, Callable[[], Cluster]]:
    return {
        "example": lambda: load_cluster(REPO / "inventory" / "example.py"),
        "lab": lab_cluster,
        # Every branch the renderers take on settings: unicast VRRP, sub-second adverts, a
        # non-default HTTPS port, etcd from a tarball, no workers (nginx's "down" upstream).
        "lab-tuned": lambda: lab_cluster_without_workers(
            edge_vrrp_unicast=True, edge_failover="fast", edge_https_port=8443,
            edge_http_port=8080, edge_virtual_router_id=77, etcd_source="tarball",
            etcd_tarball_url="file:///srv/etcd.tar.gz", etcd_tarball_sha256=TARBALL_SHA,
            etcd_client_port=12379, etcd_heartbeat_ms=100, etcd_election_ms=1000,
            pki_renew_before="7d", ingress_http_nodeport=31080,
            mirror_url="http://10.213.8.1:5080"),
        # One master (a small lab): unicast VRRP with no peer at all, one worker.
        "lab-single": lambda: lab_cluster_single(edge_vrrp_unicast=True),
        # Kubernetes on the lab, with lab-style extra kubelet and kube-proxy fields.
        "lab-kubernetes": lambda: lab_cluster(
            kubernetes=True, etcd_source="tarball", etcd_tarball_url="file:///srv/etcd.tar.gz",
            etcd_tarball_sha256=TARBALL_SHA, mirror_url="http://10.213.7.1:5080",
            kubelet_settings={"maxPods": 60},
            kube_proxy_settings={"conntrack": {"maxPerCore": 0}}),
        # A seed: tenants routed by SNI on the edge.
        "lab-seed": lambda: lab_cluster(
            kubernetes=True, etcd_source="tarball", etcd_tarball_url="file:///srv/etcd.tar.gz",
            etcd_tarball_sha256=TARBALL_SHA, mirror_url="http://10.213.7.1:5080",
            tenants={"acme": {}, "globex": {"profile": "medium"}}),
    }


def lab_cluster_without_workers(**extra: Any) -> Cluster:
    p = lab_plan.plan_lab("tuned", 3, 1, ipaddress.IPv4Network("10.213.8.0/24"))
    s = lab_state.state_from_plan(p, Path("/var/lib/metalseed/lab/tuned/id_ed25519"))
    masters = [m.name for m in s.masters]
    return cluster_from_inventory(lab_inventory.pyinfra_inventory(s, masters=masters, workers=[],
                                                                  **extra))


def lab_cluster_single(**extra: Any) -> Cluster:
    p = lab_plan.plan_lab("single", 1, 1, ipaddress.IPv4Network("10.213.9.0/24"))
    s = lab_state.state_from_plan(p, Path("/var/lib/metalseed/lab/single/id_ed25519"))
    return cluster_from_inventory(lab_inventory.pyinfra_inventory(s, **extra))


def renders(c: Cluster) -> dict[str, str]:
    """``<component>/<file>`` -> text, for every file a host of ``c`` receives from a renderer."""
    if c.tenants:  # what a seed adds: the edge's SNI routes (the other inventories hold the rest)
        return {"edge/nginx.conf": edge.nginx_conf(c, bundle_path()),
                f"edge/{c.masters[0].name}/{edge.SERVICE_ROUTE_UNIT}":
                    edge.service_route_unit(c, c.masters[0])}
    if c.kubernetes.enabled:  # the other inventories hold the rest
        return kubernetes_renders(c)
    out: dict[str, str] = {}
    for m in c.masters:
        out[f"edge/{m.name}/keepalived.conf"] = edge.keepalived_conf(c, m)
        out[f"etcd/{m.name}/etcd.env"] = etcd.render_env(c, m)
        out[f"etcd/{m.name}/metalseed-etcd.service"] = etcd.render_unit(c, m)
    out["edge/nginx.conf"] = edge.nginx_conf(c, bundle_path())
    out["edge/60-metalseed-edge.conf"] = edge.sysctl_conf()
    out["peer-edge/haproxy.cfg"] = peer_edge.haproxy_conf(c, bundle_path(), c.masters[0].address,
                                                          8443)
    out["etcd/etcdctl.env"] = etcd.render_etcdctl_env(c)
    token = etcd.cluster_token(c)
    for state in ("new", "existing"):
        out[f"etcd/bootstrap-{state}.env"] = etcd.render_bootstrap(c.etcd_initial_cluster(), state, token)
    out["certcheck/metalseed-certcheck"] = certcheck.render_script(c)
    out["certcheck/metalseed-certcheck.service"] = certcheck.render_service()
    out["certcheck/metalseed-certcheck.timer"] = certcheck.render_timer()
    out["containerd/config.toml"] = containerd.config_toml(CONTAINERD_VERSION, PAUSE_IMAGE)
    out["containerd/containerd.service"] = containerd.unit(CONTAINERD_VERSION)
    out["containerd/crictl.yaml"] = containerd.crictl_yaml()
    if c.mirror_url:
        for registry in containerd.REGISTRIES:
            out[f"containerd/certs.d/{registry}/hosts.toml"] = containerd.hosts_toml(registry,
                                                                                    c.mirror_url)
    return out


def kubernetes_renders(c: Cluster) -> dict[str, str]:
    from metalseed.kube import objects

    out: dict[str, str] = {}
    for m in c.masters:
        out[f"kubernetes/{m.name}/kube-apiserver.service"] = kube.apiserver_unit(c, m, KUBE_BINARY)
    out["kubernetes/kube-controller-manager.service"] = kube.controller_manager_unit(c, KUBE_BINARY)
    out["kubernetes/kube-scheduler.service"] = kube.scheduler_unit(KUBE_BINARY)
    out["kubernetes/encryption-config.yaml"] = kube.encryption_config(ENCRYPTION_KEY)
    out["kubernetes/audit-policy.yaml"] = kube.audit_policy()
    out["kubernetes/admission-config.yaml"] = kube.admission_config()
    for n in (c.masters[0], *c.workers[:1]):
        out[f"kubernetes/{n.name}/kubelet-config.yaml"] = kube.kubelet_config(c, n)
        out[f"kubernetes/{n.name}/kubelet.service"] = kube.kubelet_unit(n, KUBE_BINARY)
        out[f"kubernetes/{n.name}/kube-proxy-config.yaml"] = kube.kube_proxy_config(c, n)
        out[f"kubernetes/{n.name}/kube-proxy.service"] = kube.kube_proxy_unit(n, KUBE_BINARY)
        out[f"kubernetes/{n.name}/flanneld.service"] = kube.flanneld_unit(n, FLANNELD_BINARY)
    out["kubernetes/net-conf.json"] = kube.flannel_net_conf(c)
    out["kubernetes/10-flannel.conflist"] = kube.flannel_conflist()
    out["kubernetes/Corefile"] = objects.corefile(c)
    return out


def all_renders() -> dict[str, str]:
    """``<inventory>/<component>/<file>`` -> text."""
    return {f"{inv}/{name}": text
            for inv, make in inventories().items() for name, text in renders(make()).items()}


def write() -> None:
    for name, text in all_renders().items():
        path = GOLDEN / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # Bytes, not text mode: what the host receives, newline for newline.
        path.write_bytes(text.encode())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite tests/unit/golden/ from the renders")
    if ap.parse_args().write:
        write()
    else:
        for name in sorted(all_renders()):
            print(name)
