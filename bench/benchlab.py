"""What the lab benchmarks share: a lab of their own that is always torn down, and ``--quick``.

A bench boots a lab under its own name (``--quick`` runs under another, ``bq-<bench>``, so a quick
run never tears down a full run's lab). The lab goes down when the bench ends, also on an error, a
Ctrl-C or a SIGTERM (a CI timeout): SIGTERM becomes a KeyboardInterrupt, so ``finally`` runs.
A lab named with ``--lab`` is the operator's: used as it is, never booted or torn down.
A booted lab is claimed first (the same session lock the lab tests take), so a second run under the
same name stops at once instead of tearing down the first one's machines.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from metalseed.lab import Lab

REPO = Path(__file__).resolve().parents[1]
# The edge benches put the lab tests' NodePort backend on the workers (tests/lab/nodeport_backend.py).
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))


def add_lab_arguments(ap: argparse.ArgumentParser, bench: str, own: str, shape: str) -> None:
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, one run: checks that the bench runs and that both sides "
                         "did the same work, not a measurement")
    ap.add_argument("--lab", help=f"use this lab (up, {shape}) instead of booting one")
    ap.add_argument("--name", help=f"name of the lab the bench boots (default {own}; "
                                   f"bq-{bench} with --quick)")
    ap.add_argument("--keep", action="store_true", help="leave the booted lab up afterwards")
    ap.set_defaults(own_name=own, quick_name=f"bq-{bench}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def claimed(lab: Lab) -> Iterator[None]:
    """Hold the lab's session lock while the bench owns it; SIGTERM tears down through finally."""
    lab.paths.root.parent.mkdir(parents=True, exist_ok=True)
    with open(lab.paths.root.parent / f".{lab.name}.session", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"lab {lab.name!r} is in use by another run; pass --name") from None
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def lab_for(args: argparse.Namespace, masters: int, workers: int) -> Iterator[Lab]:
    """The lab the bench runs on: ``--lab``'s, or one booted here and removed afterwards."""
    if args.lab:
        yield Lab(args.lab)
        return
    name = args.name or (args.quick_name if args.quick else args.own_name)
    lab = Lab(name)
    with claimed(lab):
        try:
            lab.down()  # leftovers of an interrupted run of this bench
            # A store as new as the machines: an old store's leaves name other machines' keys.
            shutil.rmtree(REPO / "pki" / name, ignore_errors=True)
            lab.up(masters=masters, workers=workers)
            yield lab
        finally:
            if not args.keep:
                lab.down()
                if args.quick:
                    shutil.rmtree(REPO / "pki" / name, ignore_errors=True)
