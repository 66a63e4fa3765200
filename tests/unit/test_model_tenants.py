"""Tenants in a seed's group data: validated with every other setting before any host is touched,
each problem named with its key, and the endpoint name each tenant's API answers to."""

from __future__ import annotations

import pytest

from metalseed.errors import ModelError
from metalseed.model import build_cluster

from .test_model import errors_of, hosts

SEED = {"kubernetes": True, "cluster_name": "seed1"}


def test_tenants_are_on_the_cluster_sorted_with_their_endpoints() -> None:
    c = build_cluster(hosts(common={**SEED, "tenants": {
        "globex": {"profile": "medium"}, "acme": {"kubernetes_version": "1.36", "workers": ["w1"]}}}))
    assert [t.name for t in c.tenants] == ["acme", "globex"]
    assert c.tenant("acme").workers == ("w1",) and c.tenant("globex").profile == "medium"
    assert c.tenant("acme").kubernetes_version == c.kubernetes.version
    assert c.tenant_endpoint("acme") == "acme.seed1.tenants.cluster.local"


def test_a_tenant_domain_of_ones_own() -> None:
    c = build_cluster(hosts(common={**SEED, "tenant_domain": "tenants.example.com",
                                    "tenants": {"acme": {}}}))
    assert c.tenant_endpoint("acme") == "acme.tenants.example.com"


def test_no_tenants_by_default() -> None:
    assert build_cluster(hosts(common=SEED)).tenants == ()


def test_every_tenant_problem_is_reported_with_the_rest_of_the_inventory() -> None:
    with pytest.raises(ModelError) as info:
        build_cluster(hosts(common={**SEED, "vip": "10.20.0.11", "tenants": {
            "Acme": {}, "globex": {"profil": "small"}, "initech": {"profile": "huge"},
            "hooli": {"kubernetes_version": "1.20", "workers": ["nope"]}}}))
    errs = {(e.field, str(e.found)): e.accepted for e in errors_of(info.value)}
    assert any(f == "vip" for f, _ in errs)  # the rest of the inventory, in the same report
    assert "RFC 1123" in errs[("tenants", "Acme")]
    assert "did you mean 'profile'?" in errs[("tenants['globex'].profil", "small")]
    assert "one of small, medium, large" in errs[("tenants['initech'].profile", "huge")]
    assert "the mirror holds" in errs[("tenants['hooli'].kubernetes_version", "1.20")]
    assert "a host of this inventory" in errs[("tenants['hooli'].workers", "nope")]


def test_tenants_need_a_kubernetes_seed() -> None:
    with pytest.raises(ModelError) as info:
        build_cluster(hosts(common={"cluster_name": "seed1", "tenants": {"acme": {}}}))
    assert [e.field for e in errors_of(info.value)] == ["tenants"]
    assert "kubernetes = True" in errors_of(info.value)[0].accepted
