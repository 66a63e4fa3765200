"""OCI archives written by metalseed: structure, determinism, an independent reader, the real mirror."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from metalseed.errors import MirrorError
from metalseed.mirror import default_root, load_manifest
from metalseed.mirror.build import busybox_layer, file_capability
from metalseed.mirror.oci import (
    MT_CONFIG,
    MT_LAYER,
    MT_MANIFEST,
    BlobStore,
    File,
    ImageConfig,
    Link,
    build_image,
    check_archive,
    layer_tar,
    read_archive_config,
    split_reference,
    write_archive,
)

CONFIG = ImageConfig(entrypoint=("/hello",), cmd=("--flag",), user="65535:65535")


def small_image(root: Path, payload: bytes = b"#!/bin/sh\necho hi\n") -> tuple[Path, str]:
    src = root.parent / f"{root.name}-hello"
    src.write_bytes(payload)
    store = BlobStore(root)
    layers = [
        [File("/hello", src=src, mode=0o755, xattrs=(("security.capability", file_capability(10)),))],
        [Link("/usr/bin/hello", "/hello"), File("/etc/motd", data=b"hi\n", mode=0o644)],
    ]
    image = build_image(store, "registry.k8s.io/test/hello:1.0", layers, CONFIG)
    out = root / "hello.oci.tar"
    write_archive(store, image, out)
    return out, image.manifest.digest


def test_small_image_is_structurally_sound(tmp_path: Path) -> None:
    archive, digest = small_image(tmp_path / "m")
    assert check_archive(archive) == []
    index, man, cfg = read_archive_config(archive)
    entry = index["manifests"][0]  # type: ignore[index]
    assert entry["digest"] == digest and entry["mediaType"] == MT_MANIFEST
    assert entry["annotations"]["io.containerd.image.name"] == "registry.k8s.io/test/hello:1.0"
    assert man["config"]["mediaType"] == MT_CONFIG  # type: ignore[index]
    assert [layer["mediaType"] for layer in man["layers"]] == [MT_LAYER, MT_LAYER]  # type: ignore[index, attr-defined]
    c = cfg["config"]
    assert c["Entrypoint"] == ["/hello"] and c["Cmd"] == ["--flag"] and c["User"] == "65535:65535"  # type: ignore[index]
    # diff_ids recomputed independently of check_archive: sha256 of the gunzipped layer blobs.
    with tarfile.open(archive) as tar:
        for layer, diff_id in zip(man["layers"], cfg["rootfs"]["diff_ids"], strict=True):  # type: ignore[index, call-overload]
            f = tar.extractfile("blobs/sha256/" + layer["digest"].split(":")[1])
            assert f is not None
            gz = f.read()
            assert "sha256:" + hashlib.sha256(gzip.decompress(gz)).hexdigest() == diff_id
            assert len(gz) == layer["size"]


def test_layer_contents_owners_modes_xattrs(tmp_path: Path) -> None:
    src = tmp_path / "x"
    src.write_bytes(b"data")
    tar_bytes = layer_tar(
        [File("/a/b/x", src=src, mode=0o755, xattrs=(("security.capability", b"\x01\x00\x00\x02"),))]
    )
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        names = tar.getnames()
        assert names == ["a", "a/b", "a/b/x"]  # parents first, added automatically
        x = tar.getmember("a/b/x")
        assert (x.uid, x.gid, x.mtime, x.mode) == (0, 0, 0, 0o755)
        raw = x.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape")
        assert raw == b"\x01\x00\x00\x02"


def test_rebuild_is_byte_identical(tmp_path: Path) -> None:
    a, da = small_image(tmp_path / "one")
    b, db = small_image(tmp_path / "two")
    assert da == db
    assert a.read_bytes() == b.read_bytes()
    _, dc = small_image(tmp_path / "three", payload=b"other")
    assert dc != da


def test_check_archive_catches_a_wrong_diff_id(tmp_path: Path) -> None:
    archive, _ = small_image(tmp_path / "m")
    index, man, cfg = read_archive_config(archive)
    cfg["rootfs"]["diff_ids"][0] = "sha256:" + "0" * 64  # type: ignore[index]
    cfg_bytes = json.dumps(cfg).encode()
    cfg_digest = hashlib.sha256(cfg_bytes).hexdigest()
    man["config"] = {"mediaType": MT_CONFIG, "digest": "sha256:" + cfg_digest, "size": len(cfg_bytes)}
    man_bytes = json.dumps(man).encode()
    index["manifests"][0]["digest"] = "sha256:" + hashlib.sha256(man_bytes).hexdigest()  # type: ignore[index]
    index["manifests"][0]["size"] = len(man_bytes)  # type: ignore[index]
    bad = tmp_path / "bad.oci.tar"
    with tarfile.open(archive) as src, tarfile.open(bad, "w") as dst:
        for m in src.getmembers():
            f = src.extractfile(m)
            dst.addfile(m, f)
        for name, data in (
            (f"blobs/sha256/{cfg_digest}", cfg_bytes),
            ("blobs/sha256/" + hashlib.sha256(man_bytes).hexdigest(), man_bytes),
            ("index.json", json.dumps(index).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    problems = check_archive(bad)
    assert any("diff_id" in p for p in problems), problems


def test_references() -> None:
    assert split_reference("docker.io/traefik:v3.6.12") == ("docker.io", "library/traefik", "v3.6.12")
    assert split_reference("registry.k8s.io/coredns/coredns:v1.14.7") == (
        "registry.k8s.io",
        "coredns/coredns",
        "v1.14.7",
    )
    with pytest.raises(MirrorError):
        split_reference("traefik:v3")


def test_file_capability_is_vfs_cap_v2() -> None:
    raw = file_capability(10)
    assert len(raw) == 20
    assert int.from_bytes(raw[:4], "little") == 0x02000001
    assert int.from_bytes(raw[4:8], "little") == 1 << 10


@pytest.mark.skipif(not Path("/bin/busybox").exists(), reason="busybox-static is not installed")
def test_busybox_layer_has_a_shell() -> None:
    entries = {e.dest: e for e in busybox_layer()}
    assert "/bin/busybox" in entries and isinstance(entries["/bin/sh"], Link)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed (Debian package skopeo)")
def test_skopeo_reads_our_archive(tmp_path: Path) -> None:
    archive, digest = small_image(tmp_path / "m")
    out = subprocess.run(
        ["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["Digest"] == digest
    assert doc["Architecture"] == "amd64" and doc["Os"] == "linux"
    assert len(doc["Layers"]) == 2
    raw = subprocess.run(
        ["skopeo", "inspect", "--config", f"oci-archive:{archive}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(raw.stdout)["config"]["Entrypoint"] == ["/hello"]


def _real_images() -> list[Path]:
    root = default_root()
    try:
        m = load_manifest(root)
    except MirrorError:
        return []
    return [root / a.path for a in m.images()]


REAL = _real_images()


@pytest.mark.skipif(
    not REAL, reason=f"no built mirror with images at {default_root()} (metalseed mirror build)"
)
@pytest.mark.parametrize("archive", REAL, ids=[p.name for p in REAL])
def test_real_mirror_archives_are_sound(archive: Path) -> None:
    assert check_archive(archive) == []
    m = load_manifest(default_root())
    art = next(a for a in m.images() if default_root() / a.path == archive)
    index, _, cfg = read_archive_config(archive)
    assert index["manifests"][0]["digest"] == art.digest  # type: ignore[index]
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == art.image  # type: ignore[index]
    assert cfg["config"].get("Entrypoint") or cfg["config"].get("Cmd")  # type: ignore[attr-defined]
    if shutil.which("skopeo"):
        out = subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["Digest"] == art.digest
