"""The artifact mirror, served to a lab's machines on its bridge address.

``up`` starts ``metalseed mirror serve`` (files under ``/files/``, ``/manifest.json`` and a read-only
OCI registry under ``/v2/``) on ``<bridge address>:MIRROR_PORT``, the only host address the
machines can reach; ``down`` stops it by the PID recorded in the lab state (and in ``mirror.pid``
beside it, so a lab whose state file was lost still finds its server).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from metalseed.errors import LabError
from metalseed.lab.host import cmdline, pid_alive, reap
from metalseed.lab.state import LabPaths

MIRROR_PORT = 5080
MANIFEST = "manifest.json"

# The servers this process started: kept so that they are reaped (no zombie, no warning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def url(address: ipaddress.IPv4Address) -> str:
    return f"http://{address}:{MIRROR_PORT}"


def pid_file(paths: LabPaths) -> Path:
    return paths.root / "mirror.pid"


def log_file(paths: LabPaths) -> Path:
    return paths.root / "mirror.log"


def argv(root: Path, address: ipaddress.IPv4Address) -> list[str]:
    return [sys.executable, "-m", "metalseed.cli", "mirror", "serve", "--root", str(root),
            "--listen", f"{address}:{MIRROR_PORT}"]


def start(paths: LabPaths, root: Path, address: ipaddress.IPv4Address,
          timeout: float = 15) -> int:
    """Start the server detached and wait until it answers; returns its PID."""
    with open(log_file(paths), "ab") as log:
        try:
            proc = subprocess.Popen(
                argv(root, address), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        except OSError as e:
            raise LabError(f"cannot start the mirror server: {e}") from e
    _CHILDREN[proc.pid] = proc
    pid_file(paths).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"the mirror server exited ({proc.returncode}):\n{_tail(paths)}")
        with contextlib.suppress(OSError), socket.create_connection((str(address), MIRROR_PORT), 0.2):
            return proc.pid
        time.sleep(0.05)
    stop(paths, [proc.pid])
    raise LabError(f"the mirror server did not listen on {address}:{MIRROR_PORT} within "
                   f"{timeout:g} s:\n{_tail(paths)}")


def is_ours(pid: int, paths: LabPaths) -> bool:
    """Guard against PID reuse: only a mirror server started with this lab's log counts.

    The command line alone names the root and address; the open log file ties it to this lab.
    """
    if not pid_alive(pid):
        return False
    argv_ = cmdline(pid)
    if "mirror" not in argv_ or "serve" not in argv_:
        return False
    try:
        return os.path.samefile(os.readlink(f"/proc/{pid}/fd/1"), log_file(paths))
    except OSError:
        return False


def recorded_pids(paths: LabPaths, state_pid: int | None) -> list[int]:
    pids = [state_pid] if state_pid else []
    with contextlib.suppress(OSError, ValueError):
        pids.append(int(pid_file(paths).read_text().strip()))
    return sorted(set(pids))


def stop(paths: LabPaths, pids: list[int]) -> None:
    """SIGTERM (then SIGKILL) each recorded PID that is still this lab's server."""
    ours = [p for p in pids if is_ours(p, paths)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for pid in ours:
                child = _CHILDREN.get(pid)
                if child is None:
                    reap(pid)
                elif child.poll() is not None:
                    del _CHILDREN[pid]
            if not any(pid_alive(p) for p in ours):
                with contextlib.suppress(FileNotFoundError):
                    pid_file(paths).unlink()
                return
            time.sleep(0.02)
    raise LabError(f"the mirror server (PID {ours}) did not exit")


def _tail(paths: LabPaths, lines: int = 15) -> str:
    try:
        text = log_file(paths).read_text(errors="replace")
    except OSError:
        return "    (no log)"
    return "\n".join("    " + ln for ln in text.splitlines()[-lines:])
