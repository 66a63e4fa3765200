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
