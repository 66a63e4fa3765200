"""The artifact mirror: pinned binaries and OCI images for hosts without internet.

Stable interface for the lab and the deploys::

    from metalseed.mirror import load_manifest, load_pins, default_root
    m = load_manifest(default_root())
    m.get("containerd").path      # relative to the root, e.g. "bin/containerd"

Layout of a mirror root (see README "The mirror"):
``bin/<name>`` binaries; ``images/<name>-<tag>.oci.tar`` OCI archives; ``blobs/sha256/<hex>`` the
content-addressed store the registry serves; ``manifest.json``; ``keys/`` the build cache keys.
"""

from __future__ import annotations

import os
from pathlib import Path

from metalseed.mirror.manifest import Artifact, Manifest, load_manifest, sha256_file, verify
from metalseed.mirror.pins import Pin, Pins, load_pins

DEFAULT_ROOT = Path("/var/cache/metalseed/mirror")
ENV = "METALSEED_MIRROR"


def default_root() -> Path:
    """The mirror root: ``$METALSEED_MIRROR`` or /var/cache/metalseed/mirror."""
    env = os.environ.get(ENV)
    return Path(env) if env else DEFAULT_ROOT


def serve(root: Path | str, host: str, port: int) -> None:
    """Serve the mirror in the foreground until SIGTERM (see metalseed.mirror.server)."""
    from metalseed.mirror.server import serve as _serve

    _serve(root, host, port)


__all__ = [
    "DEFAULT_ROOT",
    "ENV",
    "Artifact",
    "Manifest",
    "Pin",
    "Pins",
    "default_root",
    "load_manifest",
    "load_pins",
    "serve",
    "sha256_file",
    "verify",
]
