"""Pins and manifest: parse, validate, round-trip, verify (pure, no Go)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metalseed.errors import MetalseedError, MirrorError
from metalseed.mirror import Artifact, Manifest, default_root, load_manifest, load_pins, verify
from metalseed.mirror.manifest import sha256_file, write_manifest
from metalseed.mirror.pins import parse_pins

PIN = """
schema = 1
[[pin]]
name = "crictl"
version = "v1.37.0"
module = "sigs.k8s.io/cri-tools"
module_version = "v1.37.0"
upstream_url = "https://example.invalid/crictl.tgz"
upstream_sha256 = "{sha}"
"""


def test_repository_pins_are_valid_and_complete() -> None:
    pins = load_pins()
    expected = {
        "containerd",
        "runc",
        "cni-plugins",
        "crictl",
        "pause",
        "etcd",
        "kubernetes",
        "flannel",
        "flannel-cni-plugin",
        "coredns",
        "agnhost",
        "traefik",
    }
    assert expected <= set(pins.names())
    assert pins.get("kubernetes").version.startswith(("v1.36.", "v1.37."))
    assert pins.get("etcd").version.startswith("v3.6.")
    assert pins.get("containerd").version.startswith("v2.2.")
    assert pins.get("traefik").version >= "v3.6"
    for pin in pins.pins:
        assert pin.upstream_sha256_known or pin.upstream_sha256.startswith("unknown: ")
    assert "registry.k8s.io/kube-apiserver:" + pins.get("kubernetes").version in pins.get("kubernetes").images


def test_pin_sha256_must_be_real_or_say_unknown() -> None:
    good = parse_pins(PIN.format(sha="sha256:" + "a" * 64), Path("p.toml"))
    assert good.get("crictl").upstream_sha256_known
    unknown = parse_pins(PIN.format(sha="unknown: not published"), Path("p.toml"))
    assert not unknown.pins[0].upstream_sha256_known
    with pytest.raises(MirrorError, match="upstream_sha256"):
        parse_pins(PIN.format(sha="abc"), Path("p.toml"))


def test_pin_errors_name_the_pin_and_field() -> None:
    with pytest.raises(MirrorError, match=r"crictl.*module_version"):
        parse_pins(PIN.format(sha="unknown: x").replace('module_version = "v1.37.0"\n', ""), Path("p"))
    with pytest.raises(MirrorError, match="more than once"):
        parse_pins(PIN.format(sha="unknown: x") + PIN.split("\n", 2)[2].format(sha="unknown: y"), Path("p"))
    with pytest.raises(MirrorError, match="no pin named"):
        parse_pins(PIN.format(sha="unknown: x"), Path("p")).get("nope")
    assert issubclass(MirrorError, MetalseedError)


def _artifact(tmp: Path, name: str, data: bytes) -> Artifact:
    (tmp / "bin").mkdir(exist_ok=True)
    f = tmp / "bin" / name
    f.write_bytes(data)
    return Artifact(
        name=name,
        version="v1",
        kind="binary",
        path=f"bin/{name}",
        sha256=sha256_file(f),
        size=len(data),
        source="built",
        component=name,
    )


def test_manifest_round_trip_and_verify(tmp_path: Path) -> None:
    m = Manifest([_artifact(tmp_path, "a", b"hello"), _artifact(tmp_path, "b", b"world")])
    write_manifest(tmp_path, m)
    back = load_manifest(tmp_path)
    assert back == m
    assert back.get("b").size == 5 and back.get("a").image is None
    assert json.loads((tmp_path / "manifest.json").read_text())["schema"] == 1
    assert verify(tmp_path, back) == []
    (tmp_path / "bin" / "b").write_bytes(b"tampered")
    problems = verify(tmp_path, back)
    assert len(problems) == 1
    msg = str(problems[0])
    assert "bin/b" in msg and back.get("b").sha256 in msg and sha256_file(tmp_path / "bin" / "b") in msg


def test_manifest_replace_component_keeps_others(tmp_path: Path) -> None:
    m = Manifest([_artifact(tmp_path, "a", b"1"), _artifact(tmp_path, "b", b"2")])
    m.replace_component("a", [_artifact(tmp_path, "a", b"3")])
    assert m.names() == ["a", "b"] and m.get("a").size == 1  # in place: readers see one order
    m.replace_component("c", [_artifact(tmp_path, "c", b"4")])
    assert m.names() == ["a", "b", "c"]


def test_missing_manifest_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(MirrorError, match="mirror build"):
        load_manifest(tmp_path)


def test_default_root_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("METALSEED_MIRROR", raising=False)
    assert str(default_root()) == "/var/cache/metalseed/mirror"
    monkeypatch.setenv("METALSEED_MIRROR", str(tmp_path))
    assert default_root() == tmp_path
