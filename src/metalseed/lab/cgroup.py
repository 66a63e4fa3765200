"""Per-machine cgroups: where a machine's processes are found, frozen and counted.

systemd-nspawn without a host systemd (``--keep-unit --register=no``) builds the container's tree
(``payload/``, ``supervisor/``) under the cgroup it was started in. Started from the same cgroup, two
machines would share one tree and each container's systemd would kill the other's services. So each
nspawn is started inside a cgroup of its own in EVERY hierarchy (every v1 controller, the named
systemd one and the unified one): nspawn gives the container a private cgroup namespace rooted
there, so the container's containerd/runc (and later its kubelet) build ``/k8s.io/...`` or
``/kubepods/...`` inside the machine's own cgroup in each controller, never in a tree that other
machines share. Those nested cgroups are removed with the machine, deepest first.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from metalseed.errors import LabError

CGROUP_ROOT = Path("/sys/fs/cgroup")

# Real-time CPU time (cpu.rt_runtime_us per cpu.rt_period_us, cgroup v1 with RT group
# scheduling) for the shared parent, each lab and each machine: 6 labs of 10 machines. A new v1
# cpu cgroup gets none, so without a budget no process of a machine may run SCHED_RR (EPERM), and
# keepalived, starved on a loaded host, missed its adverts for 3 s: a backup took the VIP for
# 50 ms while the holder was healthy, and a connection through the VIP was reset.
# A machine that spends its budget is throttled until its period ends: with 10 ms per 1 s, up to
# 990 ms with its adverts unsent, three times what fast failover allows (VRRP adverts every
# 0.1 s). Seen: the holder's keepalived using up to 5.9 ms of real-time CPU in a second at load
# 10, and in CI two backups taking the VIP for 0.5 s each (likely this; not reproduced). So a
# machine's period is 100 ms, and its budget 1.5 ms in each: a real-time busy loop inside a
# machine, throttled again and again, was off the CPU for 99 ms at a time, 297 ms at worst (with
# 10 ms per second: 990 ms).
RT_BUDGET = ((900_000, 1_000_000), (150_000, 1_000_000), (1_500, 100_000))
"""(runtime, period) in µs for the shared parent, a lab, a machine."""


@dataclass(frozen=True)
class Layout:
    join: tuple[Path, ...]
    """Hierarchy roots nspawn is started inside: every mounted cgroup hierarchy."""
    freezer: Path | None
    """cgroup v1 freezer root; None on a pure cgroup v2 host (cgroup.freeze is used instead)."""
    unified: Path | None


def _mounts() -> list[tuple[str, str, set[str]]]:
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            _dev, where, fstype, opts, *_ = line.split()
            if fstype in ("cgroup", "cgroup2"):
                out.append((where, fstype, set(opts.split(","))))
    return out


def detect() -> Layout:
    join: list[Path] = []
    freezer = unified = None
    for where, fstype, opts in _mounts():
        p = Path(where)
        if fstype == "cgroup2":
            unified = p
        elif "freezer" in opts:
            freezer = p
        join.append(p)
    if not join:
        raise LabError("no cgroup hierarchy is mounted under /sys/fs/cgroup")
    return Layout(tuple(join), freezer, unified)


def machine_dirs(layout: Layout, lab: str, machine: str) -> list[Path]:
    return [root / "metalseed" / lab / machine for root in layout.join]


def lab_dirs(layout: Layout, lab: str) -> list[Path]:
    return [root / "metalseed" / lab for root in layout.join]


def create(layout: Layout, lab: str, machine: str) -> None:
    for root, d in zip(layout.join, machine_dirs(layout, lab, machine), strict=True):
        d.mkdir(parents=True, exist_ok=True)
        if (root / "cpuset.cpus").exists():
            _inherit_cpuset(root, d)
        if (root / "cpu.rt_runtime_us").exists():
            _grant_rt(root, d)


def _grant_rt(root: Path, leaf: Path) -> None:
    """Give each level (shared parent, lab, machine) its real-time budget, parents first (a
    child may not hold more than its parent). When other labs hold the shared budget the write
    fails and the machine runs without real time, as before: slower to recover, not broken."""
    level = root
    for part, (runtime, period) in zip(leaf.relative_to(root).parts, RT_BUDGET, strict=True):
        level = level / part
        knob = level / "cpu.rt_runtime_us"
        if int(knob.read_text()) == 0:
            try:
                # The period first: with no runtime yet, any period is schedulable.
                (level / "cpu.rt_period_us").write_text(str(period))
                knob.write_text(str(runtime))
            except OSError:
                return


def _inherit_cpuset(root: Path, leaf: Path) -> None:
    """A new v1 cpuset cgroup starts with no CPUs and no memory nodes, and a task cannot join it
    ("No space left on device"): give each level the CPUs and nodes of its parent."""
    level = root
    for part in leaf.relative_to(root).parts:
        parent, level = level, level / part
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if not (level / knob).read_text().strip():
                (level / knob).write_text((parent / knob).read_text())


def join_self(layout: Layout, lab: str, machine: str) -> None:
    """Move the calling process into the machine's cgroups (run in the child before exec)."""
    pid = str(os.getpid())
    for d in machine_dirs(layout, lab, machine):
        with open(d / "cgroup.procs", "w") as f:
            f.write(pid)


def pids(layout: Layout, lab: str, machine: str) -> set[int]:
    """Every process of the machine (nspawn and the whole container), from its cgroup trees."""
    found: set[int] = set()
    for d in machine_dirs(layout, lab, machine):
        for dirpath, _dirs, files in os.walk(d):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(dirpath, "cgroup.procs")) as f:
                        found.update(int(x) for x in f.read().split())
                except OSError:
                    continue
    return found


def _freeze_file(layout: Layout, lab: str, machine: str) -> tuple[Path, str, str]:
    if layout.freezer is not None:
        return layout.freezer / "metalseed" / lab / machine / "freezer.state", "FROZEN", "THAWED"
    if layout.unified is not None:
        return layout.unified / "metalseed" / lab / machine / "cgroup.freeze", "1", "0"
    raise LabError("no freezer: neither cgroup v1 freezer nor cgroup v2 is mounted")


def set_frozen(layout: Layout, lab: str, machine: str, frozen: bool) -> None:
    path, on, off = _freeze_file(layout, lab, machine)
    try:
        path.write_text(on if frozen else off)
    except OSError as e:
        raise LabError(f"cannot {'freeze' if frozen else 'thaw'} {machine}: {e}") from e
    if frozen and path.name == "freezer.state":
        # v1 freezing is asynchronous (FREEZING until every task stopped): wait for it.
        deadline = time.monotonic() + 5
        while path.read_text().strip() != "FROZEN":
            if time.monotonic() > deadline:
                raise LabError(f"{machine} did not freeze within 5 s")
            time.sleep(0.01)


def is_frozen(layout: Layout, lab: str, machine: str) -> bool:
    try:
        path, on, _ = _freeze_file(layout, lab, machine)
        return path.read_text().strip() == on
    except (OSError, LabError):
        return False


def remove(layout: Layout, lab: str, machine: str | None = None) -> None:
    """Remove a machine's cgroups (or the whole lab's), deepest first, once they are empty."""
    tops = machine_dirs(layout, lab, machine) if machine else lab_dirs(layout, lab)
    deadline = time.monotonic() + 5
    for top in tops:
        if not top.exists():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            while True:
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    # Busy while the last processes finish exiting.
                    if time.monotonic() > deadline:
                        raise LabError(f"cannot remove cgroup {dirpath}: {e}") from e
                    time.sleep(0.05)
    # Drop the shared parents when no other lab uses them.
    for top in tops:
        for parent in (top.parent, top.parent.parent):
            if parent.name in (lab, "metalseed"):
                with contextlib.suppress(OSError):
                    parent.rmdir()
