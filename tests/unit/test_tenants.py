"""Pure parts of tenants on seeds: specs, profiles, datastore key ranges, placement."""

from __future__ import annotations

import random

import pytest

from metalseed.errors import ModelErrors, PlacementError
from metalseed.tenants.datastore import covers, prefix, range_end
from metalseed.tenants.placement import Seed, Tenant, load_report, place
from metalseed.tenants.profiles import PROFILES
from metalseed.tenants.quantity import cpu_millis, format_memory, memory_bytes
from metalseed.tenants.spec import parse_tenants

PINNED = ("v1.36.2", "v1.36.3")
GI = 2**30


def test_a_tenants_role_range_covers_its_prefix_only() -> None:
    assert prefix("acme") == b"/acme/"
    assert range_end(b"/acme/") == b"/acme0"
    acme = prefix("acme")
    assert covers(acme, b"/acme/registry/pods/default/x")
    assert covers(acme, b"/acme/")
    for other in (b"/acme2/registry/pods", b"/acme", b"/acmf/", b"/globex/x", b"/", b"/acme0"):
        assert not covers(acme, other), other
    # Kamaji's old range end "\0" (to the end of the keyspace) would have covered them all.
    assert range_end(b"a\xff\xff") == b"b" and range_end(b"\xff") == b"\0"


def test_tenant_specs_resolve_versions_and_defaults() -> None:
    specs = parse_tenants({"globex": None, "acme": {"profile": "medium",
                                                    "kubernetes_version": "1.36",
                                                    "labels": {"team": "payments"},
                                                    "workers": ["t1"]}},
                          PINNED, "v1.36.3", hosts=["m1", "t1"])
    assert [s.name for s in specs] == ["acme", "globex"]
    acme, globex = specs
    assert (acme.profile, acme.kubernetes_version, acme.workers) == ("medium", "v1.36.3", ("t1",))
    assert acme.labels == (("team", "payments"),) and acme.namespace == "tenant-acme"
    assert (globex.profile, globex.kubernetes_version) == ("small", "v1.36.3")
    assert parse_tenants({"a": {"kubernetes_version": "v1.36.2"}}, PINNED, "v1.36.3")[0] \
        .kubernetes_version == "v1.36.2"


def test_bad_tenant_specs_are_refused_all_at_once_with_what_is_accepted() -> None:
    with pytest.raises(ModelErrors) as e:
        parse_tenants({"Acme": {}, "x" * 60: {}, "ok": {"profil": "small", "profile": "smal",
                                                        "kubernetes_version": "1.35",
                                                        "workers": ["nope"]},
                       "two": {"workers": ["t1"]}, "three": {"workers": ["t1"]}},
                      PINNED, "v1.36.3", hosts=["t1"])
    text = str(e.value)
    assert "tenants: found 'Acme'" in text and "RFC 1123" in text
    assert "at most 56 characters" in text
    assert "tenants['ok'].profil" in text and "did you mean 'profile'?" in text
    assert "tenants['ok'].profile: found 'smal'" in text and "did you mean 'small'?" in text
    assert "v1.36.2, v1.36.3" in text
    assert "tenants['ok'].workers: found 'nope'" in text
    assert "it is a worker of 'two'" in text
    assert len(e.value.errors) == 7


def test_quantities() -> None:
    assert cpu_millis("500m") == 500 and cpu_millis(2) == 2000 and cpu_millis("1.5") == 1500
    assert memory_bytes("64Gi") == 64 * GI and memory_bytes("1G") == 10**9
    assert format_memory(3 * GI) == "3Gi"
    for bad in ("", "-1", "2x", True, "0"):
        with pytest.raises(ValueError):
            cpu_millis(bad)


def _fleet(n: int, cpu: str = "16", mem: str = "64Gi") -> list[Seed]:
    return [Seed(f"seed-{i:03d}", cpu_millis(cpu), memory_bytes(mem)) for i in range(n)]


def test_placement_spreads_to_the_least_loaded_and_never_moves_a_placed_tenant() -> None:
    seeds = _fleet(3)
    tenants = [Tenant("old", "large", seed="seed-002")] + [
        Tenant(f"t{i}", "small") for i in range(6)]
    got = place(seeds, tenants)
    assert got["old"] == "seed-002"
    counts = {s.name: sum(1 for v in got.values() if v == s.name) for s in seeds}
    # seed-002 already carries a large tenant: the six small ones go to the other two first.
    assert counts["seed-000"] == counts["seed-001"] == 3, got
    assert place(seeds, tenants) == got  # deterministic
    # Placing again with the result as input changes nothing.
    again = [Tenant(t.name, t.profile, got[t.name]) for t in tenants]
    assert place(seeds, again) == got


def test_placement_keeps_the_headroom_and_says_what_a_new_seed_needs() -> None:
    cpu, mem = PROFILES["large"].requests
    # Room for exactly two large tenants within 80 % of one seed.
    seed = Seed("only", int(cpu * 2 / 0.8), int(mem * 2 / 0.8) + 1)
    assert set(place([seed], [Tenant("a", "large"), Tenant("b", "large")]).values()) == {"only"}
    with pytest.raises(PlacementError) as e:
        place([seed], [Tenant(n, "large") for n in "abc"])
    text = str(e.value)
    assert "1 tenant(s) fit on no seed with 20% headroom: c (large)" in text
    assert "A new seed must offer at least" in text
    with pytest.raises(PlacementError, match=r"2 tenant\(s\) fit on no seed with 50% headroom: "
                       r"b \(large\), c \(large\)"):
        place([seed], [Tenant(n, "large") for n in "abc"], headroom=0.5)
    with pytest.raises(PlacementError, match="not in the fleet"):
        place([seed], [Tenant("a", "small", seed="gone")])


def test_placement_of_many_tenants_stays_within_every_seed() -> None:
    rng = random.Random(7)
    seeds = [Seed(f"s{i}", cpu_millis(rng.choice(["8", "16", "32"])),
                  memory_bytes(rng.choice(["32Gi", "64Gi", "128Gi"]))) for i in range(20)]
    tenants = [Tenant(f"t{i}", rng.choice(list(PROFILES))) for i in range(80)]
    got = place(seeds, tenants)
    assert len(got) == 80
    for name, _n, cpu_share, mem_share in load_report(seeds, got,
                                                      {t.name: t.profile for t in tenants}):
        assert cpu_share <= 0.8 + 1e-9 and mem_share <= 0.8 + 1e-9, name


FLEET = """
headroom = 0.2
[seeds.seed-a]
inventory = "inventory/seed-a.py"
cpu = "8"
memory = "32Gi"
[seeds.seed-b]
inventory = "inventory/seed-b.py"
cpu = "8"
memory = "32Gi"
[tenants.acme]
profile = "small"
[tenants.globex]
profile = "medium"
"""


def test_tenants_place_writes_the_placement_and_never_moves_a_tenant(tmp_path, capsys) -> None:
    from metalseed.cli import main
    from metalseed.tenants.fleet import load_fleet, read_placement, seed_tenants

    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET)
    assert main(["tenants", "place", str(fleet)]) == 0
    first = read_placement(load_fleet(fleet))
    assert set(first) == {"acme", "globex"} and set(first.values()) == {"seed-a", "seed-b"}
    assert "(new)" in capsys.readouterr().out
    # A new tenant is placed; the others stay where they are, even if the capacity changed.
    fleet.write_text(FLEET.replace('cpu = "8"', 'cpu = "64"', 1) + '[tenants.initech]\n')
    assert main(["tenants", "place", str(fleet)]) == 0
    second = read_placement(load_fleet(fleet))
    assert {k: second[k] for k in first} == first and "initech" in second
    on_a = seed_tenants(fleet, "seed-a")
    assert set(on_a) == {t for t, s in second.items() if s == "seed-a"}
    assert main(["tenants", "place", "--dry", str(fleet)]) == 0


def test_a_bad_fleet_file_is_refused_with_a_suggestion(tmp_path, capsys) -> None:
    from metalseed.cli import main

    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET.replace("memory =", "memroy =", 1))
    assert main(["tenants", "place", str(fleet)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'memroy'" in err and "did you mean 'memory'?" in err
    assert not (tmp_path / "fleet.placement.toml").exists()
