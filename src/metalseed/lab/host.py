"""Host side helpers: running commands, progress messages, prerequisites."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

from metalseed.errors import LabError

# Lab machines get their programs from the host's root through the overlay, so whatever a deploy
# runs in the lab must be installed here: the lab's own tools plus what the deploys manage.
LAB_PACKAGES = (
    "systemd-container",
    "iproute2",
    "openssh-server",
    "openssh-client",
    "iputils-ping",
)
DEPLOY_PACKAGES = ("etcd-server", "etcd-client", "keepalived", "nginx")


def say(message: str) -> None:
    """Progress for long steps goes to stderr, so stdout stays for data (status tables)."""
    print(f"lab: {message}", file=sys.stderr, flush=True)


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 30,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a host command; failures become LabError naming the command and its stderr."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, input=input
        )
    except FileNotFoundError as e:
        raise LabError(f"{argv[0]}: command not found") from e
    except subprocess.TimeoutExpired as e:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:g} s") from e
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {detail}")
    return proc


def missing_packages(packages: Sequence[str]) -> list[str]:
    proc = run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\\n", *packages], check=False
    )
    installed = {
        line.split()[0]
        for line in proc.stdout.splitlines()
        if line.split()[1:] == ["installed"]
    }
    return [p for p in packages if p not in installed]


def check_host(install: bool = True) -> None:
    """Fail early with a clear message, or install what is missing with apt-get."""
    if platform.system() != "Linux":
        raise LabError(f"the lab needs Linux with systemd-nspawn; this is {platform.system()}")
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, overlay mounts, systemd-nspawn);"
                       " run it with sudo")
    if shutil.which("dpkg-query") and shutil.which("apt-get"):
        missing = missing_packages(LAB_PACKAGES + DEPLOY_PACKAGES)
        if missing and install:
            say(f"installing host packages the lab needs: {' '.join(missing)}")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            started = time.monotonic()
            proc = subprocess.run(
                ["apt-get", "install", "-y", "--no-install-recommends", *missing],
                env=env, capture_output=True, text=True,
            )
            if proc.returncode != 0:
                raise LabError(f"apt-get install {' '.join(missing)} failed:"
                               f" {proc.stderr.strip()[-2000:]}")
            say(f"installed in {time.monotonic() - started:.0f} s")
        elif missing:
            raise LabError(f"missing host packages: {' '.join(missing)}")
    for tool in ("systemd-nspawn", "ip", "ssh", "ssh-keygen"):
        if not shutil.which(tool):
            raise LabError(f"{tool} not found: install systemd-container, iproute2 and "
                           "openssh-client (Debian/Ubuntu: apt-get install ...)")


CAP_SYS_RESOURCE = 24

# Every lab machine's systemd, journald, logind, dbus and containerd take inotify instances from
# ONE budget: root's on this host (no user namespaces), 128 by default. A few labs exhaust it, and
# then containerd's CRI plugin fails to load ("failed to create fsnotify watcher: too many open
# files") and machines' systemd fails in odd ways. Raised at `up` (never lowered), as kind advises.
INOTIFY_MINIMUMS = {"max_user_instances": 8192, "max_user_watches": 524288}


def raise_inotify_limits() -> None:
    for key, minimum in INOTIFY_MINIMUMS.items():
        path = f"/proc/sys/fs/inotify/{key}"
        try:
            with open(path) as f:
                current = int(f.read())
            if current < minimum:
                with open(path, "w") as f:
                    f.write(str(minimum))
                say(f"raised fs.inotify.{key} from {current} to {minimum} (lab machines share it)")
        except (OSError, ValueError) as e:
            raise LabError(f"cannot raise fs.inotify.{key} to {minimum}: {e}") from e


def has_capability(cap: int) -> bool:
    """Whether this process's bounding set holds ``cap``: a lab machine can get no capability
    the host lacks (some VM sandboxes withhold CAP_SYS_RESOURCE from root)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def pid_alive(pid: int | None) -> bool:
    """True when ``pid`` runs (a zombie counts as dead: it only waits to be reaped)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def reap(pid: int) -> None:
    """Collect ``pid`` if it is our child, so no zombie stays behind in a long-lived process."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
