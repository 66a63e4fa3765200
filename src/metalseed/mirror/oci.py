"""OCI image archives, written in pure Python (no docker, no buildkit).

Layers are gzip'ed tars written deterministically (sorted entries, mtime 0, owner 0:0, gzip header
mtime 0), so the same inputs give byte-identical blobs and digests on every rebuild. Blobs go to a
content-addressed store (``blobs/sha256/<hex>``) that the registry serves; the ``.oci.tar`` archive
holds the same blobs in OCI image layout for ``ctr import`` or skopeo.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from metalseed.errors import MirrorError

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class File:
    dest: str  # absolute path inside the image
    src: Path | None = None  # file on this host, or
    data: bytes | None = None  # literal content
    mode: int = 0o755
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Link:
    dest: str
    target: str  # symlink target, as written


@dataclass(frozen=True)
class Dir:
    dest: str
    mode: int = 0o755


Entry = File | Link | Dir


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str  # "sha256:<hex>"
    size: int

    def to_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    user: str = ""
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    workdir: str = ""
    exposed_ports: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, object]:
        c: dict[str, object] = {"Env": list(self.env)}
        if self.entrypoint:
            c["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            c["Cmd"] = list(self.cmd)
        if self.user:
            c["User"] = self.user
        if self.workdir:
            c["WorkingDir"] = self.workdir
        if self.exposed_ports:
            c["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.labels:
            c["Labels"] = dict(self.labels)
        return c


@dataclass
class Image:
    """One built image: its manifest descriptor and every blob it references."""

    reference: str
    manifest: Descriptor
    config: Descriptor
    layers: list[Descriptor] = field(default_factory=list)

    def blobs(self) -> list[Descriptor]:
        return [self.manifest, self.config, *self.layers]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def layer_tar(entries: Iterable[Entry]) -> bytes:
    """The uncompressed layer: entries sorted by path, missing parent directories added."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        by_path[e.dest.strip("/")] = e
    for p in list(by_path):
        for parent in _parents(p):
            by_path.setdefault(parent, Dir("/" + parent))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(by_path):
            e = by_path[name]
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if isinstance(e, Dir):
                info.type = tarfile.DIRTYPE
                info.mode = e.mode
                tar.addfile(info)
            elif isinstance(e, Link):
                info.type = tarfile.SYMTYPE
                info.linkname = e.target
                info.mode = 0o777
                tar.addfile(info)
            else:
                data = e.data if e.data is not None else _read(e.src)
                info.size = len(data)
                info.mode = e.mode
                if e.xattrs:
                    # surrogateescape carries arbitrary bytes through tarfile's str-typed pax headers.
                    info.pax_headers = {
                        f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in e.xattrs
                    }
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _read(src: Path | None) -> bytes:
    if src is None:
        raise MirrorError("image file entry has neither src nor data")
    try:
        return src.read_bytes()
    except OSError as e:
        raise MirrorError(f"image input {src}: {e}") from e


def gzip_bytes(data: bytes) -> bytes:
    # mtime=0 and no file name in the header: the same tar always gives the same blob.
    return gzip.compress(data, compresslevel=6, mtime=0)


class BlobStore:
    """``<root>/blobs/sha256/<hex>``: written once, via a temporary file and a rename."""

    def __init__(self, root: Path, create: bool = True) -> None:
        self.dir = root / "blobs" / "sha256"
        if create:
            self.dir.mkdir(parents=True, exist_ok=True)
        self._layers: dict[str, tuple[str, Descriptor]] = {}  # tar sha -> (diff_id, gz descriptor)

    def path(self, digest: str) -> Path:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256" or len(hexd) != 64 or not all(c in "0123456789abcdef" for c in hexd):
            raise MirrorError(f"not a sha256 digest: {digest!r}")
        return self.dir / hexd

    def put(self, data: bytes, media_type: str) -> Descriptor:
        d = Descriptor(media_type, digest_of(data), len(data))
        p = self.path(d.digest)
        if not (p.exists() and p.stat().st_size == d.size):
            tmp = p.with_name(f".{p.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, p)
        return d

    def put_layer(self, tar: bytes) -> tuple[str, Descriptor]:
        """(diff_id, compressed descriptor); a layer shared by several images is compressed once."""
        key = hashlib.sha256(tar).hexdigest()
        if key not in self._layers:
            self._layers[key] = ("sha256:" + key, self.put(gzip_bytes(tar), MT_LAYER))
        return self._layers[key]


def build_image(
    store: BlobStore, reference: str, layers: list[list[Entry]], config: ImageConfig, arch: str = "amd64"
) -> Image:
    diff_ids: list[str] = []
    descs: list[Descriptor] = []
    for entries in layers:
        diff_id, desc = store.put_layer(layer_tar(entries))
        diff_ids.append(diff_id)
        descs.append(desc)
    cfg = {
        "architecture": arch,
        "os": "linux",
        "created": EPOCH,
        "config": config.to_json(),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": EPOCH, "created_by": "metalseed mirror"} for _ in descs],
    }
    cfg_desc = store.put(_canonical(cfg), MT_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": cfg_desc.to_json(),
        "layers": [d.to_json() for d in descs],
    }
    man_desc = store.put(_canonical(manifest), MT_MANIFEST)
    return Image(reference, man_desc, cfg_desc, descs)


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def split_reference(reference: str) -> tuple[str, str, str]:
    """("registry.k8s.io", "coredns/coredns", "v1.14.7"); docker.io's one-word names get library/."""
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag or "@" in reference:
        raise MirrorError(f"image reference: found {reference!r}; accepted: host/repository:tag")
    host, _, repo = name.partition("/")
    if "." not in host or not repo:
        raise MirrorError(f"image reference {reference!r}: the registry host must be explicit")
    if host == "docker.io" and "/" not in repo:
        repo = "library/" + repo
    return host, repo, tag


def write_archive(store: BlobStore, image: Image, out: Path) -> None:
    """An OCI image layout as one tar (``oci-archive``), deterministic like the layers."""
    _, _, tag = split_reference(image.reference)
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [
            {
                **image.manifest.to_json(),
                "annotations": {
                    "io.containerd.image.name": image.reference,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    entries: list[tuple[str, bytes | Path]] = [
        ("blobs", b""),
        ("blobs/sha256", b""),
        ("index.json", _canonical(index)),
        ("oci-layout", _canonical({"imageLayoutVersion": "1.0.0"})),
    ]
    seen = set()
    for d in image.blobs():
        if d.digest not in seen:
            seen.add(d.digest)
            entries.append((f"blobs/sha256/{d.digest.split(':')[1]}", store.path(d.digest)))
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(entries, key=lambda x: x[0]):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if name in ("blobs", "blobs/sha256"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                continue
            info.mode = 0o644
            if isinstance(content, Path):
                info.size = content.stat().st_size
                with content.open("rb") as blob:
                    tar.addfile(info, blob)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    os.replace(tmp, out)


def check_archive(path: Path) -> list[str]:
    """Structural problems of an OCI archive (empty when sound): every digest, size, media type and
    diff_id is recomputed from the bytes, not trusted from the JSON."""
    problems: list[str] = []
    try:
        tar = tarfile.open(path)  # noqa: SIM115 (closed by the with below)
    except (OSError, tarfile.TarError) as e:
        return [f"{path}: not a tar: {e}"]
    with tar:
        members = {m.name: m for m in tar.getmembers()}

        def blob(name: str) -> bytes:
            f = tar.extractfile(members[name])
            if f is None:
                raise KeyError(name)
            return f.read()

        def check(desc: dict[str, object], media: str, what: str) -> bytes | None:
            digest = str(desc.get("digest", ""))
            name = "blobs/sha256/" + digest.removeprefix("sha256:")
            if name not in members:
                problems.append(f"{what}: blob {digest} is missing")
                return None
            data = blob(name)
            if digest_of(data) != digest:
                problems.append(f"{what}: blob {name} has digest {digest_of(data)}, not {digest}")
            if desc.get("size") != len(data):
                problems.append(f"{what}: size {desc.get('size')} in its descriptor, {len(data)} in the blob")
            if desc.get("mediaType") != media:
                problems.append(f"{what}: media type {desc.get('mediaType')!r}, expected {media!r}")
            return data

        try:
            layout = json.loads(blob("oci-layout"))
            index = json.loads(blob("index.json"))
        except (KeyError, ValueError) as e:
            return [f"{path}: no valid oci-layout / index.json: {e}"]
        if layout.get("imageLayoutVersion") != "1.0.0":
            problems.append(f"oci-layout: version {layout.get('imageLayoutVersion')!r}")
        if index.get("schemaVersion") != 2 or not index.get("manifests"):
            problems.append("index.json: schemaVersion must be 2, with at least one manifest")
        for m in index.get("manifests", []):
            raw = check(m, MT_MANIFEST, "index.json manifest")
            if raw is None:
                continue
            man = json.loads(raw)
            if man.get("schemaVersion") != 2 or man.get("mediaType") != MT_MANIFEST:
                problems.append("manifest: schemaVersion/mediaType not OCI image manifest v1")
            cfg_raw = check(man["config"], MT_CONFIG, "config")
            if cfg_raw is None:
                continue
            cfg = json.loads(cfg_raw)
            diff_ids = cfg.get("rootfs", {}).get("diff_ids", [])
            if len(diff_ids) != len(man.get("layers", [])):
                problems.append(f"config: {len(diff_ids)} diff_ids for {len(man.get('layers', []))} layers")
            for i, layer in enumerate(man.get("layers", [])):
                gz = check(layer, MT_LAYER, f"layer {i}")
                if gz is None:
                    continue
                try:
                    plain = gzip.decompress(gz)
                except OSError as e:
                    problems.append(f"layer {i}: not gzip: {e}")
                    continue
                if i < len(diff_ids) and digest_of(plain) != diff_ids[i]:
                    problems.append(f"layer {i}: diff_id {diff_ids[i]} but uncompressed {digest_of(plain)}")
                try:
                    with tarfile.open(fileobj=io.BytesIO(plain)) as layer_tar_file:
                        layer_tar_file.getmembers()
                except tarfile.TarError as e:
                    problems.append(f"layer {i}: uncompressed layer is not a tar: {e}")
            if cfg.get("os") != "linux" or not cfg.get("architecture"):
                problems.append("config: os/architecture missing")
    return problems


def read_archive_config(path: Path) -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
    """(index, manifest, config) of a one-image archive, for tests and ``mirror show``."""
    with tarfile.open(path) as tar:

        def load(name: str) -> dict[str, object]:
            f = tar.extractfile(name)
            if f is None:
                raise MirrorError(f"{path}: {name} is not a file")
            doc: dict[str, object] = json.loads(f.read())
            return doc

        index = load("index.json")
        first = index["manifests"][0]  # type: ignore[index]
        man = load("blobs/sha256/" + first["digest"].removeprefix("sha256:"))
        cfg = load("blobs/sha256/" + man["config"]["digest"].removeprefix("sha256:"))  # type: ignore[index]
        return index, man, cfg
