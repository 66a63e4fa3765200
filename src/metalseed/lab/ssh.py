"""SSH from the host into lab machines with the lab's key (OpenSSH client)."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from metalseed.errors import LabError
from metalseed.lab.host import run

# Up to the end of SSH's banner exchange: at load averages of 150-200 a machine's sshd took over 2 s.
CONNECT_TIMEOUT = 10.0


def ssh_options(key: Path, connect_timeout: float = CONNECT_TIMEOUT) -> list[str]:
    # -F /dev/null: the operator's ~/.ssh/config must not redirect or slow down lab connections.
    # Host keys come from the host's image and are the same on every machine: not checked.
    return [
        "-F", "/dev/null",
        "-i", str(key),
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR",
        # The post-quantum default KEX costs ~60 ms per connection; lab traffic is not secret.
        "-o", "KexAlgorithms=curve25519-sha256",
        "-o", f"ConnectTimeout={max(1, round(connect_timeout))}",
    ]


def ssh_argv(
    key: Path, address: str, command: str | Sequence[str] | None, tty: bool = False
) -> list[str]:
    argv = ["ssh", *ssh_options(key)]
    if tty:
        argv.append("-t")
    argv.append(f"root@{address}")
    if command is not None:
        argv.append(command if isinstance(command, str) else shlex.join(command))
    return argv


def ssh_run(
    key: Path,
    address: str,
    command: str | Sequence[str],
    timeout: float = 30,
    check: bool = False,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on a machine; returns the completed process (exit 255: SSH failed)."""
    argv = ssh_argv(key, address, command)
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        raise LabError(f"ssh root@{address} {command!r}: no answer within {timeout:g} s") from e
    if check and proc.returncode != 0:
        raise LabError(f"ssh root@{address} {command!r} failed (exit {proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def make_key(path: Path, comment: str) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
