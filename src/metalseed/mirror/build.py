"""``metalseed mirror build``: every pinned component, built from the Go module proxy, into the cache.

Each component has a key: the sha256 of its pin, its recipe, the files of its Go main module, the Go
version and the host inputs of its images (busybox, CA bundle). When a component's key file says the
same key and every artifact it lists still has its sha256, the component is skipped; otherwise it is
rebuilt in a work directory and moved into place. ``manifest.json`` is rewritten after every
component, so a partial mirror is usable while the rest builds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO, TypeVar

from metalseed.errors import MirrorError, MirrorIntegrityError
from metalseed.mirror.manifest import (
    Artifact,
    Kind,
    Manifest,
    load_manifest,
    sha256_file,
    write_manifest,
)
from metalseed.mirror.oci import (
    BlobStore,
    Dir,
    Entry,
    File,
    Link,
    build_image,
    split_reference,
    write_archive,
)
from metalseed.mirror.pins import Pin, Pins, load_pins, repo_root
from metalseed.mirror.recipes import (
    TEXTS,
    CRDRecipe,
    GoBuild,
    GoTestBuild,
    ImageRecipe,
    OpenAPIRecipe,
    Recipe,
    TreeRecipe,
    recipes,
)

FORMAT = 1  # bump to rebuild everything after a change in how artifacts are laid out
BUSYBOX = Path("/bin/busybox")
XTABLES_DIR = Path("/usr/lib/x86_64-linux-gnu/xtables")
TAIL_LINES = 40
T = TypeVar("T")


@dataclass
class StepTime:
    component: str
    step: str
    seconds: float


@dataclass
class BuildReport:
    built: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    steps: list[StepTime] = field(default_factory=list)
    seconds: float = 0.0

    def component_seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.steps:
            out[s.component] = out.get(s.component, 0.0) + s.seconds
        return out


class Builder:
    def __init__(
        self,
        root: Path,
        pins: Pins | None = None,
        source: Path | None = None,
        env: dict[str, str] | None = None,
        log: TextIO = sys.stderr,
    ) -> None:
        self.root = root
        self.pins = pins or load_pins()
        self.source = source or repo_root() / "mirror" / "go"
        self.extra_env = env or {}
        self.log = log
        self.t0 = time.monotonic()
        self.report = BuildReport()
        self._store: BlobStore | None = None
        self._sha: dict[tuple[str, int, int, int], str] = {}

    # -- helpers ---------------------------------------------------------------------------------

    def say(self, component: str, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s] {component}: {msg}", file=self.log, flush=True)

    def env(self, cgo: bool = False) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            GOOS="linux",
            GOARCH=self.pins.arch,
            CGO_ENABLED="1" if cgo else "0",
            GOFLAGS="-mod=readonly -buildvcs=false",
            GOTOOLCHAIN="local",  # the host's Go; a go.mod toolchain line must not fetch another
        )
        env.update(self.extra_env)
        return env

    def run(self, component: str, step: str, argv: list[str], cwd: Path, env: dict[str, str]) -> str:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        logfile = logs / f"{component}.log"
        with logfile.open("a") as f:
            f.write(f"$ {' '.join(argv)}  (in {cwd})\n")
            f.flush()
            try:
                proc = subprocess.run(
                    argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
            except OSError as e:
                raise MirrorError(f"{component}: {step}: cannot run {argv[0]}: {e}") from e
            out = proc.stdout.decode(errors="replace")
            f.write(out)
        if proc.returncode != 0:
            tail = "\n".join(out.splitlines()[-TAIL_LINES:])
            raise MirrorError(
                f"{component}: {step} failed (exit {proc.returncode}); last lines (all in {logfile}):\n{tail}"
            )
        return out

    def timed(self, component: str, step: str, fn: Callable[..., T], *args: object) -> T:
        start = time.monotonic()
        self.say(component, f"{step} ...")
        result = fn(*args)
        took = time.monotonic() - start
        self.report.steps.append(StepTime(component, step, took))
        self.say(component, f"{step}: done in {took:.1f}s")
        return result

    @property
    def store(self) -> BlobStore:
        if self._store is None:
            self._store = BlobStore(self.root)
        return self._store

    def go_version(self) -> str:
        out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, env=self.env())
        if out.returncode != 0:
            raise MirrorError(f"go is not usable: {out.stderr.strip()}")
        return out.stdout.strip()

    def sha256(self, path: Path) -> str:
        """sha256 of a file, once per real file and run (multi-call names are links to one file)."""
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        if key not in self._sha:
            self._sha[key] = sha256_file(path)
        return self._sha[key]

    # -- keys ------------------------------------------------------------------------------------

    def key(self, recipe: Recipe, pin: Pin, go_version: str) -> str:
        h = hashlib.sha256()
        doc = {"format": FORMAT, "pin": asdict(pin), "recipe": repr(recipe), "go": go_version}
        h.update(json.dumps(doc, sort_keys=True).encode())
        if recipe.gomod:
            moddir = self.source / recipe.gomod
            for f in sorted(moddir.iterdir()):
                if f.is_file():
                    h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
        for img in recipe.images:
            for host in self._host_inputs(img):
                h.update(str(host).encode() + b"\0" + sha256_file(host).encode())
        if recipe.pause_c:
            gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True)
            h.update(gcc.stdout.encode())
        return h.hexdigest()

    def _host_inputs(self, img: ImageRecipe) -> list[Path]:
        paths = [Path(src.removeprefix("host:")) for _, src, _ in img.files if src.startswith("host:")]
        if img.busybox:
            paths.append(BUSYBOX)
        return paths

    def cached(self, component: str, key: str) -> list[Artifact] | None:
        keyfile = self.root / "keys" / f"{component}.json"
        try:
            doc = json.loads(keyfile.read_text())
        except (OSError, ValueError):
            return None
        if doc.get("key") != key:
            return None
        artifacts = [Artifact(**a) for a in doc.get("artifacts", [])]
        for a in artifacts:
            p = self.root / a.path
            if not p.exists() or self.sha256(p) != a.sha256:
                return None
        if any(a.digest and not self.store.path(a.digest).exists() for a in artifacts):
            return None
        return artifacts

    def previous(self, component: str) -> list[Artifact] | None:
        """The artifacts of the last build of ``component``, whatever its key, if they still verify."""
        try:
            doc = json.loads((self.root / "keys" / f"{component}.json").read_text())
        except (OSError, ValueError):
            return None
        return self.cached(component, str(doc.get("key")))

    def save_key(self, component: str, key: str, artifacts: list[Artifact]) -> None:
        keys = self.root / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        tmp = keys / f".{component}.json.tmp"
        tmp.write_text(json.dumps({"key": key, "artifacts": [asdict(a) for a in artifacts]}, indent=2))
        os.replace(tmp, keys / f"{component}.json")

    # -- the build -------------------------------------------------------------------------------

    def build(self, only: list[str] | None = None) -> BuildReport:
        self.root.mkdir(parents=True, exist_ok=True)
        # Two builds into one root would interleave manifest writes: the second one is refused.
        with (self.root / ".lock").open("a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                lock.seek(0)
                raise MirrorError(
                    f"another `metalseed mirror build` is running on {self.root} (pid {lock.read().strip()})"
                ) from e
            lock.truncate(0)
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            return self._build(only)

    def _build(self, only: list[str] | None) -> BuildReport:
        versions = {p.name: p.version for p in self.pins.pins}
        all_recipes = recipes(versions)
        unknown = set(only or []) - {r.component for r in all_recipes}
        if unknown:
            raise MirrorError(f"no such component(s): {', '.join(sorted(unknown))}")
        go_version = self.go_version()
        self.say("mirror", f"building into {self.root} with {go_version}")
        # Start from what the root lists now: a reader (a lab deploy, a test) must never see a
        # manifest with less in it than before just because a build is walking the components.
        try:
            manifest = load_manifest(self.root)
        except MirrorError:
            manifest = Manifest()
        for recipe in all_recipes:
            pin = self.pins.get(recipe.component)
            key = self.key(recipe, pin, go_version)
            artifacts = self.cached(recipe.component, key)
            if artifacts is not None and (only is None or recipe.component not in only):
                self.report.cached.append(recipe.component)
                self.say(recipe.component, f"unchanged ({pin.version}), cached")
            elif only is not None and recipe.component not in only:
                # Not asked for and out of date: keep what was built before (if it still verifies)
                # so the manifest goes on listing it until it is rebuilt.
                artifacts = self.previous(recipe.component)
                if artifacts is None:
                    continue
                self.say(recipe.component, "out of date (pins or recipe changed), previous build kept")
            else:
                start = time.monotonic()
                artifacts = self.build_component(recipe, pin)
                self.save_key(recipe.component, key, artifacts)
                self.report.built.append(recipe.component)
                self.say(recipe.component, f"built {pin.version} in {time.monotonic() - start:.1f}s")
            before = manifest.to_json()
            manifest.replace_component(recipe.component, artifacts)
            if manifest.to_json() != before:
                write_manifest(self.root, manifest)
        known = {r.component for r in all_recipes}
        if any(a.component not in known for a in manifest.artifacts):  # a component was dropped
            manifest.artifacts = [a for a in manifest.artifacts if a.component in known]
            write_manifest(self.root, manifest)
        self.report.seconds = time.monotonic() - self.t0
        self.say(
            "mirror",
            f"{len(self.report.built)} built, {len(self.report.cached)} cached, "
            f"total {self.report.seconds:.1f}s",
        )
        return self.report

    def build_component(self, recipe: Recipe, pin: Pin) -> list[Artifact]:
        c = recipe.component
        work = self.root / ".work" / c
        shutil.rmtree(work, ignore_errors=True)
        (work / "bin").mkdir(parents=True)
        moddir = self.source / recipe.gomod if recipe.gomod else self.source / "kubernetes"
        if recipe.gomod or recipe.pause_c:
            self.timed(c, "download", self.run, c, "download", ["go", "mod", "download"], moddir, self.env())
        for i, gb in enumerate(recipe.builds):
            step = "compile" if len(recipe.builds) == 1 else f"compile {i + 1}"
            self.timed(c, step, self.go_build, c, step, gb, moddir, work / "bin")
        if recipe.pause_c:
            self.timed(c, "compile pause.c", self.compile_pause, c, pin, moddir, work / "bin")
        artifacts = self.install_binaries(recipe, pin, work / "bin")
        if isinstance(recipe, OpenAPIRecipe):
            artifacts.append(self.timed(c, "bundle schemas", self.bundle_openapi, recipe, pin, moddir))
        if isinstance(recipe, CRDRecipe):
            artifacts.append(self.timed(c, "bundle CRD schemas", self.bundle_crds, recipe, pin, moddir))
        if isinstance(recipe, TreeRecipe):
            artifacts.append(self.timed(c, f"pack {recipe.tree_dir}/", self.pack_tree, recipe, pin,
                                        moddir))
        for img in recipe.images:
            ref = pin.images[img.reference_index]
            artifacts.append(self.timed(c, f"image {ref}", self.make_image, img, ref, pin))
        shutil.rmtree(work, ignore_errors=True)
        return artifacts

    def module_time(self, c: str, moddir: Path, module: str, version: str) -> str:
        """The release time the module proxy records for module@version (a reproducible build date)."""
        out = self.run(
            c, "module info", ["go", "mod", "download", "-json", f"{module}@{version}"], moddir, self.env()
        )
        info = json.loads(out[out.index("{") :])
        try:
            return str(json.loads(Path(info["Info"]).read_text())["Time"])
        except (KeyError, OSError, ValueError) as e:
            raise MirrorError(f"{c}: no release time for {module}@{version}: {e}") from e

    def go_build(self, c: str, step: str, gb: GoBuild, moddir: Path, out: Path) -> None:
        pin = self.pins.get(c)
        xflags = list(gb.xflags)
        if any("{module_time}" in v for _, v in xflags):
            when = self.module_time(c, moddir, pin.module, pin.module_version)
            xflags = [(k, v.replace("{module_time}", when)) for k, v in xflags]
        ldflags = ["-s", "-w", *(f"-X {k}={v}" for k, v in xflags)]
        if gb.static_cgo:
            ldflags += ["-linkmode", "external", "-extldflags", "-static"]
        verb = ["test", "-c", "-vet=off"] if isinstance(gb, GoTestBuild) else ["build"]
        argv = ["go", *verb, "-trimpath", "-ldflags", " ".join(ldflags), "-o", str(out) + "/"]
        if gb.tags:
            argv += ["-tags", ",".join(gb.tags)]
        argv += list(gb.packages)
        self.run(c, step, argv, moddir, self.env(cgo=gb.cgo))
        for src, dst in gb.rename:
            if src != dst:
                os.replace(out / src, out / dst)

    def compile_pause(self, c: str, pin: Pin, moddir: Path, out: Path) -> None:
        # Upstream's pause is C (build/pause/linux/pause.c, shipped in the k8s.io/kubernetes module
        # zip): compiled statically as its Makefile does, so the image needs no libc.
        mod = f"{pin.module}@{pin.module_version}"
        out_json = self.run(c, "locate pause.c", ["go", "mod", "download", "-json", mod], moddir, self.env())
        src = (
            Path(json.loads(out_json[out_json.index("{") :])["Dir"]) / "build" / "pause" / "linux" / "pause.c"
        )
        flags = [
            "-Os",
            "-Wall",
            "-Werror",
            "-static",
            f"-DVERSION=v{pin.version}",
            "-o",
            str(out / "pause"),
            str(src),
        ]
        self.run(c, "gcc pause.c", ["gcc", *flags], out, self.env())
        self.run(c, "strip pause", ["strip", str(out / "pause")], out, self.env())

    def module_dir(self, c: str, pin: Pin, moddir: Path) -> Path:
        out = self.run(c, "module dir", ["go", "mod", "download", "-json",
                                         f"{pin.module}@{pin.module_version}"], moddir, self.env())
        return Path(json.loads(out[out.index("{") :])["Dir"])

    def bundle_openapi(self, recipe: OpenAPIRecipe, pin: Pin, moddir: Path) -> Artifact:
        from metalseed.kube.openapi import bundle

        spec = self.module_dir(recipe.component, pin, moddir) / recipe.spec_dir
        rel = f"data/kubernetes-openapi-{pin.version}.json"
        dst = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.write_text(json.dumps(bundle(spec, pin.version), sort_keys=True, separators=(",", ":")))
        os.replace(tmp, dst)
        return self._artifact(recipe.component, pin, rel, "data", recipe.component)

    def bundle_crds(self, recipe: CRDRecipe, pin: Pin, moddir: Path) -> Artifact:
        from metalseed.kube.crd import bundle_files

        src = self.module_dir(recipe.component, pin, moddir) / recipe.crd_dir
        paths = []
        for name, want in recipe.files:
            actual = sha256_file(src / name)
            if actual != want:
                raise MirrorIntegrityError(f"{recipe.component}: {pin.module}@{pin.module_version} "
                                           f"{recipe.crd_dir}/{name}: expected sha256:{want}, "
                                           f"actual sha256:{actual}")
            paths.append(src / name)
        rel = f"data/{recipe.component}-{pin.version}.json"
        dst = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.write_text(json.dumps(bundle_files(paths, pin.version), sort_keys=True,
                                  separators=(",", ":")))
        os.replace(tmp, dst)
        return self._artifact(recipe.component, pin, rel, "data", recipe.component)

    def pack_tree(self, recipe: TreeRecipe, pin: Pin, moddir: Path) -> Artifact:
        src = self.module_dir(recipe.component, pin, moddir) / recipe.tree_dir
        rel = f"bin/{recipe.tree_name}"
        dst = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        write_tree_tar(src, recipe.tree_dir, tmp)
        os.replace(tmp, dst)
        return self._artifact(recipe.tree_name, pin, rel, "binary", recipe.component)

    def install_binaries(self, recipe: Recipe, pin: Pin, built: Path) -> list[Artifact]:
        bindir = self.root / "bin"
        bindir.mkdir(parents=True, exist_ok=True)
        artifacts: list[Artifact] = []
        for f in sorted(built.iterdir()):
            dst = bindir / f.name
            tmp = bindir / f".{f.name}.tmp"
            shutil.copyfile(f, tmp)
            tmp.chmod(0o755)
            os.replace(tmp, dst)
            artifacts.append(self._artifact(f.name, pin, f"bin/{f.name}", "binary", recipe.component))
        for link, target in recipe.links:
            dst = bindir / link
            if dst.is_symlink() or dst.exists():
                dst.unlink()
            dst.symlink_to(target)
            artifacts.append(self._artifact(link, pin, f"bin/{link}", "binary", recipe.component))
        return artifacts

    def _artifact(self, name: str, pin: Pin, rel: str, kind: Kind, component: str, **extra: str) -> Artifact:
        p = self.root / rel
        return Artifact(
            name=name,
            version=pin.version,
            kind=kind,
            path=rel,
            sha256=sha256_file(p),
            size=p.stat().st_size,
            source="built",
            component=component,
            **extra,
        )

    def image_layers(self, img: ImageRecipe) -> list[list[Entry]]:
        files: list[Entry] = []
        for dest, src, mode in img.files:
            xattrs: tuple[tuple[str, bytes], ...] = ()
            for cap_dest, cap in img.caps:
                if cap_dest == dest:
                    xattrs = (("security.capability", file_capability(cap)),)
            if src.startswith("bin:"):
                files.append(File(dest, src=self.root / "bin" / src[4:], mode=mode, xattrs=xattrs))
            elif src.startswith("host:"):
                files.append(File(dest, src=Path(src[5:]), mode=mode, xattrs=xattrs))
            elif src.startswith("text:"):
                files.append(File(dest, data=TEXTS[src[5:]], mode=mode))
            else:
                raise MirrorError(f"{img.name}: unknown source {src!r}")
        rest: list[Entry] = [*files, *(Link(d, t) for d, t in img.links)]
        layers: list[list[Entry]] = []
        if img.busybox:
            layers.append(busybox_layer())
        if img.host_libs:
            layers.append(host_libs_layer(img.host_libs))
        if img.shared_first_layer:
            layers.append([rest[0]])
            rest = rest[1:]
        layers.append([Dir("/tmp", 0o1777), *rest] if img.busybox else rest)
        return layers

    def make_image(self, img: ImageRecipe, reference: str, pin: Pin) -> Artifact:
        image = build_image(self.store, reference, self.image_layers(img), img.config, self.pins.arch)
        _, repo, tag = split_reference(reference)
        images = self.root / "images"
        images.mkdir(parents=True, exist_ok=True)
        rel = f"images/{repo.rsplit('/', 1)[-1]}-{tag}.oci.tar"
        write_archive(self.store, image, self.root / rel)
        return self._artifact(
            img.name, pin, rel, "image", pin.name, image=reference, digest=image.manifest.digest
        )


def write_tree_tar(src: Path, top: str, dst: Path) -> None:
    """``src`` as ``top/...`` in a plain tar whose bytes depend only on the files' contents, names
    and modes: the module cache's files are read-only copies with varying times."""
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
        return info

    with tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(src, arcname=top, recursive=False, filter=clean)
        for path in sorted(p for p in src.rglob("*")):
            tar.add(path, arcname=f"{top}/{path.relative_to(src)}", recursive=False, filter=clean)


def file_capability(cap: int) -> bytes:
    """A VFS_CAP_REVISION_2 ``security.capability`` value: the capability permitted and effective."""
    magic = 0x02000000 | 0x1  # revision 2, effective bit
    permitted = 1 << cap
    return (
        magic.to_bytes(4, "little")
        + (permitted & 0xFFFFFFFF).to_bytes(4, "little")
        + (0).to_bytes(4, "little")
        + (permitted >> 32).to_bytes(4, "little")
        + (0).to_bytes(4, "little")
    )


def busybox_layer() -> list[Entry]:
    """Debian's static busybox and a link per applet (sh, cp, ls, ...), like a busybox image."""
    if not BUSYBOX.exists():
        raise MirrorError(f"{BUSYBOX} is missing: install Debian's busybox-static")
    out = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=False)
    entries: list[Entry] = [File("/bin/busybox", src=BUSYBOX, mode=0o755)]
    for applet in out.stdout.split():
        if applet != "bin/busybox" and not applet.startswith("linuxrc"):
            entries.append(Link("/" + applet, "/bin/busybox"))
    return entries


_LDD = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def shared_libraries(binaries: list[Path]) -> set[Path]:
    libs: set[Path] = set()
    for b in binaries:
        out = subprocess.run(["ldd", str(b)], capture_output=True, text=True, check=False)
        libs.update(Path(m) for m in _LDD.findall(out.stdout))
    return libs


def host_libs_layer(sources: tuple[str, ...]) -> list[Entry]:
    """Shared libraries of host binaries (and iptables' extension modules) at their host paths."""
    binaries: list[Path] = []
    entries: list[Entry] = []
    for s in sources:
        if s == "xtables-plugins":
            mods = sorted(XTABLES_DIR.glob("*.so"))
            binaries += mods
            entries += [File(str(m), src=m, mode=0o644) for m in mods]
        else:
            binaries.append(Path(s))
    entries += [File(str(lib), src=lib.resolve(), mode=0o755) for lib in sorted(shared_libraries(binaries))]
    return entries
