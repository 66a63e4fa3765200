"""One lab machine: its overlay root, its systemd-nspawn process, its end.

The root is an overlay of the host's ``/`` (read-only lower) and a per-machine upper dir. The upper
dir is the machine's disk: it outlives a crash of the machine and goes with ``down``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from metalseed.errors import LabError
from metalseed.lab import cgroup
from metalseed.lab.host import cmdline, pid_alive, reap
from metalseed.lab.state import LabPaths, MachineState

# Units the host image enables but a fresh lab machine must not start: the deploys under test
# install and start these themselves (after `systemctl unmask`), and timers only add noise.
MASKED_UNITS = (
    "etcd.service",
    "keepalived.service",
    "nginx.service",
    "haproxy.service",
    "postgresql.service",
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "man-db.timer",
)

# The host's /root/.bashrc runs `pyenv init` (~70 ms per SSH command); the machines get an empty
# /root instead (an opaque overlay dir), holding only this and the lab key.
PLAIN_BASHRC = "# metalseed lab machine: a plain root shell, on purpose.\n"
PLAIN_PROFILE = 'if [ -n "$BASH_VERSION" ] && [ -f ~/.bashrc ]; then . ~/.bashrc; fi\n'

# Directories that must not be on the overlay root: containerd's overlayfs snapshotter cannot
# stack on it ("failed to mount /run/...: invalid argument"), nor can the kubelet's volumes. Each
# is a per-machine host directory bound in; it survives a crash like the disk, and goes with `down`.
BIND_DIRS = ("/var/lib/containerd", "/var/lib/kubelet")

# nspawn's seccomp filter blocks these on purpose; containers need them: runc joins a session
# keyring ("unable to join session keyring: operation not permitted"), Cilium loads BPF programs.
SYSCALLS_ALLOWED = "@keyring bpf perf_event_open"

# keepalived adds the VIP over netlink and sends VRRP over raw sockets; containerd and the kubelet
# lower their OOM score (CAP_SYS_RESOURCE, not in nspawn's default set); CAP_BPF, CAP_PERFMON and
# CAP_IPC_LOCK are what a BPF datapath (Cilium) asks for.
CAPABILITIES = "CAP_NET_ADMIN,CAP_NET_RAW,CAP_SYS_RESOURCE,CAP_BPF,CAP_PERFMON,CAP_IPC_LOCK"

# Run inside every machine before anything else (a oneshot unit in sysinit.target):
# - nspawn mounts the v1 controllers read-only ("mkdir /sys/fs/cgroup/cpuset/default: read-only
#   file system"); in the machine's private cgroup namespace each one shows only the machine's
#   own subtree, so making them writable lets containerd/runc create cgroups there and nowhere else;
# - systemd as a container's PID 1 leaves / private; container runtimes want shared propagation;
# - there is no /dev/kmsg in a container; the kubelet opens it ("failed to create kubelet: open
#   /dev/kmsg: no such file or directory"). kind links it to /dev/console, which a machine
#   with --console=pipe does not have, and the host's kmsg needs CAP_SYSLOG ("Operation not
#   permitted"): /dev/null it is, so the kubelet's OOM watcher reads EOF and stops (OOM kills
#   in the lab are not reported as node events);
# - the kubelet sets vm.overcommit_memory=1, kernel.panic=10 and kernel.panic_on_oops=1 unless
#   they already have those values, and /proc/sys is read-only here ("Failed to start
#   ContainerManager: open /proc/sys/kernel/panic: read-only file system"). They are global:
#   setting them would change the shared host (panic_on_oops!), so each machine sees a file
#   with the kubelet's value bound over the entry instead; the host's values stay as they are;
# - /proc/sys/net is the machine's own network namespace's, so it may be writable as on a real
#   host: the Cilium agent sets per-interface sysctls of the links it creates ("failed to write
#   sysctl setting /proc/sys/net/ipv4/conf/cilium_host/accept_local: read-only file system").
CONTAINER_SETUP_UNIT = "metalseed-lab-containers.service"
CONTAINER_SETUP = """\
[Unit]
Description=metalseed lab: what containers need inside this machine
DefaultDependencies=no
Before=sysinit.target
ConditionVirtualization=container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for c in /sys/fs/cgroup/*; do \\
    ! mountpoint -q $$c || mount -o remount,bind,rw $$c || exit 1; done'
ExecStart=/bin/mount --make-rshared /
ExecStart=/bin/sh -c '[ -e /dev/kmsg ] || ln -sfn /dev/null /dev/kmsg'
ExecStart=/bin/sh -c 'd=/run/metalseed-lab/sysctl; mkdir -p $$d; \\
    for kv in vm/overcommit_memory=1 kernel/panic=10 kernel/panic_on_oops=1; do \\
    k=$${kv%%=*}; echo $${kv#*=} > $$d/$${k##*/}; \\
    mount --bind $$d/$${k##*/} /proc/sys/$$k || exit 1; done'
ExecStart=/bin/sh -c 'mount --bind /proc/sys/net /proc/sys/net && \
    mount -o remount,bind,rw /proc/sys/net'

[Install]
WantedBy=sysinit.target
"""

# Registry of the nspawn processes this Python process started: keeps the Popen objects alive
# (no "still running" warnings) and lets the killer reap them at once.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _opaque_dir(path: Path) -> None:
    """A directory in the upper layer that hides the host's directory of the same path."""
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def prepare_disk(
    paths: LabPaths, m: MachineState, hosts: str, authorized_key: str, hide: list[Path]
) -> None:
    """Write the machine's own files into its upper dir (only before the overlay is mounted)."""
    upper = paths.upper(m.name)
    for d in (upper, paths.work(m.name), paths.rootfs(m.name)):
        d.mkdir(parents=True, exist_ok=True)
    etc = upper / "etc"
    (etc / "systemd" / "system").mkdir(parents=True, exist_ok=True)
    (etc / "hostname").write_text(f"{m.name}\n")
    (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
    (etc / "hosts").write_text(hosts)
    for unit in MASKED_UNITS:
        link = etc / "systemd" / "system" / unit
        if not link.is_symlink():
            link.symlink_to("/dev/null")
    units = etc / "systemd" / "system"
    (units / CONTAINER_SETUP_UNIT).write_text(CONTAINER_SETUP)
    wants = units / "sysinit.target.wants"
    wants.mkdir(exist_ok=True)
    if not (wants / CONTAINER_SETUP_UNIT).is_symlink():
        (wants / CONTAINER_SETUP_UNIT).symlink_to(f"/etc/systemd/system/{CONTAINER_SETUP_UNIT}")
    for target in BIND_DIRS:
        paths.bind_source(m.name, target).mkdir(parents=True, exist_ok=True)
    # The container must not see the lab's own files (its key, other machines' disks).
    for h in hide:
        _opaque_dir(upper / h.relative_to("/"))
    root_home = upper / "root"
    _opaque_dir(root_home)
    root_home.chmod(0o700)
    (root_home / ".bashrc").write_text(PLAIN_BASHRC)
    (root_home / ".profile").write_text(PLAIN_PROFILE)
    ssh_dir = root_home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(authorized_key)
    keys.chmod(0o600)


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def mounts_under(prefix: Path) -> list[str]:
    pre = str(prefix).rstrip("/") + "/"
    with open("/proc/self/mounts") as f:
        found = [line.split()[1] for line in f if line.split()[1].startswith(pre)]
    # Deepest first, so nested mounts go before their parents.
    return sorted(found, key=len, reverse=True)


def mount_root(paths: LabPaths, name: str) -> None:
    root = paths.rootfs(name)
    if is_mounted(root):
        return
    opts = f"lowerdir=/,upperdir={paths.upper(name)},workdir={paths.work(name)}"
    proc = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(root)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise LabError(f"cannot mount the overlay root of {name}: {proc.stderr.strip()}")


def umount(path: str) -> None:
    for _ in range(50):
        proc = subprocess.run(["umount", path], capture_output=True, text=True)
        if proc.returncode == 0 or not is_mounted(Path(path)):
            return
        time.sleep(0.1)
    raise LabError(f"cannot unmount {path}: {proc.stderr.strip()}")


def boot(
    lab: str, paths: LabPaths, m: MachineState, layout: cgroup.Layout
) -> int:
    """Start systemd-nspawn detached; returns its PID. systemd boots inside."""
    cgroup.create(layout, lab, m.name)
    # nspawn cannot remove its propagation dir when /run is not a tmpfs (this host: "Attempted to
    # remove disk file system under /run/systemd/nspawn/propagate/NAME"), so one may be left from
    # an earlier boot of this machine; the name is this machine's own, so a stale one goes.
    shutil.rmtree(NSPAWN_RUN / "propagate" / m.netns, ignore_errors=True)
    argv = [
        "systemd-nspawn",
        "--quiet",
        "-D", str(paths.rootfs(m.name)),
        "-b",
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path=/run/netns/{m.netns}",
        f"--capability={CAPABILITIES}",
        f"--system-call-filter={SYSCALLS_ALLOWED}",
        *(f"--bind={paths.bind_source(m.name, t)}:{t}" for t in BIND_DIRS),
        # The machine name keys nspawn's host-side files (/run/systemd/nspawn/propagate/NAME):
        # it must be unique on the host, so it is the lab-prefixed netns name, not the hostname.
        "-M", m.netns,
        "--hostname", m.name,
        "--console=pipe",
    ]
    try:
        with open(paths.console_log(m.name), "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no signal from our terminal reaches the machine
                preexec_fn=lambda: cgroup.join_self(layout, lab, m.name),
                env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                     "LANG": "C.UTF-8"},
            )
    except (OSError, subprocess.SubprocessError) as e:
        raise LabError(f"cannot start systemd-nspawn for {m.name}: {e}") from e
    _CHILDREN[proc.pid] = proc
    return proc.pid


def find_leader(nspawn_pid: int, timeout: float = 60) -> int:
    """The container's PID 1 as seen from the host: nspawn's child that runs systemd.

    Returns as soon as it runs; the deadline is long because at a load average of 200 (five
    engineers' labs and Go builds on 2 cores) nspawn was seen taking more than 5 s to get there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        for k in kids:
            argv = cmdline(k)
            if argv and argv[0].endswith("/systemd"):
                return k
        if not pid_alive(nspawn_pid):
            break
        time.sleep(0.02)
    raise LabError(f"systemd-nspawn (PID {nspawn_pid}) did not start systemd")


NSPAWN_RUN = Path("/run/systemd/nspawn")


def remove_nspawn_leftovers(paths: LabPaths, m: MachineState) -> None:
    """Remove what a SIGKILLed nspawn cannot: its propagation dir and its image lock file.

    Call while the overlay is still mounted: the lock file is named after the root's inode.
    """
    shutil.rmtree(NSPAWN_RUN / "propagate" / m.netns, ignore_errors=True)
    root = paths.rootfs(m.name)
    if is_mounted(root):
        st = os.stat(root)
        with contextlib.suppress(FileNotFoundError):
            (NSPAWN_RUN / "locks" / f"inode-{st.st_dev}:{st.st_ino}").unlink()


def is_ours(pid: int | None, paths: LabPaths, name: str) -> bool:
    """Guard against PID reuse: a recorded nspawn PID counts only if it still runs our root."""
    if not pid or not pid_alive(pid):
        return False
    argv = cmdline(pid)
    return bool(argv) and "systemd-nspawn" in argv[0] and str(paths.rootfs(name)) in argv


def kill(lab: str, name: str, layout: cgroup.Layout, recorded: list[int]) -> None:
    """End the whole machine at once: freeze, SIGKILL every process of it, thaw, wait.

    Freezing first means no process of the machine runs (or forks) between the first and the
    last kill, so the machine dies as one. Only PIDs found in the machine's own cgroups (or
    recorded by the lab and verified by the caller) are signalled.
    """
    victims = cgroup.pids(layout, lab, name) | {p for p in recorded if pid_alive(p)}
    if not victims:
        return
    frozen = False
    try:
        cgroup.set_frozen(layout, lab, name, True)
        frozen = True
    except LabError:
        pass  # no freezer: SIGKILL alone still ends the container (its PID 1 goes first)
    for _ in range(3):
        for pid in sorted(victims):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        victims = cgroup.pids(layout, lab, name) - victims
        if not victims:
            break
    if frozen:
        cgroup.set_frozen(layout, lab, name, False)
    # SIGKILLed processes still take their time to exit when the host is loaded: a Kubernetes
    # machine's kube-apiserver needed more than 10 s at a load average of 200 here.
    deadline = time.monotonic() + 60
    while True:
        for pid in list(_CHILDREN):
            if _CHILDREN[pid].poll() is not None:
                del _CHILDREN[pid]
        for pid in recorded:
            reap(pid)
        left = {p for p in cgroup.pids(layout, lab, name) | set(recorded) if pid_alive(p)}
        if not left:
            return
        if time.monotonic() > deadline:
            raise LabError(f"processes of {name} did not exit: {sorted(left)}")
        time.sleep(0.02)
