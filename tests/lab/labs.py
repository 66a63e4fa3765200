"""Booting labs for tests: :func:`booted_lab` (3 masters, 2 workers, removed at the end whatever
happens) and :func:`pyinfra_runner`; the fixtures that use them are in conftest.py and kube.py."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from metalseed.lab import Lab

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventory" / "lab.py"
TEST_LAB = os.environ.get("METALSEED_TEST_LAB") or "test"
MASTERS = 3
WORKERS = 2


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return "the lab needs Linux"
    if os.geteuid() != 0:
        return "the lab needs root"
    if not shutil.which("systemd-nspawn"):
        return "the lab needs systemd-nspawn (apt-get install systemd-container)"
    return None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


_BOOTED: dict[str, Lab] = {}
# Why lab tests failed (tests/lab/conftest.py), for the run's summary (tests/conftest.py).
FAILED: list[str] = []


def release(fixture: str) -> None:
    """Take down, before its fixture ends, the lab booted for ``fixture`` (its fixture's own
    teardown then finds it down: nothing to do)."""
    the_lab = _BOOTED.pop(fixture, None)
    if the_lab is not None:
        the_lab.down()


@contextmanager
def booted_lab(name: str, masters: int = MASTERS, workers: int = WORKERS,
               datastore: int = 0, tenant_workers: int = 0,
               fixture: str | None = None) -> Iterator[Lab]:
    """A lab of 3 masters and 2 workers (or the shape given) named ``name``, with a PKI store as
    new as its machines, ``$METALSEED_LAB`` pointing at it while it lives, removed at the end
    whatever happens (or earlier, by :func:`release` of ``fixture``)."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    the_lab = Lab(name)
    the_lab.paths.root.parent.mkdir(parents=True, exist_ok=True)
    session_lock = open(the_lab.paths.root.parent / f".{name}.session", "w")  # noqa: SIM115
    try:
        fcntl.flock(session_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        session_lock.close()
        pytest.fail(f"lab {name!r} is in use by another pytest session; "
                    "set METALSEED_TEST_LAB to another name")
    previous = os.environ.get("METALSEED_LAB")
    os.environ["METALSEED_LAB"] = name
    # CI timeouts and `timeout` send SIGTERM, which would end pytest without teardown and leave
    # the lab running: make it an interrupt, which pytest answers by tearing fixtures down.
    previous_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        # A session that died (killed pytest, host crash) may have left its lab: start clean,
        # with a PKI store of its own as new as its machines.
        the_lab.down()
        shutil.rmtree(REPO / "pki" / name, ignore_errors=True)
        the_lab.up(masters, workers, datastore=datastore, tenant_workers=tenant_workers)
        if fixture:
            _BOOTED[fixture] = the_lab
        yield the_lab
    finally:
        if fixture:
            _BOOTED.pop(fixture, None)
        the_lab.down()
        signal.signal(signal.SIGTERM, previous_term)
        session_lock.close()
        if previous is None:
            os.environ.pop("METALSEED_LAB", None)
        else:
            os.environ["METALSEED_LAB"] = previous


def pyinfra_runner(lab: Lab) -> Callable[..., subprocess.CompletedProcess[str]]:
    pyinfra = Path(sys.executable).with_name("pyinfra")

    def run(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[
        str
    ]:
        argv = [str(pyinfra), "-y", str(LAB_INVENTORY), *args]
        env = dict(os.environ, METALSEED_LAB=lab.name)
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            # pyinfra ends with its results table: the lines that say what went wrong come first.
            out = (proc.stdout + proc.stderr).splitlines()
            bad = [line for line in out if any(w in line.lower() for w in (
                "error", "failed", "exception", "traceback", "timed out", "did not"))]
            pytest.fail(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                        + "\n".join(bad[-60:]) + f"\n...\n{proc.stdout[-3000:]}\n"
                        + proc.stderr[-3000:])
        return proc

    return run
