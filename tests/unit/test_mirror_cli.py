"""``metalseed mirror show`` and ``verify`` on a small mirror (no Go)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalseed.cli import main
from metalseed.mirror.manifest import Artifact, Manifest, sha256_file, write_manifest


def _mirror(root: Path) -> Manifest:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "kube").write_bytes(b"multi-call")
    (root / "bin" / "kubelet").symlink_to("kube")
    m = Manifest(
        [
            Artifact(
                name=n,
                version="v1.36.3",
                kind="binary",
                path=f"bin/{n}",
                size=10,
                source="built",
                sha256=sha256_file(root / "bin" / "kube"),
                component="kubernetes",
            )
            for n in ("kube", "kubelet")
        ]
    )
    write_manifest(root, m)
    return m


def test_show_prints_every_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _mirror(tmp_path)
    assert main(["mirror", "show", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "kubelet" in out and "v1.36.3" in out and "bin/kube" in out and "2 artifacts" in out


def test_verify_exits_1_naming_file_and_digests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = _mirror(tmp_path)
    assert main(["mirror", "verify", "--root", str(tmp_path)]) == 0
    (tmp_path / "bin" / "kube").write_bytes(b"tampered")
    assert main(["mirror", "verify", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "bin/kube" in err and "bin/kubelet" in err
    assert m.get("kube").sha256 in err and sha256_file(tmp_path / "bin" / "kube") in err


def test_env_sets_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _mirror(tmp_path)
    monkeypatch.setenv("METALSEED_MIRROR", str(tmp_path))
    assert main(["mirror", "verify"]) == 0


def test_missing_mirror_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    assert main(["mirror", "show", "--root", str(tmp_path / "none")]) == 2
