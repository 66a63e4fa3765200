"""The cluster model: every validation rejects bad input with a message naming field and host."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from metalseed.errors import InventoryError, ModelError, ModelErrors
from metalseed.model import _HostInput, build_cluster, load_cluster, parse_duration, playbook_inputs

BASE = {"cluster_name": "prod", "node_network": "10.20.0.0/24", "vip": "10.20.0.10"}


def hosts(masters: int = 3, workers: int = 2, common: dict[str, Any] | None = None,
          per_host: dict[str, dict[str, Any]] | None = None) -> list[_HostInput]:
    data = {**BASE, **(common or {})}
    out = []
    for i in range(1, masters + 1):
        name = f"m{i}"
        out.append(_HostInput(name, ("masters", "all"),
                              {**data, "ssh_hostname": f"10.20.0.{10 + i}",
                               **(per_host or {}).get(name, {})}))
    for i in range(1, workers + 1):
        name = f"w{i}"
        out.append(_HostInput(name, ("workers", "all"),
                              {**data, "ssh_hostname": f"10.20.0.{20 + i}",
                               **(per_host or {}).get(name, {})}))
    return out


def errors_of(exc: ModelError) -> list[ModelError]:
    return exc.errors if isinstance(exc, ModelErrors) else [exc]


def rejects(field: str, host: str | None = None, **kw: Any) -> ModelError:
    with pytest.raises(ModelError) as info:
        build_cluster(hosts(**kw))
    errs = errors_of(info.value)
    matching = [e for e in errs if e.field == field and (host is None or e.host == host)]
    assert matching, f"expected an error on {field} (host {host}); got: {info.value}"
    return matching[0]


def test_valid_cluster_has_defaults_and_derived_values() -> None:
    c = build_cluster(hosts())
    assert [m.name for m in c.masters] == ["m1", "m2", "m3"]
    assert [w.address for w in c.workers] == [IPv4Address("10.20.0.21"), IPv4Address("10.20.0.22")]
    assert c.first_service_address == IPv4Address("10.96.0.1")
    assert c.pki.key_algorithm == "ecdsa-p256"
    assert c.etcd_initial_cluster() == (
        "m1=https://10.20.0.11:2380,m2=https://10.20.0.12:2380,m3=https://10.20.0.13:2380")
    assert c.edge.advert_int == 1.0


def test_single_master_lab_is_allowed() -> None:
    assert len(build_cluster(hosts(masters=1, workers=0)).masters) == 1


@pytest.mark.parametrize("count", [0, 2, 4])
def test_even_master_count_is_rejected(count: int) -> None:
    e = rejects("masters", masters=count)
    assert e.found == count and "odd" in e.accepted


def test_vip_outside_node_network() -> None:
    e = rejects("vip", common={"vip": "10.30.0.10"})
    assert "10.20.0.0/24" in e.accepted


def test_vip_equal_to_a_host_address() -> None:
    e = rejects("vip", common={"vip": "10.20.0.12"})
    assert "m2" in e.accepted


@pytest.mark.parametrize("key,value,other", [
    ("pod_network", "10.20.0.0/16", "node_network"),
    ("service_network", "10.244.128.0/20", "pod_network"),
    ("service_network", "10.20.0.0/28", "node_network"),
])
def test_overlapping_networks(key: str, value: str, other: str) -> None:
    e = rejects(key, common={key: value})
    assert other in e.accepted


def test_duplicate_addresses_name_both_hosts() -> None:
    e = rejects("address", host="w2", per_host={"w2": {"ssh_hostname": "10.20.0.21"}})
    assert "w1" in e.accepted


def test_duplicate_node_names() -> None:
    e = rejects("node_name", host="w2", per_host={"w2": {"node_name": "w1"}})
    assert "w1" in e.accepted


@pytest.mark.parametrize("name", ["Master_1", "-m1", "m1-", "a" * 64, "UPPER"])
def test_names_that_are_not_rfc1123(name: str) -> None:
    e = rejects("node_name", host="m1", per_host={"m1": {"node_name": name}})
    assert "RFC 1123" in e.accepted


def test_cluster_name_must_be_a_label() -> None:
    rejects("cluster_name", common={"cluster_name": "prod.example"})


@pytest.mark.parametrize("port", [80, 29999, 32768, 65535])
def test_nodeport_outside_range(port: int) -> None:
    e = rejects("ingress_http_nodeport", common={"ingress_http_nodeport": port})
    assert "30000" in e.accepted and "32767" in e.accepted


def test_nodeports_must_differ() -> None:
    rejects("ingress_https_nodeport", common={"ingress_https_nodeport": 30080})


def test_unknown_key_suggests_the_right_one() -> None:
    e = rejects("node_netwrok", host="m1", per_host={"m1": {"node_netwrok": "10.0.0.0/24"}})
    assert "node_network" in e.accepted


def test_pyinfra_keys_are_not_typos() -> None:
    build_cluster(hosts(common={"ssh_user": "root", "_sudo": True, "ssh_port": 22}))


def test_cluster_setting_must_agree_across_hosts() -> None:
    e = rejects("vip", host="w1", per_host={"w1": {"vip": "10.20.0.99"}})
    assert "same value on every host" in e.accepted


def test_host_in_both_groups_or_none() -> None:
    hs = hosts()
    hs[0] = _HostInput("m1", ("masters", "workers"), hs[0].data)
    hs[3] = _HostInput("w1", ("all",), hs[3].data)
    with pytest.raises(ModelErrors) as info:
        build_cluster(hs)
    assert {(e.field, e.host) for e in info.value.errors} >= {("groups", "m1"), ("groups", "w1")}


def test_required_settings() -> None:
    hs = [_HostInput("m1", ("masters",), {"ssh_hostname": "10.0.0.1"})]
    with pytest.raises(ModelErrors) as info:
        build_cluster(hs)
    assert {"cluster_name", "vip", "node_network"} <= {e.field for e in info.value.errors}


def test_bad_values_list_every_problem_at_once() -> None:
    with pytest.raises(ModelErrors) as info:
        build_cluster(hosts(masters=2, common={"vip": "not-an-ip", "pki_key_algorithm": "dsa"}))
    fields = {e.field for e in info.value.errors}
    assert fields >= {"masters", "vip", "pki_key_algorithm"}
    assert "not-an-ip" in str(info.value)


def test_address_must_be_in_node_network() -> None:
    e = rejects("address", host="w1", per_host={"w1": {"address": "192.168.9.9"}})
    assert "node_network" in e.accepted


def test_etcd_election_at_least_five_heartbeats() -> None:
    rejects("etcd_election_ms", common={"etcd_heartbeat_ms": 200, "etcd_election_ms": 500})


def test_tarball_source_needs_url_and_hash() -> None:
    rejects("etcd_tarball_url", common={"etcd_source": "tarball"})
    rejects("etcd_tarball_sha256", common={"etcd_tarball_sha256": "abc"})


def test_renew_window_shorter_than_leaf_lifetime() -> None:
    rejects("pki_renew_before", common={"pki_leaf_lifetime": "10m", "pki_renew_before": "30d"})


def test_edge_cert_and_key_together() -> None:
    rejects("edge_key_file", common={"edge_cert_file": "/etc/ssl/edge.pem"})


@pytest.mark.parametrize("text,seconds", [
    ("90s", 90), ("5m", 300), ("12h", 43200), ("30d", 2592000), ("2w", 1209600),
    ("10y", 315360000), (3600, 3600),
])
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["soon", "-5m", "0", 0, True, "5 minutes"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_load_from_inventory_file_with_group_data(tmp_path: Path) -> None:
    (tmp_path / "group_data").mkdir()
    (tmp_path / "prod.py").write_text(textwrap.dedent("""
        masters = [("m1", {"ssh_hostname": "10.1.0.11"})]
        workers = [("w1", {"ssh_hostname": "10.1.0.21"})]
    """))
    (tmp_path / "group_data" / "prod.py").write_text(textwrap.dedent("""
        import os
        cluster_name = "prod"
        node_network = "10.1.0.0/24"
        vip = "10.1.0.10"
    """))
    (tmp_path / "group_data" / "all.py").write_text("pki_leaf_lifetime = '90d'\n")
    c = load_cluster(tmp_path / "prod.py")
    assert c.name == "prod" and c.pki.leaf_lifetime == timedelta(days=90)


def test_typo_in_group_data_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "group_data").mkdir()
    (tmp_path / "prod.py").write_text('masters = [("m1", {"ssh_hostname": "10.1.0.11"})]\n')
    (tmp_path / "group_data" / "all.py").write_text(
        "cluster_name = 'prod'\nnode_network = '10.1.0.0/24'\nvip = '10.1.0.10'\n"
        "ingres_http_nodeport = 30080\n")
    with pytest.raises(ModelError) as info:
        load_cluster(tmp_path / "prod.py")
    assert info.value.field == "ingres_http_nodeport"
    assert "ingress_http_nodeport" in str(info.value)


def test_missing_inventory_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="does not exist"):
        load_cluster(tmp_path / "nope.py")


def test_broken_inventory_file(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("masters = [\n")
    with pytest.raises(InventoryError, match="could not load"):
        load_cluster(tmp_path / "bad.py")


# ---------------------------------------------------------------------------------------------
# Playbook inputs (pyinfra data, e.g. --data rotate=all)

ROTATE = {"rotate": "due", "rotate_ca": None, "rotate_phase": None}


def test_playbook_inputs_take_data_over_the_playbooks_defaults() -> None:
    c = build_cluster(hosts())
    assert playbook_inputs(c, {}, ROTATE) == ROTATE
    got = playbook_inputs(c, {"rotate": "etcd/m1/server, apiserver"}, ROTATE)
    assert got["rotate"] == ("etcd/m1/server", "apiserver")
    assert playbook_inputs(c, {"rotate": ["apiserver"]}, ROTATE)["rotate"] == ("apiserver",)
    ca = playbook_inputs(c, {"rotate_ca": "etcd/ca", "rotate_phase": "trust"}, ROTATE)
    assert (ca["rotate_ca"], ca["rotate_phase"]) == (("etcd/ca",), "trust")
    both = playbook_inputs(c, {"rotate_ca": "ca, front-proxy-ca", "rotate_phase": "trust"}, ROTATE)
    assert both["rotate_ca"] == ("ca", "front-proxy-ca")


def test_a_misspelt_input_is_refused_with_a_suggestion() -> None:
    err = rejects("rotate_phsae", host="m1", common={"rotate_phsae": "trust"})
    assert "did you mean 'rotate_phase'" in str(err)


def test_a_bad_input_value_is_refused_before_any_host_is_touched() -> None:
    err = rejects("rotate_phase", common={"rotate_phase": "trsut"})
    assert "trust" in err.accepted and "reissue" in err.accepted
    err = rejects("etcd_backup_retention", common={"etcd_backup_retention": 0})
    assert "1" in err.accepted


def test_a_ca_rotation_needs_both_inputs() -> None:
    c = build_cluster(hosts())
    with pytest.raises(ModelError, match="both rotate_ca and rotate_phase"):
        playbook_inputs(c, {"rotate_ca": "etcd/ca"}, ROTATE)


def test_the_member_to_replace_must_be_a_master() -> None:
    c = build_cluster(hosts())
    defaults = {"etcd_replace": None}
    assert playbook_inputs(c, {"etcd_replace": "m2"}, defaults) == {"etcd_replace": "m2"}
    for bad in (None, "w1"):
        with pytest.raises(ModelError, match="one of m1, m2, m3") as info:
            playbook_inputs(c, {"etcd_replace": bad}, defaults)
        assert info.value.field == "etcd_replace"


def test_kubernetes_clusters_fail_over_fast_unless_told_otherwise() -> None:
    # The API is promised back within 2 s of a crash of the VIP holder; the default advert
    # interval alone waits 3.45 s before a backup takes over.
    assert build_cluster(hosts(common={"kubernetes": True})).edge.failover == "fast"
    told = build_cluster(hosts(common={"kubernetes": True, "edge_failover": "default"}))
    assert told.edge.failover == "default" and told.edge.advert_int == 1.0
    assert build_cluster(hosts()).edge.failover == "default"


def _datastore(n: int, common: dict[str, Any] | None = None) -> list[_HostInput]:
    return [_HostInput(f"d{i}", ("datastore", "all"),
                       {**BASE, **(common or {}), "ssh_hostname": f"10.20.0.{30 + i}"})
            for i in range(1, n + 1)]


def test_no_datastore_group_leaves_the_cluster_as_it_was() -> None:
    c = build_cluster(hosts())
    assert c.datastore is None and c.tenants == ()
    with pytest.raises(ModelError, match="datastore"):
        c.datastore_view()


def test_datastore_group_is_its_own_etcd_cluster_and_no_kubernetes_node() -> None:
    c = build_cluster(hosts(1, 1) + _datastore(3))
    assert c.datastore is not None
    assert [n.name for n in c.nodes] == ["m1", "w1"]
    assert [m.role for m in c.datastore.members] == ["datastore"] * 3
    assert c.datastore.client_urls() == [f"https://10.20.0.{30 + i}:2379" for i in (1, 2, 3)]
    assert c.datastore.etcd.store_dir == "datastore" and c.datastore.etcd.auth
    assert c.datastore.etcd.admin_client == "root"
    assert c.etcd.store_dir == "etcd" and not c.etcd.auth
    assert c.is_datastore_host("d2") and not c.is_datastore_host("m1")
    view = c.datastore_view()
    assert view.name == c.name and view.pki_dir == c.pki_dir and view.workers == ()
    assert view.etcd_initial_cluster() == ",".join(
        f"d{i}=https://10.20.0.{30 + i}:2380" for i in (1, 2, 3))


def test_datastore_member_count_must_be_odd() -> None:
    with pytest.raises(ModelError) as info:
        build_cluster(hosts(1, 0) + _datastore(2))
    [e] = [e for e in errors_of(info.value) if e.field == "datastore"]
    assert e.found == 2 and "odd" in e.accepted


def test_a_datastore_member_is_no_master_nor_worker() -> None:
    both = [_HostInput("m2", ("masters", "datastore", "all"),
                       {**BASE, "ssh_hostname": "10.20.0.12"}),
            _HostInput("w1", ("workers", "datastore", "all"),
                       {**BASE, "ssh_hostname": "10.20.0.21"})]
    with pytest.raises(ModelError) as info:
        build_cluster(hosts(1, 0) + both)
    bad = {e.host: e for e in errors_of(info.value) if e.field == "groups"}
    assert set(bad) == {"m2", "w1"}
    assert bad["m2"].found == "masters and datastore"
    assert bad["w1"].found == "workers and datastore"


def test_datastore_address_must_be_unique_and_inside_the_node_network() -> None:
    clash = [_HostInput("d1", ("datastore", "all"), {**BASE, "ssh_hostname": "10.20.0.11"})]
    err = [e for e in errors_of(_raises(hosts(1, 0) + clash)) if e.field == "address"]
    assert err and "no other host" in err[0].accepted
    outside = [_HostInput("d1", ("datastore", "all"), {**BASE, "ssh_hostname": "10.30.0.5"})]
    err = [e for e in errors_of(_raises(hosts(1, 0) + outside)) if e.field == "address"]
    assert err and "node_network" in err[0].accepted


def _raises(inputs: list[_HostInput]) -> ModelError:
    with pytest.raises(ModelError) as info:
        build_cluster(inputs)
    return info.value


def test_tenants_with_a_datastore_are_parsed_and_the_same_everywhere() -> None:
    data = {"kubernetes": True, "tenants": {"globex": {}, "acme": {"profile": "small"}}}
    c = build_cluster(hosts(1, 1, common=data) + _datastore(1, data))
    assert [t.name for t in c.tenants] == ["acme", "globex"]
    err = _raises(hosts(1, 1, common={"kubernetes": True,
                                      "tenants": {"acme": {"profle": "small"}}}))
    assert any("did you mean 'profile'" in e.accepted for e in errors_of(err))
    differing = hosts(1, 1, common={"kubernetes": True},
                      per_host={"w1": {"tenants": {"acme": {}}}})
    assert any(e.field == "tenants" and e.host == "w1" for e in errors_of(_raises(differing)))
