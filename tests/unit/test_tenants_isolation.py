"""Tenant isolation policies: the Cilium ones fit the pinned Cilium module's CRD schemas (the
mirror's ``cilium-crds`` bundle), the standard ones the pinned Kubernetes' OpenAPI; each tenant's
policies name no other tenant; the allowances are exactly the issue's list; the CRD validator
refuses what the API server would (an unknown field, an enum or pattern miss, a oneOf broken)."""

from __future__ import annotations

import copy
import ipaddress
import json
from typing import Any

import pytest

from metalseed.errors import KubernetesObjectError
from metalseed.kube import crd
from metalseed.kube import openapi as oa
from metalseed.mirror import default_root, load_pins
from metalseed.tenants import isolation as iso
from metalseed.tenants.spec import TenantSpec

A = ipaddress.IPv4Address
N = ipaddress.IPv4Network
ACME = TenantSpec("acme", "small", "v1.36.3")
GLOBEX = TenantSpec("globex", "small", "v1.36.3")
INPUTS = iso.IsolationInputs(
    datastore=(A("10.0.0.21"), A("10.0.0.22"), A("10.0.0.23")), datastore_port=2379,
    node_sources=iso.node_sources([A("10.0.0.11"), A("10.0.0.31")],
                                  [N("10.244.0.0/24"), N("10.244.1.0/24")]),
    tenant_workers={"acme": (A("10.0.0.41"),)})


@pytest.fixture(scope="module")
def cilium() -> crd.CRDSchemas:
    return crd.load(default_root())


@pytest.fixture(scope="module")
def k8s() -> oa.Schemas:
    return oa.load(default_root())


def test_the_mirror_holds_the_pinned_cilium_crds(cilium: crd.CRDSchemas) -> None:
    assert cilium.version == load_pins().get(crd.COMPONENT).version
    assert {"cilium.io/v2/CiliumNetworkPolicy",
            "cilium.io/v2/CiliumClusterwideNetworkPolicy"} <= set(cilium.kinds)


def test_cilium_policies_fit_ciliums_schemas(cilium: crd.CRDSchemas) -> None:
    objs = iso.all_cilium([ACME, GLOBEX], INPUTS)
    crd.validate(objs, cilium)
    assert [o["metadata"]["name"] for o in objs] == [
        iso.CLUSTER_POLICY, *iso.POLICY_NAMES, *iso.POLICY_NAMES]


def test_network_policies_fit_the_pinned_kubernetes(k8s: oa.Schemas) -> None:
    objs = iso.all_network_policies([ACME, GLOBEX], INPUTS)
    oa.validate(objs, k8s)
    assert {o["metadata"]["namespace"] for o in objs} == {"tenant-acme", "tenant-globex"}


@pytest.mark.parametrize("render", [iso.cilium_policies, iso.network_policies])
def test_no_policy_of_a_tenant_names_another(render: Any) -> None:
    for me, other in ((ACME, GLOBEX), (GLOBEX, ACME)):
        text = json.dumps(render(me, INPUTS))
        assert other.name not in text and me.namespace in text


@pytest.mark.parametrize("render", [iso.all_cilium, iso.all_network_policies])
def test_a_tenant_added_later_leaves_the_others_policies_as_they_were(render: Any) -> None:
    initech = TenantSpec("initech", "small", "v1.36.3")
    before = render([ACME, GLOBEX], INPUTS)
    after = render([ACME, GLOBEX, initech], INPUTS)
    assert [p for p in after if p["metadata"].get("namespace") != initech.namespace] == before


def _rules(policy: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return list(policy["spec"].get(key) or [])


def test_cilium_allowances_are_exactly_the_issues_list() -> None:
    by_name = {p["metadata"]["name"]: p for p in iso.cilium_policies(ACME, INPUTS)}
    deny = by_name["default-deny"]["spec"]
    assert deny == {"endpointSelector": {}, "ingress": [{}], "egress": [{}]}
    dns = _rules(by_name["dns"], "egress")
    assert dns[0]["toEndpoints"] == [{"matchLabels": {
        "k8s:io.kubernetes.pod.namespace": "kube-system", "k8s:k8s-app": "kube-dns"}}]
    assert {(p["port"], p["protocol"]) for p in dns[0]["toPorts"][0]["ports"]} == {
        ("53", "UDP"), ("53", "TCP")}
    ing = _rules(by_name["apiserver-ingress"], "ingress")
    assert ing[0]["fromEntities"] == ["host", "remote-node"]
    # flannel's addresses (Cilium knows no node by them) by CIDR, to the same ports.
    assert [c["cidr"] for c in ing[1]["fromCIDRSet"]] == [str(n) for n in INPUTS.node_sources]
    assert ing[1]["toPorts"] == ing[0]["toPorts"]
    assert ing[2] == {"fromCIDRSet": [{"cidr": "10.0.0.41/32"}],
                      "toPorts": [{"ports": [{"port": "6443", "protocol": "TCP"}]}]}
    eg = _rules(by_name["apiserver-egress"], "egress")
    assert [c["cidr"] for c in eg[0]["toCIDRSet"]] == ["10.0.0.21/32", "10.0.0.22/32",
                                                         "10.0.0.23/32"]
    assert eg[0]["toPorts"] == [{"ports": [{"port": "2379", "protocol": "TCP"}]}]
    assert eg[1]["toCIDRSet"] == [{"cidr": "10.0.0.41/32"}]
    assert eg[1]["toPorts"] == [{"ports": [{"port": "10250", "protocol": "TCP"}]}]
    # globex has no workers: no worker rule at all (not an empty one, which would allow all).
    g = {p["metadata"]["name"]: p for p in iso.cilium_policies(GLOBEX, INPUTS)}
    assert len(_rules(g["apiserver-ingress"], "ingress")) == 2
    assert len(_rules(g["apiserver-egress"], "egress")) == 1


def test_the_cluster_policy_denies_tenant_namespaces_the_seed_api() -> None:
    p = iso.cilium_cluster_policy()
    assert p["kind"] == "CiliumClusterwideNetworkPolicy" and "namespace" not in p["metadata"]
    assert p["spec"]["egressDeny"] == [{"toEntities": ["kube-apiserver"]}]
    assert p["spec"]["endpointSelector"]["matchExpressions"] == [{
        "key": "k8s:io.cilium.k8s.namespace.labels.metalseed.io/tenant", "operator": "Exists"}]


def test_network_policies_carry_the_same_intent() -> None:
    by_name = {p["metadata"]["name"]: p for p in iso.network_policies(ACME, INPUTS)}
    assert by_name["default-deny"]["spec"] == {"podSelector": {},
                                               "policyTypes": ["Ingress", "Egress"]}
    ing = by_name["apiserver-ingress"]["spec"]["ingress"]
    sources = [b["ipBlock"]["cidr"] for b in ing[0]["from"]]
    # The nodes and flannel's vxlan and bridge addresses of each node's podCIDR.
    assert sources == ["10.0.0.11/32", "10.0.0.31/32", "10.244.0.0/32", "10.244.0.1/32",
                       "10.244.1.0/32", "10.244.1.1/32"]
    assert [p["port"] for p in ing[0]["ports"]] == [6443, 10257, 10259]
    assert ing[1]["from"] == [{"ipBlock": {"cidr": "10.0.0.41/32"}}]
    eg = by_name["apiserver-egress"]["spec"]["egress"]
    assert [b["ipBlock"]["cidr"] for b in eg[0]["to"]] == ["10.0.0.21/32", "10.0.0.22/32",
                                                          "10.0.0.23/32"]
    assert eg[1]["ports"] == [{"port": 10250, "protocol": "TCP"}]
    # The control plane selector also takes the probe pod, never the Service's selector alone.
    sel = by_name["apiserver-ingress"]["spec"]["podSelector"]
    assert sel["matchExpressions"][0]["values"] == [iso.CONTROL_PLANE, iso.PROBE]


def _cnp() -> dict[str, Any]:
    return copy.deepcopy(iso.cilium_policies(ACME, INPUTS)[3])


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda p: p["spec"]["egress"][0].update(toCIDRset=[]), "unknown field; accepted: did you "
     "mean 'toCIDRSet'?"),
    (lambda p: p["spec"]["egress"][0]["toPorts"][0]["ports"][0].update(protocol="TPC"),
     "found 'TPC'; accepted: one of"),
    (lambda p: p["spec"]["egress"][0]["toPorts"][0]["ports"][0].update(port="http!"),
     "accepted: a string matching"),
    (lambda p: p["spec"].update(nodeSelector={}), "matches 2 of oneOf"),
    (lambda p: p["spec"].pop("egress"), "matches 0 of anyOf"),
    (lambda p: p["spec"]["egress"][0]["toCIDRSet"][0].update(cidrGroupRef="x"),
     "matches 2 of oneOf"),
    (lambda p: p.update(apiVersion="cilium.io/v1"), "did you mean 'cilium.io/v2/"
     "CiliumNetworkPolicy'?"),
])
def test_the_crd_validator_refuses_what_the_api_server_would(cilium: crd.CRDSchemas,
                                                             mutate: Any, expected: str) -> None:
    bad = _cnp()
    mutate(bad)
    found = crd.problems(bad, cilium)
    assert any(expected in p for p in found), found
    with pytest.raises(KubernetesObjectError, match="CiliumNetworkPolicy tenant-acme/"
                       "apiserver-egress"):
        crd.validate([bad], cilium)
    assert crd.problems(_cnp(), cilium) == []
