"""Kubernetes' files and objects, rendered from the model (no hosts): what each component is told,
and that the extra configuration fields land where the component reads them."""

from __future__ import annotations

import json

import yaml

from metalseed.kube import objects
from metalseed.render import kubernetes as r
from tests.unit.golden_render import FLANNELD_BINARY, KUBE_BINARY, inventories


def cluster():  # type: ignore[no-untyped-def]
    return inventories()["lab-kubernetes"]()


def flags(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip().rstrip("\\").strip()
        if line.startswith("--"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def test_apiserver_binds_its_own_address_and_uses_etcd_over_mutual_tls() -> None:
    c = cluster()
    m2 = c.masters[1]
    f = flags(r.apiserver_unit(c, m2, KUBE_BINARY))
    assert f["--bind-address"] == f["--advertise-address"] == str(m2.address)
    assert f["--etcd-servers"] == ",".join(c.etcd_client_urls())
    assert f["--etcd-certfile"].endswith("apiserver-etcd-client.crt")
    assert f["--authorization-mode"] == "Node,RBAC"
    assert "NodeRestriction" in f["--enable-admission-plugins"]
    assert f["--anonymous-auth"] == "false"
    assert f["--encryption-provider-config"] == r.ENCRYPTION_CONFIG
    assert f["--audit-log-maxbackup"] and f["--audit-log-maxsize"]


def test_controller_manager_allocates_node_cidrs_from_the_pod_network() -> None:
    c = cluster()
    f = flags(r.controller_manager_unit(c, KUBE_BINARY))
    assert f["--allocate-node-cidrs"] == "true"
    assert f["--cluster-cidr"] == str(c.pod_network)
    assert f["--node-cidr-mask-size"] == "24"


def test_units_run_the_multi_call_binary_and_name_its_digest() -> None:
    text = r.scheduler_unit(KUBE_BINARY)
    assert "ExecStart=/usr/local/bin/kube kube-scheduler \\" in text
    assert KUBE_BINARY.sha256 in text
    assert "ExecStart=/usr/local/bin/flanneld \\" in r.flanneld_unit(cluster().workers[0],
                                                                     FLANNELD_BINARY)


def test_kubelet_configuration() -> None:
    c = cluster()
    master, worker = c.masters[0], c.workers[0]
    k = yaml.safe_load(r.kubelet_config(c, worker))
    assert k["kind"] == "KubeletConfiguration"
    assert k["failCgroupV1"] is False and k["failSwapOn"] is False
    assert k["cgroupDriver"] == "cgroupfs"
    assert k["clusterDNS"] == ["10.96.0.10"]
    assert k["maxPods"] == 60  # kubelet_settings
    assert k["registerWithTaints"] == []
    assert yaml.safe_load(r.kubelet_config(c, master))["registerWithTaints"] == [
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    f = flags(r.kubelet_unit(worker, KUBE_BINARY))
    assert f["--node-ip"] == str(worker.address) and f["--hostname-override"] == worker.name


def test_kube_proxy_settings_merge_into_nested_fields() -> None:
    c = cluster()
    p = yaml.safe_load(r.kube_proxy_config(c, c.workers[0]))
    assert p["mode"] == "iptables"
    assert p["conntrack"] == {"maxPerCore": 0}
    assert p["clusterCIDR"] == str(c.pod_network)


def test_flannel_is_vxlan_over_the_pod_network() -> None:
    c = cluster()
    net = json.loads(r.flannel_net_conf(c))
    assert net["Network"] == str(c.pod_network) and net["Backend"]["Type"] == "vxlan"
    assert json.loads(r.flannel_conflist())["plugins"][0]["type"] == "flannel"


def test_kubeconfig_with_server_changes_only_the_server() -> None:
    conf = yaml.safe_dump({"apiVersion": "v1", "clusters": [{"name": "x", "cluster": {
        "server": "https://127.0.0.1:6443", "certificate-authority-data": "QQ=="}}],
        "users": [{"name": "u", "user": {"client-key-data": "Sw=="}}]}, sort_keys=False).encode()
    out = yaml.safe_load(r.kubeconfig_with_server(conf, "https://10.0.0.11:6443"))
    assert out["clusters"][0]["cluster"] == {"server": "https://10.0.0.11:6443",
                                              "certificate-authority-data": "QQ=="}
    assert out["users"] == [{"name": "u", "user": {"client-key-data": "Sw=="}}]


def test_coredns_objects() -> None:
    c = cluster()
    objs = {(o["kind"], o["metadata"]["name"]): o
            for o in objects.coredns(c, "registry.k8s.io/coredns/coredns:v1.14.7", b"CA")}
    dep = objs[("Deployment", "coredns")]
    # The pods' trust: a new CA bundle rolls them (they read their ca.crt once, at start).
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations == objects.trust_annotations(b"CA") != objects.trust_annotations(b"CA2")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith("coredns:v1.14.7")
    assert objs[("Service", "kube-dns")]["spec"]["clusterIP"] == str(c.cluster_dns_address)
    assert f"kubernetes {c.dns_domain} in-addr.arpa" in objs[("ConfigMap", "coredns")]["data"][
        "Corefile"]
    roles = {o["metadata"]["name"]: o["metadata"]["labels"] for o in objects.node_roles(c)}
    assert roles["m1"] == {"node-role.kubernetes.io/control-plane": ""}
    assert roles["w1"] == {"node-role.kubernetes.io/worker": ""}
