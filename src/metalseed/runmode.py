"""How this process was started by pyinfra's CLI, for the few decisions that depend on it."""

from __future__ import annotations

import sys
from pathlib import Path


def dry_run() -> bool:
    """True under ``pyinfra --dry``: nothing may be written, not even the operator's PKI store.

    pyinfra's state has no flag for it (a dry run is a run that stops after preparing), so the
    CLI's arguments are read.
    """
    return Path(sys.argv[0]).name.startswith("pyinfra") and "--dry" in sys.argv[1:]
