"""The build driver's pure parts: recipes cover the pins, go.mod generation, cache keys and reuse."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from metalseed.errors import MirrorError
from metalseed.mirror import load_pins
from metalseed.mirror.build import Builder
from metalseed.mirror.gomod import render_gomod, staging_modules, staging_version
from metalseed.mirror.manifest import Artifact, sha256_file
from metalseed.mirror.pins import repo_root
from metalseed.mirror.recipes import KUBE_NAMES, recipes

UPSTREAM = """module k8s.io/kubernetes

go 1.26.0

require (
	k8s.io/api v0.0.0
	k8s.io/client-go v0.0.0
)

replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/client-go => ./staging/src/k8s.io/client-go
)
"""


def test_every_pin_has_a_recipe_in_build_order() -> None:
    pins = load_pins()
    rs = recipes({p.name: p.version for p in pins.pins})
    assert [r.component for r in rs] == pins.names()
    order = [r.component for r in rs]
    # What the lab needs to run containers comes first.
    assert order[:5] == ["containerd", "runc", "cni-plugins", "crictl", "pause"]
    for r in rs:
        pin = pins.get(r.component)
        assert len(r.images) <= len(pin.images), r.component
        assert sorted(i.reference_index for i in r.images) == list(range(len(r.images)))
        if r.gomod:
            assert (repo_root() / "mirror" / "go" / r.gomod / "go.mod").is_file()
            assert (repo_root() / "mirror" / "go" / r.gomod / "go.sum").is_file()


def test_kubernetes_is_one_binary_with_every_name_and_version() -> None:
    pins = load_pins()
    kube = next(r for r in recipes({p.name: p.version for p in pins.pins}) if r.component == "kubernetes")
    assert {link for link, _ in kube.links} == set(KUBE_NAMES)
    xflags = dict(kube.builds[0].xflags)
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert xflags[f"{pkg}.gitVersion"] == pins.get("kubernetes").version
        assert {
            f"{pkg}.{k}" for k in ("gitMajor", "gitMinor", "gitCommit", "gitTreeState", "buildDate")
        } <= set(xflags)
    assert xflags["k8s.io/component-base/version.gitMinor"] == pins.get("kubernetes").version.split(".")[1]


def test_gomod_replaces_every_staging_module() -> None:
    assert staging_modules(UPSTREAM) == ["k8s.io/api", "k8s.io/client-go"]
    assert staging_version("v1.36.3") == "v0.36.3"
    text = render_gomod(UPSTREAM, "v1.36.3", "example.org/kube", "1.26.0")
    assert "require k8s.io/kubernetes v1.36.3" in text
    assert (
        "\tk8s.io/api => k8s.io/api v0.36.3" in text
        and "k8s.io/client-go => k8s.io/client-go v0.36.3" in text
    )
    with pytest.raises(MirrorError):
        staging_version("1.36")
    with pytest.raises(MirrorError):
        staging_modules("module x\n")


def test_committed_kubernetes_gomod_matches_the_pin() -> None:
    gomod = (repo_root() / "mirror" / "go" / "kubernetes" / "go.mod").read_text()
    version = load_pins().get("kubernetes").version
    assert f"k8s.io/kubernetes {version}" in gomod
    assert f"k8s.io/client-go => k8s.io/client-go {staging_version(version)}" in gomod


def _fake_source(tmp_path: Path) -> Path:
    src = tmp_path / "go"
    for r in recipes({p.name: p.version for p in load_pins().pins}):
        if r.gomod:
            (src / r.gomod).mkdir(parents=True, exist_ok=True)
            (src / r.gomod / "go.mod").write_text(f"module {r.gomod}\n")
    return src


def test_key_changes_with_recipe_files_only_for_that_component(tmp_path: Path) -> None:
    src = _fake_source(tmp_path)
    b = Builder(tmp_path / "root", source=src, log=io.StringIO())
    rs = {r.component: r for r in recipes({p.name: p.version for p in b.pins.pins})}
    before = {c: b.key(r, b.pins.get(c), "go1.26.8") for c, r in rs.items() if not r.images}
    (src / "crictl" / "go.mod").write_text("module crictl // changed\n")
    after = {c: b.key(rs[c], b.pins.get(c), "go1.26.8") for c in before}
    assert [c for c in before if before[c] != after[c]] == ["crictl"]
    assert b.key(rs["runc"], b.pins.get("runc"), "go1.27.0") != after["runc"]


def test_cached_artifacts_are_reused_only_when_key_and_sha_match(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "crictl").write_bytes(b"crictl")
    art = Artifact(
        name="crictl",
        version="v1",
        kind="binary",
        path="bin/crictl",
        sha256=sha256_file(root / "bin" / "crictl"),
        size=6,
        source="built",
        component="crictl",
    )
    b = Builder(root, source=_fake_source(tmp_path), log=io.StringIO())
    b.save_key("crictl", "k1", [art])
    assert json.loads((root / "keys" / "crictl.json").read_text())["artifacts"] == [asdict(art)]
    assert b.cached("crictl", "k1") == [art]
    assert b.cached("crictl", "k2") is None
    (root / "bin" / "crictl").write_bytes(b"tampered")
    assert b.cached("crictl", "k1") is None


def test_a_second_build_on_the_same_root_is_refused(tmp_path: Path) -> None:
    import fcntl

    root = tmp_path / "root"
    root.mkdir()
    with (root / ".lock").open("a+") as held:
        held.write("4242\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(MirrorError, match=r"another .* is running .*pid 4242"):
            Builder(root, source=_fake_source(tmp_path), log=io.StringIO()).build()
