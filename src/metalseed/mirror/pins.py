"""The pins: every upstream version metalseed runs, in one file (``mirror/pins.toml``).

A pin says what the mirror builds from the Go module proxy (module and version) and what a
production host downloads instead (upstream URL and sha256). The file lives at the repository's top
level; a wheel without it can point ``METALSEED_PINS`` at a copy.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from metalseed.errors import MirrorError

_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def repo_root() -> Path:
    """The checkout this package runs from (src/metalseed/mirror/ -> three levels up)."""
    return Path(__file__).resolve().parents[3]


def default_pins_path() -> Path:
    env = os.environ.get("METALSEED_PINS")
    return Path(env) if env else repo_root() / "mirror" / "pins.toml"


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    module: str
    module_version: str
    upstream_url: str
    upstream_sha256: str  # "sha256:<hex>", or "unknown: <why>"
    images: tuple[str, ...] = ()

    @property
    def upstream_sha256_known(self) -> bool:
        return bool(_SHA256.match(self.upstream_sha256))


@dataclass(frozen=True)
class Pins:
    arch: str
    pins: tuple[Pin, ...]
    path: Path

    def get(self, name: str) -> Pin:
        for pin in self.pins:
            if pin.name == name:
                return pin
        raise MirrorError(f"{self.path}: no pin named {name!r}; pinned: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [p.name for p in self.pins]


_REQUIRED = ("name", "version", "module", "module_version", "upstream_url", "upstream_sha256")


def parse_pins(text: str, path: Path) -> Pins:
    """Parse and validate pins text; every problem names the pin and the field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MirrorError(f"{path}: not valid TOML: {e}") from e
    if data.get("schema") != 1:
        raise MirrorError(f"{path}: schema: found {data.get('schema')!r}; accepted: 1")
    raw = data.get("pin")
    if not isinstance(raw, list) or not raw:
        raise MirrorError(f"{path}: no [[pin]] tables")
    pins: list[Pin] = []
    for i, entry in enumerate(raw):
        where = f"{path}: pin #{i + 1} ({entry.get('name', '?')})"
        missing = [k for k in _REQUIRED if not isinstance(entry.get(k), str) or not entry[k]]
        if missing:
            raise MirrorError(f"{where}: missing or empty: {', '.join(missing)}")
        unknown = set(entry) - {*_REQUIRED, "images"}
        if unknown:
            raise MirrorError(f"{where}: unknown field(s): {', '.join(sorted(unknown))}")
        if not _NAME.match(entry["name"]):
            raise MirrorError(f"{where}: name: found {entry['name']!r}; accepted: lower-case, digits, '-'")
        sha = entry["upstream_sha256"]
        if not (_SHA256.match(sha) or sha.startswith("unknown: ")):
            raise MirrorError(
                f"{where}: upstream_sha256: found {sha!r}; accepted: 'sha256:<64 hex>' or 'unknown: <why>'"
            )
        images = entry.get("images", [])
        if not isinstance(images, list) or not all(isinstance(x, str) and ":" in x for x in images):
            raise MirrorError(f"{where}: images: found {images!r}; accepted: list of 'host/repo:tag'")
        pins.append(
            Pin(
                name=entry["name"],
                version=entry["version"],
                module=entry["module"],
                module_version=entry["module_version"],
                upstream_url=entry["upstream_url"],
                upstream_sha256=sha,
                images=tuple(images),
            )
        )
    names = [p.name for p in pins]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MirrorError(f"{path}: pinned more than once: {', '.join(dupes)}")
    return Pins(arch=str(data.get("arch", "amd64")), pins=tuple(pins), path=path)


def load_pins(path: Path | str | None = None) -> Pins:
    p = Path(path) if path is not None else default_pins_path()
    try:
        text = p.read_text()
    except OSError as e:
        raise MirrorError(f"cannot read the pins at {p}: {e}") from e
    return parse_pins(text, p)
