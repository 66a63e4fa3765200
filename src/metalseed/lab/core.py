"""The lab: up, down, status, SSH and faults of a named set of machines on this host."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from metalseed.errors import LabError
from metalseed.lab import cgroup, machine, net
from metalseed.lab import mirror as mirrormod
from metalseed.lab import plan as planmod
from metalseed.lab import state as statemod
from metalseed.lab.host import (
    CAP_SYS_RESOURCE,
    check_host,
    has_capability,
    pid_alive,
    raise_inotify_limits,
    say,
)
from metalseed.lab.ssh import make_key, ssh_run
from metalseed.lab.state import LabPaths, LabState, MachineState

READY_STATES = ("running", "degraded")


@dataclass(frozen=True)
class MachineStatus:
    name: str
    role: str
    address: ipaddress.IPv4Address
    state: str
    """running | booting | frozen | cut | down"""
    pid: int | None


class Lab:
    """A named lab. Several labs live side by side: each has its own dir, bridge, /24 and netns.

    >>> lab = Lab("lab")
    >>> lab.up(masters=3, workers=2)      # doctest: +SKIP
    >>> lab.ssh("m1", "hostname").stdout  # doctest: +SKIP
    """

    def __init__(
        self,
        name: str = planmod.DEFAULT_NAME,
        base_dir: Path | None = None,
        progress: Callable[[str], None] | None = say,
        mirror_root: Path | None = None,
    ) -> None:
        """``mirror_root``: the mirror ``up`` serves (default: the mirror's ``default_root()``)."""
        self.name = planmod.check_lab_name(name)
        self.mirror_root = mirror_root
        self.paths: LabPaths = statemod.lab_paths(name, base_dir)
        self._say = progress or (lambda _msg: None)
        self._layout: cgroup.Layout | None = None

    # ---- state ----------------------------------------------------------------------------

    @property
    def layout(self) -> cgroup.Layout:
        if self._layout is None:
            self._layout = cgroup.detect()
        return self._layout

    def state(self) -> LabState | None:
        return statemod.load(self.paths)

    def require_state(self) -> LabState:
        s = self.state()
        if s is None:
            raise LabError(f"lab {self.name!r} is not up: run `metalseed lab up --name {self.name}`")
        return s

    @property
    def machines(self) -> tuple[MachineState, ...]:
        return self.require_state().machines

    @property
    def vip(self) -> ipaddress.IPv4Address:
        return self.require_state().vip

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return self.require_state().subnet

    @property
    def key(self) -> Path:
        return self.paths.key

    def address(self, name: str) -> ipaddress.IPv4Address:
        return self.require_state().machine(name).address

    def is_running(self, name: str) -> bool:
        m = self.require_state().machine(name)
        return machine.is_ours(m.nspawn_pid, self.paths, m.name)

    def is_up(self) -> bool:
        s = self.state()
        return s is not None and all(
            machine.is_ours(m.nspawn_pid, self.paths, m.name) for m in s.machines
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer per lab at a time (a test's fault and an operator's `down`, say)."""
        lock_dir = self.paths.root.parent
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f".{self.name}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    # ---- up / down ------------------------------------------------------------------------

    def up(
        self,
        masters: int = planmod.DEFAULT_MASTERS,
        workers: int = planmod.DEFAULT_WORKERS,
        subnet: ipaddress.IPv4Network | str | None = None,
        timeout: float = 60,
        datastore: int = 0,
        tenant_workers: int = 0,
    ) -> LabState:
        """Boot the lab and wait until every machine answers SSH with systemd running.

        Idempotent: a lab already up with this shape is left as it is. Leftovers of a lab that
        died (host crash, killed CLI) are cleaned up first.
        """
        net_ = planmod.parse_subnet(subnet) if isinstance(subnet, str) else subnet
        p = planmod.plan_lab(self.name, masters, workers, net_, datastore, tenant_workers)
        check_host()
        raise_inotify_limits()
        with self._locked():
            old = self.state()
            if old is not None and self.is_up():
                shape = (len(old.masters), len(old.workers), len(old.datastore),
                         len(old.tenant_workers))
                if shape == (masters, workers, datastore, tenant_workers) and (
                        net_ is None or net_ == old.subnet):
                    self._say(f"{self.name}: already up ({masters} masters, {workers} workers"
                              + (f", {datastore} datastore" if datastore else "")
                              + (f", {tenant_workers} tenant workers" if tenant_workers else "")
                              + ")")
                    return old
                raise LabError(
                    f"lab {self.name!r} is up with {shape[0]} masters, {shape[1]} workers,"
                    f" {shape[2]} datastore machines and {shape[3]} tenant workers on"
                    f" {old.subnet}; run `metalseed lab down --name {self.name}` first"
                )
            if old is not None or self._leftovers():
                self._say(f"{self.name}: cleaning up what a previous run left behind")
                self._teardown(old)
            clash = planmod.overlaps(p.subnet, net.host_networks())
            if clash:
                raise LabError(
                    f"lab subnet {p.subnet} overlaps networks this host already routes"
                    f" ({', '.join(clash)}); pass another /24 with --subnet"
                )
            try:
                return self._boot_all(p, timeout)
            except BaseException:
                self._say(f"{self.name}: up failed; removing what was started")
                self._teardown(self.state())
                raise

    def _boot_all(self, p: planmod.LabPlan, timeout: float) -> LabState:
        started = time.monotonic()
        extra = f" + {len(p.datastore)} datastore" if p.datastore else ""
        extra += f" + {len(p.tenant_workers)} tenant workers" if p.tenant_workers else ""
        self._say(f"{self.name}: booting {len(p.masters)} masters + {len(p.workers)} workers"
                  f"{extra} on {p.subnet} (VIP {p.vip})")
        self.paths.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.paths.root, 0o700)
        make_key(self.paths.key, f"metalseed-lab-{self.name}")
        s = dataclasses.replace(statemod.state_from_plan(p, self.paths.key),
                                oom_score_adj_restricted=not has_capability(CAP_SYS_RESOURCE))
        statemod.save(self.paths, s)  # first, so that `down` finds a half-made lab too
        net.create_bridge(p.bridge, p.bridge_address, p.subnet.prefixlen,
                          planmod.mac_address(self.name, p.bridge))
        s = self._serve_mirror(s)
        pubkey = self.paths.key.with_suffix(".pub").read_text()
        hosts = planmod.hosts_file(p.machines)
        for m in s.machines:
            net.create_machine_net(m.netns, m.veth, p.bridge, m.address, p.subnet.prefixlen,
                                   planmod.mac_address(self.name, m.name))
            machine.prepare_disk(self.paths, m, hosts, pubkey, hide=[self.paths.root.parent])
            machine.mount_root(self.paths, m.name)
            s = s.with_machine(self._start(m))
        statemod.save(self.paths, s)
        self._wait_ready(s, [m.name for m in s.machines], timeout)
        self._say(f"{self.name}: {len(s.machines)} machines ready in "
                  f"{time.monotonic() - started:.1f} s")
        return s

    def _serve_mirror(self, s: LabState) -> LabState:
        from metalseed.mirror import default_root

        root = self.mirror_root or default_root()
        if not (root / mirrormod.MANIFEST).is_file():
            self._say(f"{self.name}: no mirror manifest at {root / mirrormod.MANIFEST}: the machines"
                      " get no artifact mirror (run `metalseed mirror build` first)")
            return s
        pid = mirrormod.start(self.paths, root, s.bridge_address)
        s = dataclasses.replace(s, mirror_root=root, mirror_pid=pid,
                                mirror_url=mirrormod.url(s.bridge_address))
        statemod.save(self.paths, s)
        self._say(f"{self.name}: serving the mirror {root} at {s.mirror_url}")
        return s

    def _start(self, m: MachineState) -> MachineState:
        pid = machine.boot(self.name, self.paths, m, self.layout)
        try:
            leader = machine.find_leader(pid)
        except LabError as e:
            raise LabError(f"{m.name}: {e}\n{self._console_tail(m.name)}") from e
        return MachineState(m.name, m.role, m.address, m.netns, m.veth, pid, leader)

    def down(self) -> None:
        """Remove everything of the lab: processes, mounts, netns, links, cgroups, files."""
        with self._locked():
            s = self.state()
            if s is None and not self._leftovers():
                self._say(f"{self.name}: not up; nothing to do")
                return
            started = time.monotonic()
            self._teardown(s)
            self._say(f"{self.name}: down in {time.monotonic() - started:.1f} s")

    def _leftovers(self) -> bool:
        return bool(
            self.paths.root.exists()
            or net.netns_matching(planmod.netns_pattern(self.name))
            or net.link_exists(planmod.bridge_name(self.name))
            or net.links_matching(planmod.veth_pattern(self.name))
            or any(d.exists() for d in cgroup.lab_dirs(self.layout, self.name))
        )

    def _known_machines(self, s: LabState | None) -> set[str]:
        """Machines of the lab from every source, so a lab without state is still found."""
        names = {m.name for m in s.machines} if s else set()
        machines_dir = self.paths.root / "machines"
        if machines_dir.is_dir():
            names.update(os.listdir(machines_dir))
        for d in cgroup.lab_dirs(self.layout, self.name):
            if d.is_dir():
                names.update(e.name for e in d.iterdir() if e.is_dir())
        for ns in net.netns_matching(planmod.netns_pattern(self.name)):
            names.add(ns.rsplit("-", 1)[1])
        return {n for n in names if planmod.netns_pattern(self.name).match(f"ms-{self.name}-{n}")}

    def _machine_stub(self, name: str) -> MachineState:
        """Names of a machine's host objects, which follow from lab and machine name alone."""
        return MachineState(name, planmod.machine_role(name), ipaddress.IPv4Address(0),
                            planmod.netns_name(self.name, name), planmod.veth_name(self.name, name))

    def _teardown(self, s: LabState | None) -> None:
        mirrormod.stop(self.paths, mirrormod.recorded_pids(self.paths, s.mirror_pid if s else None))
        for name in sorted(self._known_machines(s)):
            recorded: list[int] = []
            if s is not None:
                with contextlib.suppress(LabError):
                    m = s.machine(name)
                    if machine.is_ours(m.nspawn_pid, self.paths, name):
                        recorded = [p for p in (m.nspawn_pid, m.leader_pid) if p]
            machine.kill(self.name, name, self.layout, recorded)
            machine.remove_nspawn_leftovers(self.paths, self._machine_stub(name))
        for mount in machine.mounts_under(self.paths.root):
            machine.umount(mount)
        for veth in net.links_matching(planmod.veth_pattern(self.name)):
            net.delete_link(veth)
        net.delete_link(planmod.bridge_name(self.name))
        for ns in net.netns_matching(planmod.netns_pattern(self.name)):
            net.delete_netns(ns)
        cgroup.remove(self.layout, self.name)
        if machine.mounts_under(self.paths.root):
            # Never delete a tree with a mounted overlay of / inside it.
            raise LabError(f"mounts remain under {self.paths.root}; not removing it")
        if self.paths.root.exists():
            shutil.rmtree(self.paths.root)

    # ---- readiness ------------------------------------------------------------------------

    def _wait_ready(self, s: LabState, names: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            results = list(pool.map(lambda n: self._wait_one(s.machine(n), deadline), names))
        bad = [r for r in results if r]
        if bad:
            raise LabError("machines not ready:\n" + "\n".join(bad))

    def _wait_one(self, m: MachineState, deadline: float) -> str:
        """'' when ready, else a description of what went wrong (with the console's tail)."""
        addr = str(m.address)
        while time.monotonic() < deadline:
            if not pid_alive(m.nspawn_pid):
                return f"{m.name}: systemd-nspawn exited\n{self._console_tail(m.name)}"
            if _port_open(addr, 22, 0.2):
                left = max(1.0, deadline - time.monotonic())
                proc = ssh_run(self.key, addr, "systemctl is-system-running --wait", timeout=left)
                status = proc.stdout.strip()
                if status in READY_STATES:
                    return ""
                if proc.returncode != 255:  # 255: SSH itself failed (sshd still starting)
                    failed = ssh_run(self.key, addr, "systemctl --failed --no-legend").stdout
                    return f"{m.name}: systemd is {status!r}; failed units:\n{failed}"
            time.sleep(0.05)
        return f"{m.name}: no SSH within the timeout\n{self._console_tail(m.name)}"

    def wait_ready(self, names: Sequence[str] | None = None, timeout: float = 60) -> None:
        s = self.require_state()
        self._wait_ready(s, list(names) if names else [m.name for m in s.machines], timeout)

    def _console_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = self.paths.console_log(name).read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join("    " + ln for ln in text.splitlines()[-lines:])

    # ---- use ------------------------------------------------------------------------------

    def ssh(
        self,
        name: str,
        command: str | Sequence[str],
        timeout: float = 30,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on machine ``name`` as root. Exit code 255 means SSH itself failed."""
        m = self.require_state().machine(name)
        return ssh_run(self.key, str(m.address), command, timeout=timeout, check=check,
                       input=input)

    def status(self) -> list[MachineStatus]:
        s = self.require_state()
        out = []
        for m in s.machines:
            if not machine.is_ours(m.nspawn_pid, self.paths, m.name):
                st = "down"
            elif cgroup.is_frozen(self.layout, self.name, m.name):
                st = "frozen"
            elif not net.link_is_up(m.veth):
                st = "cut"
            elif _port_open(str(m.address), 22, 0.3):
                st = "running"
            else:
                st = "booting"
            out.append(MachineStatus(m.name, m.role, m.address, st, m.nspawn_pid))
        return out

    def pids(self, name: str) -> set[int]:
        """Every host PID of the machine (nspawn and the whole container)."""
        self.require_state().machine(name)
        return cgroup.pids(self.layout, self.name, name)

    def memory(self, name: str) -> int:
        """Proportional set size (bytes) of all the machine's processes: its fair share of RAM."""
        total = 0
        for pid in self.pids(name):
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            except OSError:
                continue
        return total

    # ---- faults (see metalseed.lab.faults for what each one means) ------------------------

    def crash(self, name: str, silent: bool = False) -> float:
        """Crash ``name`` (see metalseed.lab.faults); returns the time it went silent."""
        from metalseed.lab import faults

        with self._locked():
            return faults.crash(self, name, silent)

    def restart(self, name: str, timeout: float = 60) -> None:
        from metalseed.lab import faults

        with self._locked():
            faults.restart(self, name, timeout)

    def freeze(self, name: str) -> None:
        from metalseed.lab import faults

        faults.freeze(self, name, True)

    def thaw(self, name: str) -> None:
        from metalseed.lab import faults

        faults.freeze(self, name, False)

    def cut(self, name: str) -> None:
        from metalseed.lab import faults

        faults.cut(self, name, True)

    def restore(self, name: str) -> None:
        from metalseed.lab import faults

        faults.cut(self, name, False)

    def stop_service(self, name: str, service: str) -> None:
        from metalseed.lab import faults

        faults.service(self, name, service, kill=False)

    def kill_service(self, name: str, service: str) -> None:
        from metalseed.lab import faults

        faults.service(self, name, service, kill=True)

    # helpers for faults.py

    def _save(self, s: LabState) -> None:
        statemod.save(self.paths, s)


def _port_open(addr: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=timeout):
            return True
    except OSError:
        return False
