"""Fault injection. Each fault is reversible, or the machine comes back with its disk intact.

- crash: the whole container dies at once (frozen, SIGKILLed, thawed); its network namespace goes
  too, so addresses it held (a keepalived VIP) vanish as they would with a dead machine. Its disk
  (the overlay upper dir) stays. Undo: restart. Its processes die while its link is still up, so
  its kernel resets the connections they had, and peers notice at once (what a client without
  keepalive, as pyinfra's SSH, needs). With ``silent=True`` it is a power loss: frozen, its link
  removed, then killed; it sends nothing more, and peers notice only by their own timeouts.
- restart: boot the machine again on its disk (crashing it first if it still runs).
- freeze / thaw: every process of the machine stops (cgroup freezer) and its bridge port drops all
  frames while the link stays up: a hung machine (or a paused VM) that still holds its addresses
  and the peers' open connections, but answers nothing, not even ARP or ping.
- cut / restore: the machine's link goes down (host end of its veth): a pulled cable.
- stop_service / kill_service: `systemctl stop`, or SIGKILL to every process of the unit (systemd
  then applies the unit's Restart= policy, as on a real host).
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import TYPE_CHECKING

from metalseed.errors import LabError
from metalseed.lab import cgroup, machine, net
from metalseed.lab import plan as planmod
from metalseed.lab.state import MachineState

if TYPE_CHECKING:
    from metalseed.lab.core import Lab

_UNIT = re.compile(r"^[A-Za-z0-9:_.@\\-]+$")


def crash(lab: Lab, name: str, silent: bool = False) -> float:
    """Crash ``name``; returns the time (time.time()) its last process was killed or, silent, it
    went silent."""
    s = lab.require_state()
    m = s.machine(name)
    recorded = []
    if machine.is_ours(m.nspawn_pid, lab.paths, name):
        recorded = [p for p in (m.nspawn_pid, m.leader_pid) if p]
    # A machine that loses power sends nothing more: its link goes first, while it is frozen.
    if silent:
        with contextlib.suppress(LabError):
            cgroup.set_frozen(lab.layout, lab.name, name, True)
        net.delete_link(m.veth)
    gone = time.time()
    machine.kill(lab.name, name, lab.layout, recorded)
    gone = gone if silent else time.time()
    machine.remove_nspawn_leftovers(lab.paths, m)
    net.delete_link(m.veth)
    net.delete_netns(m.netns)
    lab._save(s.with_machine(MachineState(m.name, m.role, m.address, m.netns, m.veth)))
    lab._say(f"{lab.name}: {name} crashed")
    return gone


def restart(lab: Lab, name: str, timeout: float = 60) -> None:
    s = lab.require_state()
    m = s.machine(name)
    if machine.is_ours(m.nspawn_pid, lab.paths, name) or lab.pids(name):
        crash(lab, name)
        s = lab.require_state()
        m = s.machine(name)
    net.create_machine_net(m.netns, m.veth, s.bridge, m.address, s.subnet.prefixlen,
                           planmod.mac_address(lab.name, name))
    machine.mount_root(lab.paths, name)
    s = s.with_machine(lab._start(m))
    lab._save(s)
    lab._wait_ready(s, [name], timeout)
    lab._say(f"{lab.name}: {name} restarted")


def _running(lab: Lab, name: str) -> MachineState:
    m = lab.require_state().machine(name)
    if not machine.is_ours(m.nspawn_pid, lab.paths, name):
        raise LabError(f"{name} is not running (crashed? `metalseed lab fault restart {name}`)")
    return m


def freeze(lab: Lab, name: str, frozen: bool) -> None:
    m = _running(lab, name)
    # Network first on freeze and last on thaw: no half-frozen machine answers in between.
    if frozen:
        net.set_port_blocked(m.veth, True)
        cgroup.set_frozen(lab.layout, lab.name, name, True)
    else:
        cgroup.set_frozen(lab.layout, lab.name, name, False)
        net.set_port_blocked(m.veth, False)


def cut(lab: Lab, name: str, cut_link: bool) -> None:
    m = _running(lab, name)
    net.set_link(m.veth, up=not cut_link)


def service(lab: Lab, name: str, unit: str, kill: bool) -> None:
    if not _UNIT.match(unit):
        raise LabError(f"service {unit!r} is not a systemd unit name")
    _running(lab, name)
    cmd = ["systemctl", "kill", "--signal=SIGKILL", unit] if kill else ["systemctl", "stop", unit]
    lab.ssh(name, cmd, check=True)
