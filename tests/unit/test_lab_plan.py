"""Pure lab planning: names, subnets, addresses, MACs."""

from __future__ import annotations

import ipaddress

import pytest

from metalseed.errors import LabError
from metalseed.lab import plan as p


def test_subnet_is_a_stable_24_inside_the_pool() -> None:
    for name in ("lab", "test", "tdown", "a", "x" * 63):
        net = p.derive_subnet(name)
        assert net.prefixlen == 24
        assert net.subnet_of(p.SUBNET_POOL)
        assert p.derive_subnet(name) == net
    assert p.derive_subnet("lab") != p.derive_subnet("test"), "the default and the tests' labs"


def test_plan_lays_out_masters_workers_bridge_and_vip() -> None:
    plan = p.plan_lab("lab", 3, 2, ipaddress.IPv4Network("10.213.7.0/24"))
    assert [(m.name, m.role, str(m.address)) for m in plan.machines] == [
        ("m1", "master", "10.213.7.11"),
        ("m2", "master", "10.213.7.12"),
        ("m3", "master", "10.213.7.13"),
        ("w1", "worker", "10.213.7.21"),
        ("w2", "worker", "10.213.7.22"),
    ]
    assert str(plan.bridge_address) == "10.213.7.1"
    assert str(plan.vip) == "10.213.7.250"
    assert plan.vip not in {m.address for m in plan.machines}
    assert [m.name for m in plan.masters] == ["m1", "m2", "m3"]
    assert [m.name for m in plan.workers] == ["w1", "w2"]


def test_largest_lab_stays_below_the_vip() -> None:
    plan = p.plan_lab("lab", p.MAX_MASTERS, p.MAX_WORKERS)
    addrs = [m.address for m in plan.machines]
    assert len(set(addrs)) == len(addrs)
    assert max(addrs) < plan.vip
    assert all(a in plan.subnet for a in addrs)


@pytest.mark.parametrize(
    ("masters", "workers", "match"),
    [(0, 2, "masters"), (10, 0, "masters"), (3, -1, "workers"), (3, 30, "workers")],
)
def test_plan_rejects_bad_counts(masters: int, workers: int, match: str) -> None:
    with pytest.raises(LabError, match=match):
        p.plan_lab("lab", masters, workers)


@pytest.mark.parametrize("name", ["", "Lab", "-lab", "lab-", "a_b", "a" * 64, "lab.x"])
def test_lab_names_are_rfc1123_labels(name: str) -> None:
    with pytest.raises(LabError, match="RFC 1123"):
        p.check_lab_name(name)


@pytest.mark.parametrize("name", ["lab", "test", "a-very-long-lab-name-indeed", "x" * 63])
def test_interface_names_fit_ifnamsiz(name: str) -> None:
    plan = p.plan_lab(name, p.MAX_MASTERS, p.MAX_WORKERS)
    assert len(plan.bridge) <= p.IFNAMSIZ
    assert all(len(m.veth) <= p.IFNAMSIZ for m in plan.machines)


def test_short_names_are_readable_and_long_ones_cannot_collide_with_short_ones() -> None:
    assert p.bridge_name("lab") == "ms-lab-br"
    assert p.veth_name("lab", "m1") == "ms-lab-m1"
    assert p.netns_name("lab", "m1") == "ms-lab-m1"
    tag = p.ifname_tag("a-long-name")
    assert "_" in tag and len(tag) == 6
    assert p.ifname_tag("a-long-name") != p.ifname_tag("a-long-name2")


def test_patterns_match_only_their_own_lab() -> None:
    ns = p.netns_pattern("test")
    assert ns.match("ms-test-m1") and ns.match("ms-test-w12")
    assert not ns.match("ms-test-2-m1")
    assert not ns.match("ms-test-br")
    assert not ns.match("ms-tester-m1")
    veth = p.veth_pattern("test")
    assert veth.match("ms-test-w1")
    assert not veth.match(p.bridge_name("test"))


def test_macs_are_fixed_unicast_and_locally_administered() -> None:
    mac = p.mac_address("lab", "m1")
    assert mac == p.mac_address("lab", "m1")
    assert mac != p.mac_address("test", "m1")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01
    assert len(mac.split(":")) == 6


def test_machine_roles() -> None:
    assert p.machine_role("m3") == "master"
    assert p.machine_role("w12") == "worker"
    for bad in ("m0", "x1", "m", "master-1"):
        with pytest.raises(LabError):
            p.machine_role(bad)


@pytest.mark.parametrize(
    ("text", "match"),
    [("10.213.7.0/23", "/24"), ("10.213.7.5/24", "not valid"), ("8.8.8.0/24", "private")],
)
def test_parse_subnet_rejects(text: str, match: str) -> None:
    with pytest.raises(LabError, match=match):
        p.parse_subnet(text)


def test_hosts_file_lists_every_machine() -> None:
    plan = p.plan_lab("lab", 1, 1, ipaddress.IPv4Network("10.213.7.0/24"))
    text = p.hosts_file(plan.machines)
    assert "10.213.7.11\tm1\n" in text and "10.213.7.21\tw1\n" in text
    assert text.startswith("127.0.0.1\tlocalhost\n")


def test_overlaps() -> None:
    net = ipaddress.IPv4Network("10.213.7.0/24")
    assert p.overlaps(net, [ipaddress.IPv4Network("10.0.0.0/8")]) == ["10.0.0.0/8"]
    assert p.overlaps(net, [ipaddress.IPv4Network("192.0.2.0/24")]) == []
