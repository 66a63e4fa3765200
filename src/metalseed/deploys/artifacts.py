"""Pinned binaries on a host: downloaded, checked against a sha256 the operator holds, then installed.

Where a file comes from and which digest it must have is decided on the operator's side, never by
the host or the server it downloads from:

- with ``mirror_url``: every binary the mirror built for a component, from
  ``<mirror_url>/files/<path>``, checked against the mirror's ``manifest.json`` under ``mirror_dir``;
- without: the component's upstream release (``mirror/pins.toml``), checked against the pinned
  upstream sha256; a pin whose sha256 is not known is refused before any host is touched.

On the host each download goes to a private temporary directory, is checked there, and only on a
match is moved into place (a staged copy renamed over the live file); a mismatch stops the run
with the file, the expected and the actual digest, and leaves nothing installed. A *stamp* per
download (``/var/lib/metalseed/artifacts/<name>.sha256``: the sha256 the download was checked
against, then size, mtime, inode and path of every file installed from it) makes the next run
cheap: ONE command per host compares every stamp with ``stat`` of its files, and a converged host
downloads nothing. ``stat``, not a re-hash: the files were hashed when they arrived, and hashing
~150 MB of binaries on every host at every run would cost seconds on a no-change run; a file
replaced or rewritten since changes its inode, size or mtime and is installed again.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation

from metalseed.errors import ArtifactError, MetalseedError
from metalseed.model import Cluster

STAMP_DIR = "/var/lib/metalseed/artifacts"
TMP_PATTERN = "/var/tmp/metalseed-artifact.XXXXXX"
STAGED_SUFFIX = ".metalseed-new"
STAT = "stat -c '%s %Y %i %n'"  # what a stamp records of each installed file
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ARCHIVE = (".tar.gz", ".tgz")


@dataclass(frozen=True)
class Download:
    name: str
    """What it is, for messages and the stamp: ``containerd/ctr``, ``cni-plugins``."""
    url: str
    sha256: str
    """64 hex digits the downloaded file must have."""
    dest_dir: str
    archive: bool = False
    """A .tar.gz: every regular file in it is installed into ``dest_dir`` under its base name."""
    filename: str = ""
    """Not an archive: the installed file's name in ``dest_dir``."""
    mode: int = 0o755
    stamp_dir: str = STAMP_DIR

    def __post_init__(self) -> None:
        if not _HEX64.match(self.sha256):
            raise ArtifactError(f"{self.name}: sha256 {self.sha256!r} is not 64 lowercase hex digits")
        if not self.archive and not self.filename:
            raise ArtifactError(f"{self.name}: a download that is not an archive needs a filename")

    @property
    def stamp(self) -> str:
        return f"{self.stamp_dir}/{self.name.replace('/', '--')}.sha256"

    @property
    def dests(self) -> tuple[str, ...]:
        """Installed paths known before the download (an archive's are learnt from it)."""
        return () if self.archive else (f"{self.dest_dir}/{self.filename}",)


# --------------------------------------------------------------------------------------------
# Which downloads a component needs (operator side)


def component_downloads(cluster: Cluster, component: str, dest_dir: str,
                        filename: str | None = None) -> tuple[Download, ...]:
    """The downloads that install ``component``'s binaries into ``dest_dir``.

    ``filename`` names a single-file upstream download (``runc.amd64`` installs as ``runc``).
    """
    if cluster.mirror_url:
        return mirror_downloads(cluster, component, dest_dir)
    return (upstream_download(component, dest_dir, filename),)


def mirror_downloads(cluster: Cluster, component: str, dest_dir: str) -> tuple[Download, ...]:
    from metalseed.mirror import load_manifest

    try:
        manifest = _manifest(cluster, load_manifest)
    except MetalseedError as e:
        raise ArtifactError(f"mirror_url is set, but the manifest to check downloads against "
                            f"cannot be read: {e}") from e
    found = [a for a in manifest.artifacts if a.kind == "binary"
             and (a.component == component or (not a.component and a.name == component))]
    if not found:
        raise ArtifactError(f"the mirror manifest {cluster.mirror_dir}/manifest.json has no binary "
                            f"of {component!r}; it has: {', '.join(manifest.names()) or 'nothing'}"
                            " (run `metalseed mirror build`)")
    assert cluster.mirror_url is not None
    return tuple(
        Download(
            name=f"{component}/{PurePosixPath(a.path).name}",
            url=f"{cluster.mirror_url}/files/{a.path}",
            sha256=a.sha256.removeprefix("sha256:"),
            dest_dir=dest_dir,
            filename=PurePosixPath(a.path).name,
        )
        for a in found
    )


_MANIFESTS: dict[tuple[str, int], Any] = {}


def _manifest(cluster: Cluster, load: Any) -> Any:
    """The operator-side manifest, read once per run and mirror build (keyed by its mtime)."""
    path = cluster.mirror_dir / "manifest.json"
    try:
        key = (str(path), path.stat().st_mtime_ns)
    except OSError:
        return load(cluster.mirror_dir)  # raises the mirror's own "no manifest" error
    if key not in _MANIFESTS:
        _MANIFESTS[key] = load(cluster.mirror_dir)
    return _MANIFESTS[key]


def upstream_download(component: str, dest_dir: str, filename: str | None = None) -> Download:
    from metalseed.mirror import load_pins

    try:
        pin = load_pins().get(component)
    except MetalseedError as e:
        raise ArtifactError(f"{component}: {e}") from e
    if not pin.upstream_sha256_known:
        raise ArtifactError(
            f"{component} {pin.version}: no upstream sha256 is pinned ({pin.upstream_sha256}), so "
            f"{pin.upstream_url} cannot be checked; set mirror_url to install it from a mirror"
        )
    archive = pin.upstream_url.endswith(_ARCHIVE)
    return Download(name=component, url=pin.upstream_url,
                    sha256=pin.upstream_sha256.removeprefix("sha256:"), dest_dir=dest_dir,
                    archive=archive, filename="" if archive else (filename or component))


# --------------------------------------------------------------------------------------------
# One fact: which stamps match, and are the files they list still the ones installed


def check_command(downloads: Iterable[Download]) -> str:
    parts = []
    for d in downloads:
        s = shlex.quote(d.stamp)
        # "[stamp] <recorded download sha256> ok" when every installed file is as installed.
        recorded = f"$(tail -n +2 {s} 2>/dev/null)"
        now = f"$(tail -n +2 {s} 2>/dev/null | cut -d' ' -f4- | xargs -r {STAT} 2>/dev/null)"
        parts.append(f"echo \"[{d.stamp}] $(head -n1 {s} 2>/dev/null) "
                     f"$([ \"{now}\" = \"{recorded}\" ] && echo ok)\"")
    return "; ".join(parts) + "; true"


def parse_check(lines: Iterable[str]) -> dict[str, str]:
    """stamp path -> the download sha256 it records, for stamps whose installed files all match."""
    current: dict[str, str] = {}
    for line in lines:
        m = re.match(r"^\[(.+?)\] ([0-9a-f]{64}) ok$", line.strip())
        if m:
            current[m.group(1)] = m.group(2)
    return current


class InstalledArtifacts(FactBase[dict[str, str]]):
    """Stamps of installed downloads whose files are intact: one command for all of them."""

    def command(self, downloads: tuple[Download, ...]) -> str:
        return check_command(downloads)

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        return parse_check(output)


# --------------------------------------------------------------------------------------------
# Pure planning


def missing(downloads: Iterable[Download], current: dict[str, str]) -> list[Download]:
    return [d for d in downloads if current.get(d.stamp) != d.sha256]


def install_command(d: Download) -> str:
    """Download to a private temp dir, check, stage next to the targets, rename, stamp.

    Until the digest matched nothing outside the temp dir is touched; the temp dir goes in every
    case (trap). The stamp is written last, so an interrupted install is redone next run.
    """
    url, dest, stamp = shlex.quote(d.url), shlex.quote(d.dest_dir), shlex.quote(d.stamp)
    what = f"{d.name} ({d.url})"
    lines = [
        "set -e",
        # A minimal Debian install has no curl; it is the one tool the step needs.
        "command -v curl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
        "--no-install-recommends curl >&2",
        f"tmp=$(mktemp -d {TMP_PATTERN})",
        "trap 'rm -rf \"$tmp\"' EXIT",
        f"curl -fsS --retry 3 --connect-timeout 5 -o \"$tmp/download\" {url} || "
        f"{{ echo {shlex.quote(f'metalseed: cannot download {what}')} >&2; exit 1; }}",
        "actual=$(sha256sum \"$tmp/download\" | cut -d' ' -f1)",
        f"if [ \"$actual\" != {d.sha256} ]; then "
        f"echo {shlex.quote(f'metalseed: sha256 mismatch for {what}: expected sha256:{d.sha256}, ')}"
        f"\"actual sha256:$actual\"{shlex.quote('; nothing installed')} >&2; exit 1; fi",
        "mkdir \"$tmp/files\"",
    ]
    if d.archive:
        lines += [
            "mkdir \"$tmp/x\" && tar -xzf \"$tmp/download\" -C \"$tmp/x\" --no-same-owner",
            "find \"$tmp/x\" -type f -exec mv -f {} \"$tmp/files/\" \\;",
        ]
    else:
        lines.append(f"mv \"$tmp/download\" \"$tmp/files/\"{shlex.quote(d.filename)}")
    lines += [
        f"mkdir -p {dest} {shlex.quote(d.stamp_dir)}",
        f"echo {d.sha256} > \"$tmp/stamp\"",
        "for f in \"$tmp\"/files/*; do n=${f##*/}; "
        f"install -m {d.mode:04o} \"$f\" {dest}/\"$n{STAGED_SUFFIX}\"; "
        f"mv -f {dest}/\"$n{STAGED_SUFFIX}\" {dest}/\"$n\"; "
        f"{STAT} {dest}/\"$n\" >> \"$tmp/stamp\"; done",
        f"mv -f \"$tmp/stamp\" {stamp}",
    ]
    return "\n".join(lines)


def restart_command(unit: str) -> str:
    """Restart a unit that runs (new binaries); one that does not run is left to its deploy."""
    u = shlex.quote(unit)
    return f"if systemctl -q is-active {u}; then systemctl restart {u}; fi"


def plan(downloads: Iterable[Download], current: dict[str, str],
         restart: tuple[str, ...] = ()) -> list[str]:
    todo = missing(downloads, current)
    steps = [install_command(d) for d in todo]
    if todo:
        steps += [restart_command(u) for u in restart]
    return steps


@operation()
def install(downloads: tuple[Download, ...], restart: tuple[str, ...] = ()
            ) -> Generator[Any, None, None]:
    """Install ``downloads`` on this host: one check command, then only what is missing.

    ``restart``: units restarted (if running) after any download was installed.
    """
    if not downloads:
        return
    # pyinfra generates an operation twice (prepare, execute): keep the prepare-time answer, as
    # the converge operation does, so a converged host costs one command per run.
    cache: dict[Any, dict[str, str]] = host.state.__dict__.setdefault("_metalseed_artifacts", {})
    key = (host.name, downloads)
    if key not in cache:
        cache[key] = host.get_fact(InstalledArtifacts, downloads=downloads)
    for step in plan(downloads, cache[key], restart):
        yield StringCommand(step)
