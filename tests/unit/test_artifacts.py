"""The artifact step: which downloads a component needs, and the host commands, run for real in a
shell on file:// URLs (download, check, install, stamp; a mismatch installs nothing)."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from metalseed.deploys import artifacts as art
from metalseed.errors import ArtifactError
from metalseed.model import build_cluster

from .test_model import hosts


def sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True)


def temp_dirs() -> set[str]:
    return set(glob.glob("/var/tmp/metalseed-artifact.*"))


def converge(downloads: tuple[art.Download, ...]) -> list[str]:
    """What the operation would run now: the check, then the plan (each step run here)."""
    current = art.parse_check(sh(art.check_command(downloads)).stdout.splitlines())
    steps = art.plan(downloads, current)
    for step in steps:
        proc = sh(step)
        assert proc.returncode == 0, proc.stderr
    return steps


@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, str]:
    f = tmp_path / "srv" / "runc.amd64"
    f.parent.mkdir()
    f.write_bytes(b"#!/bin/sh\necho runc 1.3.7\n")
    return f, hashlib.sha256(f.read_bytes()).hexdigest()


def one(tmp_path: Path, f: Path, sha: str) -> art.Download:
    return art.Download(name="runc", url=f.as_uri(), sha256=sha, dest_dir=str(tmp_path / "sbin"),
                        filename="runc", stamp_dir=str(tmp_path / "stamps"))


def test_a_file_is_installed_once_and_then_costs_nothing(tmp_path: Path, blob) -> None:
    d = one(tmp_path, *blob)
    before = temp_dirs()
    assert len(converge((d,))) == 1
    installed = tmp_path / "sbin" / "runc"
    assert installed.read_bytes() == blob[0].read_bytes()
    assert installed.stat().st_mode & 0o777 == 0o755
    assert converge((d,)) == [], "a converged host downloads nothing"
    assert temp_dirs() == before
    installed.write_bytes(b"tampered")
    assert len(converge((d,))) == 1, "a changed installed file is replaced"
    assert installed.read_bytes() == blob[0].read_bytes()


def test_a_wrong_sha256_installs_nothing_and_says_what_was_expected(tmp_path: Path, blob) -> None:
    f, sha = blob
    wrong = "0" * 64
    d = one(tmp_path, f, wrong)
    before = temp_dirs()
    proc = sh(art.install_command(d))
    assert proc.returncode == 1
    assert f"sha256 mismatch for runc ({f.as_uri()}): expected sha256:{wrong}, actual sha256:{sha}" \
        in proc.stderr
    assert "nothing installed" in proc.stderr
    assert not (tmp_path / "sbin" / "runc").exists()
    assert not Path(d.stamp).exists()
    assert temp_dirs() == before, "the temporary download is removed"


def test_an_archive_installs_its_files_by_base_name(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name in ("bin/containerd", "bin/ctr"):
            data = f"{name}\n".encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o700
            t.addfile(info, io.BytesIO(data))
    tgz = tmp_path / "containerd.tar.gz"
    tgz.write_bytes(buf.getvalue())
    d = art.Download(name="containerd", url=tgz.as_uri(),
                     sha256=hashlib.sha256(buf.getvalue()).hexdigest(),
                     dest_dir=str(tmp_path / "bin"), archive=True,
                     stamp_dir=str(tmp_path / "stamps"))
    assert len(converge((d,))) == 1
    assert (tmp_path / "bin" / "ctr").read_text() == "bin/ctr\n"
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["containerd", "ctr"]
    assert converge((d,)) == []
    (tmp_path / "bin" / "ctr").unlink()
    assert len(converge((d,))) == 1, "a missing file of an archive brings the archive back"


def test_a_running_unit_is_restarted_only_after_a_change(tmp_path: Path, blob) -> None:
    d = one(tmp_path, *blob)
    steps = art.plan((d,), {}, restart=("containerd.service",))
    assert steps[-1] == ("if systemctl -q is-active containerd.service; "
                         "then systemctl restart containerd.service; fi")
    assert art.plan((d,), {d.stamp: d.sha256}, restart=("containerd.service",)) == []


def test_bad_digests_are_refused_at_once() -> None:
    with pytest.raises(ArtifactError, match="not 64 lowercase hex"):
        art.Download(name="x", url="http://m/x", sha256="sha256:abc", dest_dir="/d", filename="x")


# ---- where downloads come from (operator side) ----------------------------------------------


def write_manifest(root: Path, artifacts: list[dict]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({"schema": 1, "artifacts": artifacts}))


def artifact(name: str, component: str, sha: str = "a" * 64) -> dict:
    return {"name": name, "version": "v2.2.9", "kind": "binary", "path": f"bin/{name}",
            "sha256": sha, "size": 1, "source": "built", "image": None, "digest": None,
            "component": component}


def test_with_a_mirror_every_binary_of_the_component_comes_from_it(tmp_path: Path) -> None:
    write_manifest(tmp_path, [artifact("containerd", "containerd", "b" * 64),
                              artifact("containerd-shim-runc-v2", "containerd"),
                              artifact("runc", "runc")])
    c = build_cluster(hosts(common={"mirror_url": "http://10.20.0.1:5080",
                                    "mirror_dir": str(tmp_path)}))
    ds = art.component_downloads(c, "containerd", "/usr/local/bin")
    assert [(d.url, d.sha256, d.dests) for d in ds] == [
        ("http://10.20.0.1:5080/files/bin/containerd", "b" * 64, ("/usr/local/bin/containerd",)),
        ("http://10.20.0.1:5080/files/bin/containerd-shim-runc-v2", "a" * 64,
         ("/usr/local/bin/containerd-shim-runc-v2",)),
    ]
    with pytest.raises(ArtifactError, match="has no binary of 'crictl'; it has: containerd"):
        art.component_downloads(c, "crictl", "/usr/local/bin")


def test_with_a_mirror_but_no_manifest_nothing_is_downloaded(tmp_path: Path) -> None:
    c = build_cluster(hosts(common={"mirror_url": "http://10.20.0.1:5080",
                                    "mirror_dir": str(tmp_path / "none")}))
    with pytest.raises(ArtifactError, match="manifest to check downloads against cannot be read"):
        art.component_downloads(c, "containerd", "/usr/local/bin")


def test_without_a_mirror_the_pinned_upstream_release_is_used() -> None:
    from metalseed.mirror import load_pins

    c = build_cluster(hosts())
    pins = load_pins().pins
    known = next(p for p in pins if p.upstream_sha256_known and p.upstream_url.endswith(".tgz"))
    (d,) = art.component_downloads(c, known.name, "/opt/cni/bin")
    assert d.archive and d.url == known.upstream_url
    assert d.sha256 == known.upstream_sha256.removeprefix("sha256:")
    # A pin without a known upstream sha256 cannot be checked, so it is not downloaded at all.
    unknown = next(p for p in pins if not p.upstream_sha256_known)
    with pytest.raises(ArtifactError, match=f"{unknown.name} {unknown.version}: no upstream sha256"):
        art.component_downloads(c, unknown.name, "/usr/local/bin")


def test_the_check_is_one_command_for_every_download(tmp_path: Path, blob) -> None:
    d = one(tmp_path, *blob)
    other = dataclasses.replace(d, name="crictl", filename="crictl")
    command = art.check_command((d, other))
    assert command.count("xargs -r stat") == 2 and "\n" not in command
