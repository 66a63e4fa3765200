"""Serving the mirror: plain files and a read-only OCI distribution registry, over one HTTP port.

``GET /manifest.json`` and ``GET /files/<path>`` for every path in the manifest (nothing else on the
disk is reachable), and under ``/v2/`` the pull half of the OCI distribution API, so containerd can
use the host as the mirror of registry.k8s.io and docker.io through ``hosts.toml``. containerd adds
``?ns=<upstream host>`` to mirror requests; it picks the image, with the repository path alone as
the fallback. The manifest is re-read when it changes, so a server started beside a running build
serves each component as soon as it lands.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from socket import socket
from types import FrameType
from urllib.parse import parse_qs, unquote, urlsplit

from metalseed.errors import MirrorError
from metalseed.mirror.manifest import MANIFEST, Artifact, load_manifest
from metalseed.mirror.oci import MT_MANIFEST, BlobStore, split_reference

WORKERS = 16  # concurrent connections; further ones wait in the listen backlog
IDLE_TIMEOUT = 60.0
CHUNK = 1 << 20


@dataclass
class Repo:
    tags: dict[str, str] = field(default_factory=dict)  # tag -> manifest digest
    blobs: set[str] = field(default_factory=set)  # every digest this repository may serve


class Index:
    """What the manifest makes servable; rebuilt whenever manifest.json changes on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = BlobStore(root, create=False)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self.files: dict[str, Artifact] = {}
        self.repos: dict[tuple[str, str], Repo] = {}

    def refresh(self) -> None:
        path = self.root / MANIFEST
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_ino)
        with self._lock:
            if stamp == self._stamp:
                return
            manifest = load_manifest(self.root)
            files = {a.path: a for a in manifest.artifacts}
            repos: dict[tuple[str, str], Repo] = {}
            for a in manifest.images():
                if not (a.image and a.digest):
                    continue
                host, repo, tag = split_reference(a.image)
                r = repos.setdefault((host, repo), Repo())
                r.tags[tag] = a.digest
                r.blobs.add(a.digest)
                doc = json.loads(self.store.path(a.digest).read_bytes())
                r.blobs.add(doc["config"]["digest"])
                r.blobs.update(layer["digest"] for layer in doc["layers"])
            self.files, self.repos, self._stamp = files, repos, stamp

    def repo(self, name: str, ns: str | None) -> Repo | None:
        if ns and (ns, name) in self.repos:
            return self.repos[(ns, name)]
        if ns == "docker.io" and (ns, "library/" + name) in self.repos:
            return self.repos[(ns, "library/" + name)]
        matches = [r for (_, repo), r in self.repos.items() if repo == name]
        return matches[0] if matches else None


class Handler(BaseHTTPRequestHandler):
    server: MirrorServer
    protocol_version = "HTTP/1.1"  # keep-alive: containerd pulls many blobs over one connection
    timeout = IDLE_TIMEOUT

    def do_GET(self) -> None:
        self._route(body=True)

    def do_HEAD(self) -> None:
        self._route(body=False)

    def _route(self, body: bool) -> None:
        index = self.server.index
        try:
            index.refresh()
        except (MirrorError, OSError, ValueError, KeyError) as e:
            self._error(503, "UNAVAILABLE", f"mirror manifest unreadable: {e}", body)
            return
        url = urlsplit(self.path)
        path = unquote(url.path)
        if path == "/" + MANIFEST:
            self._file(index.root / MANIFEST, "application/json", body)
        elif path.startswith("/files/"):
            art = index.files.get(path.removeprefix("/files/"))
            if art is None:
                self._error(404, "NOT_FOUND", f"{path}: not in the mirror manifest", body)
            else:
                self._file(index.root / art.path, "application/octet-stream", body, art.sha256)
        elif path in ("/v2", "/v2/"):
            self._send(200, "application/json", b"{}", body)
        elif path.startswith("/v2/"):
            self._registry(path.removeprefix("/v2/"), parse_qs(url.query).get("ns", [None])[0], body)
        else:
            self._error(404, "NOT_FOUND", f"{path}: not served here", body)

    def _registry(self, rest: str, ns: str | None, body: bool) -> None:
        for kind in ("/manifests/", "/blobs/"):
            name, sep, ref = rest.rpartition(kind)
            if sep and name and ref:
                break
        else:
            self._error(404, "NAME_UNKNOWN", f"/v2/{rest}: not a manifest or blob path", body)
            return
        repo = self.server.index.repo(name, ns)
        if repo is None:
            self._error(404, "NAME_UNKNOWN", f"repository {name!r} (ns={ns}) is not in the mirror", body)
            return
        digest = ref if ref.startswith("sha256:") else repo.tags.get(ref)
        if digest is None or digest not in repo.blobs:
            code = "MANIFEST_UNKNOWN" if kind == "/manifests/" else "BLOB_UNKNOWN"
            self._error(404, code, f"{name}: {ref} is not in the mirror", body)
            return
        media = MT_MANIFEST if kind == "/manifests/" else "application/octet-stream"
        self._file(self.server.index.store.path(digest), media, body, digest.removeprefix("sha256:"))

    def _file(self, path: Path, media: str, body: bool, sha256: str | None = None) -> None:
        try:
            f = path.open("rb")
        except OSError:
            self._error(404, "NOT_FOUND", f"{path.name}: listed but missing on disk", body)
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(size))
            if sha256:
                self.send_header("Docker-Content-Digest", "sha256:" + sha256)
                self.send_header("ETag", f'"sha256:{sha256}"')
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.end_headers()
            if body:
                while chunk := f.read(CHUNK):
                    self.wfile.write(chunk)

    def _send(self, status: int, media: str, data: bytes, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, code: str, message: str, body: bool) -> None:
        doc = {"errors": [{"code": code, "message": message}]}
        self._send(status, "application/json", json.dumps(doc).encode(), body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"mirror serve: {self.address_string()} {format % args}\n")


class MirrorServer(HTTPServer):
    """An HTTP server with a bounded pool of worker threads (not a thread per connection)."""

    daemon_threads = True

    def __init__(self, root: Path, host: str, port: int, workers: int = WORKERS) -> None:
        self.index = Index(root)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mirror")
        super().__init__((host, port), Handler)

    def process_request(self, request: socket, client_address: object) -> None:  # type: ignore[override]
        self.pool.submit(self._work, request, client_address)

    def _work(self, request: socket, client_address: object) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MirrorError(f"--listen: found {listen!r}; accepted: ADDR:PORT, e.g. 10.0.0.1:5000")
    return host, int(port)


def start(root: Path, host: str, port: int) -> tuple[MirrorServer, threading.Thread]:
    """A server running in a background thread (tests, embedding); stop with ``.shutdown()``."""
    server = make_server(root, host, port)
    thread = threading.Thread(target=server.serve_forever, name="mirror-serve", daemon=True)
    thread.start()
    return server, thread


def make_server(root: Path, host: str, port: int) -> MirrorServer:
    if not (root / MANIFEST).exists():
        raise MirrorError(f"{root}: no {MANIFEST}; run `metalseed mirror build` first")
    try:
        server = MirrorServer(root, host, port)
    except OSError as e:
        raise MirrorError(f"cannot listen on {host}:{port}: {e}") from e
    server.index.refresh()
    return server


def serve(root: Path | str, host: str, port: int) -> None:
    """Serve in the foreground until SIGTERM or SIGINT (the lab starts this as a child process)."""
    server = make_server(Path(root), host, port)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever, which runs in this very thread: hand it to another.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"mirror serve: {root} on http://{host}:{server.server_port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
