"""Tenant workers' side, pure: the material the store issues them from their tenant's CA (every
kubeconfig through the seed's VIP with the tenant's endpoint as TLS server name), the node spec
the seed nodes' code renders from it, and the readiness check of their nodes."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from metalseed.deploys import kubernetes as kd
from metalseed.deploys.tenant_workers import tenant_view, with_workers
from metalseed.kube.tenant_nodes import nodes_not_ready, worker_objects
from metalseed.mirror import default_root
from metalseed.model import Cluster, _HostInput, build_cluster
from metalseed.pki import x509 as px
from metalseed.pki.issue import init_pki
from metalseed.render import cilium as rcil
from metalseed.render import kubernetes as r

from .test_pki import NOW, openssl

DATA = {"cluster_name": "prod", "node_network": "10.20.0.0/24", "vip": "10.20.0.10",
        "kubernetes": True, "etcd_source": "tarball", "etcd_tarball_url": "https://e.example/e.tgz",
        "etcd_tarball_sha256": "0" * 64, "mirror_url": "http://10.20.0.1:5080",
        "mirror_dir": str(default_root()),
        "tenants": {"acme": {"workers": ["t1"]}, "globex": {}}}


def seed(tmp_path: Path) -> Cluster:
    data = {**DATA, "pki_store": str(tmp_path / "pki")}
    hosts = [_HostInput("m1", ("masters",), {**data, "ssh_hostname": "10.20.0.11"}),
             _HostInput("w1", ("workers",), {**data, "ssh_hostname": "10.20.0.21"}),
             _HostInput("t1", ("tenant_workers",), {**data, "ssh_hostname": "10.20.0.61"})]
    c = build_cluster(hosts)
    init_pki(c, now=NOW)
    return c


def _cert(conf: dict[str, Any]) -> px.CertInfo:
    return px.describe(px.load_cert(base64.b64decode(
        conf["users"][0]["user"]["client-certificate-data"])))


def test_a_tenant_worker_gets_its_tenants_material_and_reaches_it_through_the_edge(
        tmp_path: Path) -> None:
    c = seed(tmp_path)
    acme = c.pki_dir / "tenants" / "acme"
    for rel, cn, orgs in (("kubelet/t1.conf", "system:node:t1", ("system:nodes",)),
                          ("kube-proxy.conf", "system:kube-proxy", ()),
                          ("flannel.conf", "metalseed:flannel", ())):
        conf = yaml.safe_load((acme / rel).read_text())
        cluster = conf["clusters"][0]["cluster"]
        assert cluster["server"] == "https://10.20.0.10:6443", rel
        assert cluster["tls-server-name"] == "acme.prod.tenants.cluster.local", rel
        info = _cert(conf)
        assert (info.common_name, info.organizations) == (cn, orgs), rel
    serving = acme / "kubelet-serving" / "t1.crt"
    info = px.describe(px.load_cert(serving.read_bytes()))
    assert info.common_name == "system:node:t1"
    assert "t1" in info.dns_names and "10.20.0.61" in [str(a) for a in info.ip_addresses]
    # Issued by acme's CA, not the seed's: the seed's API would refuse the kubelet.
    assert openssl("verify", "-attime", str(int(NOW.timestamp())), "-CAfile",
                   str(acme / "ca.crt"), str(serving)).returncode == 0
    assert openssl("verify", "-attime", str(int(NOW.timestamp())), "-CAfile",
                   str(c.pki_dir / "ca.crt"), str(serving)).returncode != 0
    # Nothing of t1 among the seed's own nodes' material, nor globex's.
    assert not (c.pki_dir / "kubeconfig" / "kubelet" / "t1.conf").exists()
    assert not (c.pki_dir / "kubelet-serving" / "t1.crt").exists()
    assert not (c.pki_dir / "tenants" / "globex" / "kubelet").exists()
    assert not (c.pki_dir / "tenants" / "globex" / "kube-proxy.conf").exists()
    assert [t.name for t in with_workers(c)] == ["acme"]


def test_the_seed_nodes_node_spec_renders_a_tenant_worker_from_the_tenants_store(
        tmp_path: Path) -> None:
    c = seed(tmp_path)
    tenant, node = c.tenant_worker("t1")
    view = tenant_view(c, tenant)
    kube, flannel = r.Binary("v1.36.3", "a" * 64), r.Binary("v0.28.10", "b" * 64, r.FLANNELD)
    spec = kd.node_spec(view, node, kube, flannel, kd.tenant_node_pki(tenant.name, node))
    files = {f.path: f.content for f in spec.files}
    acme = c.pki_dir / "tenants" / "acme"
    assert files[r.KUBELET_CA] == (acme / "ca-bundle.crt").read_bytes()
    assert files[r.KUBELET_KUBECONFIG] == (acme / "kubelet" / "t1.conf").read_bytes()
    assert files[r.KUBELET_CERT] == (acme / "kubelet-serving" / "t1.crt").read_bytes()
    assert files[r.PROXY_KUBECONFIG] == (acme / "kube-proxy.conf").read_bytes()
    assert files[r.FLANNEL_KUBECONFIG] == (acme / "flannel.conf").read_bytes()
    unit = files[f"/etc/systemd/system/{r.KUBELET_UNIT}"].decode()
    assert "--node-ip=10.20.0.61" in unit and "--hostname-override=t1" in unit
    # A seed node's spec reads the seed's material as before.
    w1 = c.node("w1")
    own = {f.path: f.content for f in kd.node_spec(c, w1, kube, flannel).files}
    assert own[r.KUBELET_KUBECONFIG] == (c.pki_dir / "kubeconfig" / "kubelet" / "w1.conf"
                                         ).read_bytes()
    # The seed's Cilium agent on its own nodes only: a tenant's worker is no node of the seed.
    assert own[rcil.KUBECONFIG] == (c.pki_dir / "kubeconfig" / "cilium.conf").read_bytes()
    assert b"cilium-cni" in own[r.FLANNEL_CONFLIST]
    assert not [p for p in files if "cilium" in p] and b"cilium" not in files[r.FLANNEL_CONFLIST]


def test_a_tenant_workers_node_is_waited_for_until_ready() -> None:
    def node(name: str, ready: str | None, message: str = "") -> dict[str, Any]:
        conditions = [] if ready is None else [{"type": "Ready", "status": ready,
                                                "message": message}]
        return {"metadata": {"name": name}, "status": {"conditions": conditions}}

    assert nodes_not_ready([node("t1", "True")], ["t1"]) is None
    assert nodes_not_ready([], ["t1"]) == "t1 not registered"
    assert nodes_not_ready([node("t1", "False", "container runtime network not ready")],
                           ["t1"]) == "t1 not Ready (container runtime network not ready)"
    assert nodes_not_ready([node("t1", None)], ["t1"]) == "t1 not Ready (no condition yet)"


def test_a_tenant_cluster_gets_flanneld_rbac_and_the_edge_as_its_api_endpoint() -> None:
    objects = worker_objects("10.1.2.3", 6443)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert kinds == {("ClusterRole", "metalseed:flannel"),
                     ("ClusterRoleBinding", "metalseed:flannel"),
                     ("EndpointSlice", "kubernetes")}
    (slice_,) = (o for o in objects if o["kind"] == "EndpointSlice")
    # kube-proxy joins a slice to its Service by this label and the port by its name ("https",
    # the name the API server gives the kubernetes Service's port).
    assert slice_["metadata"]["namespace"] == "default"
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    assert slice_["endpoints"] == [{"addresses": ["10.1.2.3"], "conditions": {"ready": True}}]
    assert slice_["ports"] == [{"name": "https", "port": 6443, "protocol": "TCP"}]


def test_rotate_certs_takes_a_tenant_workers_leaves_by_id(tmp_path: Path) -> None:
    from metalseed.deploys.rotation import leaves_to_force

    c = seed(tmp_path)
    assert leaves_to_force(c, ("tenants/acme/kubelet/t1", "tenants/acme/kubelet-serving/t1")) == {
        "tenants/acme/kubelet/t1", "tenants/acme/kubelet-serving/t1"}


def test_the_lab_plans_tenant_workers_past_the_datastore() -> None:
    import ipaddress

    from metalseed.lab import plan as planmod

    p = planmod.plan_lab("seedy", 1, 1, ipaddress.IPv4Network("10.213.7.0/24"), datastore=1,
                         tenant_workers=2)
    assert [(m.name, m.role, str(m.address)) for m in p.tenant_workers] == [
        ("t1", "tenant-worker", "10.213.7.61"), ("t2", "tenant-worker", "10.213.7.62")]
    assert planmod.machine_role("t1") == "tenant-worker"
    assert planmod.netns_pattern("seedy").match("ms-seedy-t1")


def test_the_edge_routes_a_tenant_workers_nameless_hello_to_its_tenant(tmp_path: Path) -> None:
    """A pod's in-cluster client on t1 dials the kubernetes Service by IP: no server name, so
    the edge routes by t1's address to acme's API; no name from anywhere else stays the seed's."""
    import re

    from metalseed.render import edge

    c = seed(tmp_path)
    stream = edge.nginx_conf(c, "/x").split("\nstream {", 1)[1]

    def map_of(var: str) -> list[str]:
        m = re.search(rf"map \$\w+ \${var} \{{(.*?)\}}", stream, re.S)
        assert m is not None, var
        return [ln.strip() for ln in m.group(1).strip().splitlines()]

    assert map_of("metalseed_api_by_source") == [
        "default metalseed_apiserver;",
        "10.20.0.61 kube-apiserver.tenant-acme.svc.cluster.local:6443;"]
    assert map_of("metalseed_api_upstream")[0] == "default $metalseed_api_by_source;"
    assert "map $remote_addr $metalseed_api_by_source" in stream
    # The endpoint the tenant's pods get is that path: the VIP at the edge's API port.
    slice_ = next(o for o in worker_objects(str(c.vip), c.apiserver_port)
                  if o["kind"] == "EndpointSlice")
    assert slice_["endpoints"][0]["addresses"] == ["10.20.0.10"]
    assert slice_["ports"][0]["port"] == c.apiserver_port == 6443
