"""The lab state file: round trip and clear errors."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from metalseed.errors import LabError
from metalseed.lab import plan as planmod
from metalseed.lab import state as st


def sample() -> st.LabState:
    p = planmod.plan_lab("lab", 3, 2, ipaddress.IPv4Network("10.213.7.0/24"))
    s = st.state_from_plan(p, Path("/var/lib/metalseed/lab/lab/id_ed25519"))
    m1 = s.machine("m1")
    return s.with_machine(st.MachineState(m1.name, m1.role, m1.address, m1.netns, m1.veth,
                                          1234, 1240))


def test_round_trip() -> None:
    s = sample()
    assert st.parse_state(st.dump_state(s)) == s
    assert s.machine("m1").nspawn_pid == 1234
    assert s.machine("m2").nspawn_pid is None
    assert [m.name for m in s.masters] == ["m1", "m2", "m3"]


def test_unknown_machine_names_the_known_ones() -> None:
    with pytest.raises(LabError, match="has no machine 'm9'; it has: m1, m2, m3, w1, w2"):
        sample().machine("m9")


def doc() -> dict:
    return json.loads(st.dump_state(sample()))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.pop("vip"), "missing field 'vip'"),
        (lambda d: d.update(version=99), "version"),
        (lambda d: d.update(name="Bad_Name"), "RFC 1123"),
        (lambda d: d["machines"][0].update(nspawn_pid=-3), r"machines\[0\].nspawn_pid"),
        (lambda d: d["machines"][0].update(nspawn_pid=True), r"machines\[0\].nspawn_pid"),
        (lambda d: d["machines"][0].update(role="worker"), r"machines\[0\].role"),
        (lambda d: d["machines"][1].update(address="10.213.7.300"), "10.213.7.300"),
        (lambda d: d["machines"][1].update(name="x1"), "x1"),
    ],
)
def test_bad_state_is_a_lab_error(mutate, match: str) -> None:
    d = doc()
    mutate(d)
    with pytest.raises(LabError, match=match):
        st.parse_state(json.dumps(d))


def test_not_json_and_not_an_object() -> None:
    with pytest.raises(LabError, match="not valid JSON"):
        st.parse_state("{")
    with pytest.raises(LabError, match="JSON object"):
        st.parse_state("[]")


def test_save_and_load(tmp_path: Path) -> None:
    paths = st.lab_paths("lab", tmp_path)
    assert st.load(paths) is None
    st.save(paths, sample())
    assert st.load(paths) == sample()
    assert not list(paths.root.glob("*.tmp"))


def test_base_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("METALSEED_LAB_DIR", str(tmp_path))
    assert st.lab_paths("x").root == tmp_path / "x"
    monkeypatch.delenv("METALSEED_LAB_DIR")
    assert st.lab_paths("x").root == Path("/var/lib/metalseed/lab/x")
