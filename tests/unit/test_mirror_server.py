"""The mirror's HTTP server over loopback: files, and the registry API containerd uses (with ?ns=)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalseed.errors import MirrorError
from metalseed.mirror.manifest import Artifact, Manifest, sha256_file, write_manifest
from metalseed.mirror.oci import BlobStore, File, ImageConfig, build_image, write_archive
from metalseed.mirror.server import MirrorServer, parse_listen, start


def _image(root: Path, store: BlobStore, ref: str, payload: bytes, name: str) -> Artifact:
    image = build_image(store, ref, [[File("/x", data=payload)]], ImageConfig(entrypoint=("/x",)))
    (root / "images").mkdir(exist_ok=True)
    rel = f"images/{name}.oci.tar"
    write_archive(store, image, root / rel)
    return Artifact(
        name=name,
        version="1",
        kind="image",
        path=rel,
        sha256=sha256_file(root / rel),
        size=(root / rel).stat().st_size,
        source="built",
        image=ref,
        digest=image.manifest.digest,
        component=name,
    )


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Manifest, Path]]:
    root = tmp_path / "mirror"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"binary")
    (root / "secret").write_bytes(b"not listed")
    store = BlobStore(root)
    m = Manifest(
        [
            Artifact(
                name="tool",
                version="1",
                kind="binary",
                path="bin/tool",
                sha256=sha256_file(root / "bin/tool"),
                size=6,
                source="built",
                component="tool",
            ),
            _image(root, store, "registry.k8s.io/pause:3.10.2", b"k8s pause", "pause-k8s"),
            # Same repository path and tag on another registry: only ?ns= tells them apart.
            _image(root, store, "docker.io/library/pause:3.10.2", b"docker pause", "pause-docker"),
            _image(root, store, "docker.io/traefik:v3.6.12", b"traefik", "traefik"),
        ]
    )
    write_manifest(root, m)
    server, thread = start(root, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.server_port}", m, root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_files_and_manifest(mirror: tuple[str, Manifest, Path]) -> None:
    base, m, _ = mirror
    status, _, body = get(base + "/manifest.json")
    assert status == 200 and json.loads(body)["artifacts"][0]["name"] == "tool"
    status, headers, body = get(base + "/files/bin/tool")
    assert status == 200 and body == b"binary" and headers["Content-Length"] == "6"
    art = m.get("traefik")
    status, _, body = get(base + "/files/" + art.path)
    assert status == 200 and hashlib.sha256(body).hexdigest() == art.sha256
    for path in ("/files/secret", "/files/../secret", "/files/bin/../secret", "/secret", "/files/keys/x"):
        assert get(base + path)[0] == 404, path


def test_registry_serves_manifests_and_blobs_by_digest(mirror: tuple[str, Manifest, Path]) -> None:
    base, m, _ = mirror
    status, headers, _ = get(base + "/v2/")
    assert status == 200 and headers["Docker-Distribution-API-Version"] == "registry/2.0"
    art = m.get("pause-k8s")
    status, headers, body = get(base + "/v2/pause/manifests/3.10.2?ns=registry.k8s.io")
    assert status == 200
    assert headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
    assert headers["Docker-Content-Digest"] == art.digest
    assert "sha256:" + hashlib.sha256(body).hexdigest() == art.digest
    assert int(headers["Content-Length"]) == len(body)
    manifest = json.loads(body)
    for desc in [manifest["config"], *manifest["layers"]]:
        status, headers, blob = get(f"{base}/v2/pause/blobs/{desc['digest']}?ns=registry.k8s.io")
        assert status == 200 and len(blob) == desc["size"] == int(headers["Content-Length"])
        assert (
            "sha256:" + hashlib.sha256(blob).hexdigest() == desc["digest"] == headers["Docker-Content-Digest"]
        )
    status, headers, body = get(base + f"/v2/pause/manifests/{art.digest}?ns=registry.k8s.io", method="HEAD")
    assert status == 200 and body == b"" and headers["Docker-Content-Digest"] == art.digest


def test_ns_picks_the_registry(mirror: tuple[str, Manifest, Path]) -> None:
    base, m, _ = mirror
    k8s = get(base + "/v2/pause/manifests/3.10.2?ns=registry.k8s.io")[1]["Docker-Content-Digest"]
    docker = get(base + "/v2/library/pause/manifests/3.10.2?ns=docker.io")[1]["Docker-Content-Digest"]
    assert k8s == m.get("pause-k8s").digest and docker == m.get("pause-docker").digest and k8s != docker
    # docker.io's official images are asked for as library/<name>; the repo path alone is the fallback.
    assert get(base + "/v2/library/traefik/manifests/v3.6.12?ns=docker.io")[0] == 200
    assert get(base + "/v2/library/traefik/manifests/v3.6.12")[0] == 200


def test_registry_refuses_what_it_does_not_hold(mirror: tuple[str, Manifest, Path]) -> None:
    base, m, _ = mirror
    status, _, body = get(base + "/v2/nope/manifests/1?ns=registry.k8s.io")
    assert status == 404 and json.loads(body)["errors"][0]["code"] == "NAME_UNKNOWN"
    assert json.loads(get(base + "/v2/pause/manifests/9.9?ns=registry.k8s.io")[2])["errors"][0]["code"] == (
        "MANIFEST_UNKNOWN"
    )
    # A blob of another repository is not served through this one.
    traefik_digest = m.get("traefik").digest
    assert get(f"{base}/v2/pause/blobs/{traefik_digest}?ns=registry.k8s.io")[0] == 404
    assert get(f"{base}/v2/pause/blobs/sha256:{'0' * 64}?ns=registry.k8s.io")[0] == 404


def test_manifest_changes_are_picked_up(mirror: tuple[str, Manifest, Path]) -> None:
    base, m, root = mirror
    (root / "bin" / "new").write_bytes(b"new")
    m.artifacts.append(
        Artifact(
            name="new",
            version="1",
            kind="binary",
            path="bin/new",
            sha256=sha256_file(root / "bin/new"),
            size=3,
            source="built",
        )
    )
    write_manifest(root, m)
    assert get(base + "/files/bin/new")[2] == b"new"


def test_listen_and_missing_manifest(tmp_path: Path) -> None:
    assert parse_listen("10.0.0.1:5000") == ("10.0.0.1", 5000)
    for bad in ("5000", "host:", ":5000", "h:99999"):
        with pytest.raises(MirrorError):
            parse_listen(bad)
    with pytest.raises(MirrorError, match="mirror build"):
        start(tmp_path, "127.0.0.1", 0)
    assert MirrorServer.daemon_threads


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed (Debian package skopeo)")
def test_skopeo_pulls_through_the_registry(mirror: tuple[str, Manifest, Path], tmp_path: Path) -> None:
    """An independent registry client copies an image out and checks every digest on the way."""
    base, m, _ = mirror
    host = base.removeprefix("http://")
    out = subprocess.run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            f"docker://{host}/library/traefik:v3.6.12",
            f"oci:{tmp_path / 'copy'}:v3.6.12",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    index = json.loads((tmp_path / "copy" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == m.get("traefik").digest
