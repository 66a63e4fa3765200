"""Tenants in a seed's group data: validated with every other setting before any host is touched,
each problem named with its key, and the endpoint name each tenant's API answers to."""

from __future__ import annotations

import pytest

from metalseed.errors import ModelError
from metalseed.model import TENANT_WORKER, _HostInput, build_cluster

from .test_model import BASE, errors_of, hosts

SEED = {"kubernetes": True, "cluster_name": "seed1"}


def with_tenant_workers(tenants: dict[str, object], names: tuple[str, ...] = ("t1",),
                        groups: tuple[str, ...] = ("tenant_workers",)) -> list[_HostInput]:
    data = {**BASE, **SEED, "tenants": tenants}
    return hosts(common={**SEED, "tenants": tenants}) + [
        _HostInput(n, (*groups, "all"), {**data, "ssh_hostname": f"10.20.0.{60 + i}"})
        for i, n in enumerate(names, 1)]


def test_tenants_are_on_the_cluster_sorted_with_their_endpoints() -> None:
    c = build_cluster(with_tenant_workers({
        "globex": {"profile": "medium"}, "acme": {"kubernetes_version": "1.36", "workers": ["t1"]}}))
    assert [t.name for t in c.tenants] == ["acme", "globex"]
    assert c.tenant("acme").workers == ("t1",) and c.tenant("globex").profile == "medium"
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


def test_a_tenant_worker_is_a_node_of_its_tenant_only() -> None:
    c = build_cluster(with_tenant_workers({"acme": {"workers": ["t1", "t2"]}, "globex": {}},
                                          names=("t1", "t2")))
    assert [(n.name, n.role) for n in c.workers_of("acme")] == [("t1", TENANT_WORKER),
                                                                 ("t2", TENANT_WORKER)]
    assert c.workers_of("globex") == ()
    # No seed node: the seed's deploys and its own API know nothing of them.
    assert not {"t1", "t2"} & {n.name for n in c.nodes}
    assert c.is_tenant_worker_host("t1") and not c.is_tenant_worker_host("w1")
    assert c.tenant_worker("t2")[0].name == "acme"


def test_a_seed_node_as_a_tenant_worker_is_refused() -> None:
    with pytest.raises(ModelError) as info:
        build_cluster(hosts(common={**SEED, "tenants": {"acme": {"workers": ["w1"]}}}))
    [e] = [e for e in errors_of(info.value) if e.field == "tenants['acme'].workers"]
    assert e.found == "w1" and "w1 is in 'workers', a host of the seed" in e.accepted
    assert "tenant_workers" in e.accepted


def test_a_host_both_seed_node_and_tenant_worker_is_refused() -> None:
    with pytest.raises(ModelError) as info:
        build_cluster(with_tenant_workers({"acme": {"workers": ["t1"]}},
                                          groups=("workers", "tenant_workers")))
    [e] = [e for e in errors_of(info.value) if e.field == "groups"]
    assert e.host == "t1" and "never of the seed" in e.accepted


def test_a_tenant_worker_no_tenant_names_is_refused() -> None:
    with pytest.raises(ModelError) as info:
        build_cluster(with_tenant_workers({"acme": {}}))
    [e] = [e for e in errors_of(info.value) if e.field == "tenants"]
    assert e.host == "t1" and "no tenant lists" in e.accepted
