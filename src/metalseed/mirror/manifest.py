"""``manifest.json`` at the mirror's root: what is there, where, and its sha256.

Written after every component completes (a partial mirror is usable and can be polled), always
through a temporary file and a rename so a reader never sees half a manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from metalseed.errors import MirrorError, MirrorIntegrityError

MANIFEST = "manifest.json"
Kind = Literal["binary", "image", "data"]  # data: operator-side files (schemas)
Source = Literal["built", "downloaded"]


@dataclass(frozen=True)
class Artifact:
    name: str
    version: str
    kind: Kind
    path: str  # relative to the mirror root
    sha256: str  # hex, of the file at path (for images: the OCI archive)
    size: int
    source: Source
    image: str | None = None  # upstream reference, images only
    digest: str | None = None  # "sha256:<hex>" of the image manifest (what the registry serves)
    component: str = ""  # the pin this artifact was built from


@dataclass
class Manifest:
    artifacts: list[Artifact] = field(default_factory=list)

    def get(self, name: str) -> Artifact:
        for a in self.artifacts:
            if a.name == name:
                return a
        raise MirrorError(f"the mirror has no artifact named {name!r}")

    def names(self) -> list[str]:
        return [a.name for a in self.artifacts]

    def images(self) -> list[Artifact]:
        return [a for a in self.artifacts if a.kind == "image"]

    def replace_component(self, component: str, artifacts: list[Artifact]) -> None:
        """Swap one component's artifacts in place (a new component goes last)."""
        at = next((i for i, a in enumerate(self.artifacts) if a.component == component),
                  len(self.artifacts))
        rest = [a for a in self.artifacts if a.component != component]
        before = sum(1 for a in self.artifacts[:at] if a.component != component)
        self.artifacts = rest[:before] + artifacts + rest[before:]

    def to_json(self) -> str:
        doc = {"schema": 1, "artifacts": [asdict(a) for a in self.artifacts]}
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = MANIFEST) -> Manifest:
        try:
            doc = json.loads(text)
            return cls([Artifact(**a) for a in doc["artifacts"]])
        except (ValueError, KeyError, TypeError) as e:
            raise MirrorError(f"{where}: not a metalseed mirror manifest: {e}") from e


def load_manifest(root: Path | str) -> Manifest:
    path = Path(root) / MANIFEST
    try:
        return Manifest.from_json(path.read_text(), str(path))
    except FileNotFoundError as e:
        raise MirrorError(f"{path}: no manifest; run `metalseed mirror build` first") from e


def write_manifest(root: Path, manifest: Manifest) -> None:
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(manifest.to_json())
    os.replace(tmp, root / MANIFEST)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify(root: Path, manifest: Manifest) -> list[MirrorIntegrityError]:
    """Every artifact checked against the manifest; one error per mismatch (an empty list is good)."""
    problems: list[MirrorIntegrityError] = []
    for a in manifest.artifacts:
        path = root / a.path
        try:
            actual = sha256_file(path)
        except OSError as e:
            problems.append(MirrorIntegrityError(f"{a.path}: expected sha256:{a.sha256}, cannot read: {e}"))
            continue
        if actual != a.sha256:
            problems.append(
                MirrorIntegrityError(f"{a.path}: expected sha256:{a.sha256}, actual sha256:{actual}")
            )
    return problems
