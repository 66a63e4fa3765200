"""The Kubernetes settings of the model: on/off, extra kubelet and kube-proxy configuration fields
(names checked against the pinned version's schema), and what Kubernetes needs from the rest."""

from __future__ import annotations

import pytest

from metalseed.model import build_cluster

from .test_model import hosts, rejects

TARBALL = {"etcd_source": "tarball", "etcd_tarball_url": "https://example.com/etcd.tgz",
           "etcd_tarball_sha256": "0" * 64}


def test_kubernetes_is_off_by_default() -> None:
    k = build_cluster(hosts()).kubernetes
    assert not k.enabled and k.kube_proxy_mode == "iptables" and k.kubelet_settings == ()


def test_kubernetes_refuses_debian_etcd_and_says_why() -> None:
    e = rejects("etcd_source", common={"kubernetes": True, "etcd_source": "debian"})
    assert e.found == "debian"
    assert "3.5.11" in e.accepted and "3.4.23" in e.accepted


def test_kubernetes_runs_on_the_mirrors_etcd_by_default() -> None:
    c = build_cluster(hosts(common={"kubernetes": True}))
    assert c.etcd.source == "mirror"


def test_kubernetes_with_a_newer_etcd() -> None:
    c = build_cluster(hosts(common={"kubernetes": True, **TARBALL,
                                    "kubelet_settings": {"maxPods": 50, "cgroupRoot": "/kubelet"},
                                    "kube_proxy_settings": {"conntrack": {"maxPerCore": 0}}}))
    assert c.kubernetes.enabled
    assert dict(c.kubernetes.kubelet_settings) == {"maxPods": 50, "cgroupRoot": "/kubelet"}
    assert dict(c.kubernetes.kube_proxy_settings) == {"conntrack": {"maxPerCore": 0}}


def test_a_misspelt_kubelet_field_gets_a_suggestion() -> None:
    e = rejects("kubelet_settings", common={"kubelet_settings": {"cgroupRot": "/kubelet"}})
    assert "did you mean 'cgroupRoot'?" in e.accepted


def test_a_misspelt_kube_proxy_field_gets_a_suggestion() -> None:
    e = rejects("kube_proxy_settings", common={"kube_proxy_settings": {"contrack": {}}})
    assert "did you mean 'conntrack'?" in e.accepted


@pytest.mark.parametrize("field, value, says", [
    ("kubelet_settings", {"cgroupDriver": "systemd"}, "containerd's cgroup driver"),
    ("kubelet_settings", {"tlsCertFile": "/x.crt"}, "kubelet-serving"),
    ("kube_proxy_settings", {"mode": "ipvs"}, "kube_proxy_mode"),
])
def test_fields_metalseed_owns_are_refused(field: str, value: dict[str, object], says: str) -> None:
    assert says in rejects(field, common={field: value}).accepted


def test_no_ipvs() -> None:
    rejects("kube_proxy_mode", common={"kube_proxy_mode": "ipvs"})


def test_settings_must_be_a_mapping() -> None:
    rejects("kubelet_settings", common={"kubelet_settings": ["maxPods"]})


def test_a_service_network_overlapping_the_pod_network_is_refused() -> None:
    rejects("service_network", common={"pod_network": "10.96.0.0/16", "service_network": "10.96.0.0/12"})


K8S = {"kubernetes": True}


def test_debian_etcd_message_names_key_found_and_accepted() -> None:
    e = rejects("etcd_source", common={**K8S, "etcd_source": "debian"})
    assert str(e).startswith("etcd_source: found 'debian'; accepted: ")
    assert "'mirror'" in e.accepted and "'tarball'" in e.accepted


def test_debian_etcd_is_fine_without_kubernetes() -> None:
    assert build_cluster(hosts(common={"etcd_source": "debian"})).etcd.source == "debian"


@pytest.mark.parametrize("common, field, found, other", [
    ({"service_network": "10.20.0.0/16"}, "service_network", "10.20.0.0/16", "node_network"),
    ({"pod_network": "10.96.0.0/16", "service_network": "10.96.0.0/12"}, "service_network",
     "10.96.0.0/12", "pod_network 10.96.0.0/16"),
    ({"pod_network": "10.20.0.0/16"}, "pod_network", "10.20.0.0/16", "node_network"),
])
def test_overlapping_networks_name_both(common: dict[str, str], field: str, found: str,
                                        other: str) -> None:
    e = rejects(field, common={**K8S, **common})
    assert e.found == found
    assert e.accepted.startswith("a network that does not overlap ") and other in e.accepted


def test_ingress_nodeports_collide_with_each_other() -> None:
    e = rejects("ingress_https_nodeport", common={"ingress_http_nodeport": 30100,
                                                  "ingress_https_nodeport": 30100})
    assert e.found == 30100 and "different from ingress_http_nodeport" in e.accepted


@pytest.mark.parametrize("field, port", [("ingress_http_nodeport", 8080),
                                         ("ingress_https_nodeport", 32768)])
def test_ingress_nodeport_outside_the_service_nodeport_range(field: str, port: int) -> None:
    e = rejects(field, common={field: port})
    assert e.found == port and e.accepted == "an integer from 30000 to 32767"


@pytest.mark.parametrize("field", ["apiserver_port", "etcd_client_port", "edge_https_port"])
def test_a_host_port_on_an_ingress_nodeport_is_refused(field: str) -> None:
    e = rejects(field, common={**K8S, field: 30443})
    assert e.found == 30443
    assert e.accepted == "a port that no ingress NodePort uses (ingress_https_nodeport is 30443)"


@pytest.mark.parametrize("field", ["apiserver_port", "etcd_metrics_port", "edge_http_port"])
def test_a_host_port_inside_the_nodeport_range_is_refused(field: str) -> None:
    e = rejects(field, common={**K8S, field: 31000})
    assert e.found == 31000
    assert "outside the NodePort range 30000-32767" in e.accepted and "kube-proxy" in e.accepted


def test_host_ports_in_the_range_are_fine_without_kubernetes() -> None:
    assert build_cluster(hosts(common={"edge_http_port": 31000})).edge.http_port == 31000


def test_a_kubelet_port_on_an_ingress_nodeport_is_refused() -> None:
    e = rejects("kubelet_settings", common={**K8S, "kubelet_settings": {"healthzPort": 30080}})
    assert e.found == {"healthzPort": 30080}
    assert "kubelet_settings.healthzPort outside the NodePort range" in e.accepted
    assert "ingress_http_nodeport" in e.accepted


def test_unknown_kubelet_field_message() -> None:
    e = rejects("kubelet_settings", common={"kubelet_settings": {"maxPod": 50}})
    assert e.found == {"maxPod": 50}
    assert e.accepted.startswith("did you mean 'maxPods'? field names of KubeletConfiguration")
    assert "'maxPod' is not one" in e.accepted


def test_a_misspelt_nested_kube_proxy_field_gets_a_suggestion() -> None:
    value = {"conntrack": {"maxPerCor": 0}}
    e = rejects("kube_proxy_settings", common={"kube_proxy_settings": value})
    assert e.found == value
    assert e.accepted.startswith("did you mean 'maxPerCore'? field names of "
                                 "KubeProxyConfiguration.conntrack")
    assert "'maxPerCor' is not one" in e.accepted and "tcpBeLiberal" in e.accepted


def test_a_misspelt_nested_kubelet_field_gets_a_suggestion() -> None:
    e = rejects("kubelet_settings",
                common={"kubelet_settings": {"memorySwap": {"swapBehaviour": "NoSwap"}}})
    assert "did you mean 'swapBehavior'?" in e.accepted
    assert "KubeletConfiguration.memorySwap" in e.accepted


def test_a_nested_struct_must_be_a_mapping() -> None:
    e = rejects("kube_proxy_settings", common={"kube_proxy_settings": {"iptables": "fast"}})
    assert e.accepted.startswith("KubeProxyConfiguration.iptables: a mapping of its fields")


def test_an_unknown_setting_key_gets_a_suggestion() -> None:
    e = rejects("kube_proxy_setings", host="m1", common={"kube_proxy_setings": {}})
    assert "did you mean 'kube_proxy_settings'?" in e.accepted


def test_nested_fields_the_lab_uses_pass() -> None:
    c = build_cluster(hosts(common={**K8S, "kube_proxy_settings": {
        "conntrack": {"maxPerCore": 0, "min": 0}, "iptables": {"localhostNodePorts": False}}}))
    assert dict(c.kubernetes.kube_proxy_settings)["conntrack"] == {"maxPerCore": 0, "min": 0}
