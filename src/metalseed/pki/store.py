"""The on-disk PKI store: ``pki/<cluster>/`` laid out like /etc/kubernetes/pki.

Writes are atomic (temporary file, then rename) and only happen when content changes, so a rerun
touches no byte. Keys are 0600, directories 0700.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from metalseed.errors import PKIError


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def cert_path(self, id: str) -> Path:
        return self.root / f"{id}.crt"

    def key_path(self, id: str) -> Path:
        return self.root / f"{id}.key"

    def read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise PKIError(f"cannot read {path}: {e.strerror}") from e

    def read_pair(self, id: str) -> tuple[bytes | None, bytes | None]:
        return self.read(self.cert_path(id)), self.read(self.key_path(id))

    def write(self, path: Path, data: bytes, secret: bool) -> bool:
        """Write ``data`` atomically; returns False (and touches nothing) if it is already there."""
        if self.read(path) == data:
            return False
        self._mkdirs(path.parent)
        mode = 0o600 if secret else 0o644
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                os.fchmod(fd, mode)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            raise PKIError(f"cannot write {path}: {e.strerror}") from e
        return True

    def write_pair(self, id: str, cert: bytes, key: bytes) -> None:
        # Key first: a crash in between leaves a mismatched pair that inspection reports,
        # never a new certificate beside a stale key that could be mistaken for valid.
        self.write(self.key_path(id), key, secret=True)
        self.write(self.cert_path(id), cert, secret=False)

    def _mkdirs(self, path: Path) -> None:
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir(mode=0o700)
            os.chmod(d, 0o700)  # mkdir's mode is filtered by umask
