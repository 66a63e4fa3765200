"""The lab's state file: what ``up`` created, read by ``status``, faults, ``down`` and inventory/lab.py.

Parsing is pure (``parse_state`` / ``dump_state``); only ``load`` and ``save`` touch the disk.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from metalseed.errors import LabError
from metalseed.lab import plan as planmod

STATE_VERSION = 1
DEFAULT_BASE_DIR = Path("/var/lib/metalseed/lab")


def base_dir() -> Path:
    """Where labs keep their files; METALSEED_LAB_DIR overrides (tests, unusual hosts)."""
    return Path(os.environ.get("METALSEED_LAB_DIR") or DEFAULT_BASE_DIR)


@dataclass(frozen=True)
class LabPaths:
    """Files of one lab. Everything under ``root`` is removed by ``down``."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    def machine_dir(self, machine: str) -> Path:
        return self.root / "machines" / machine

    def upper(self, machine: str) -> Path:
        return self.machine_dir(machine) / "upper"

    def work(self, machine: str) -> Path:
        return self.machine_dir(machine) / "work"

    def rootfs(self, machine: str) -> Path:
        return self.machine_dir(machine) / "root"

    def console_log(self, machine: str) -> Path:
        return self.machine_dir(machine) / "console.log"

    def bind_source(self, machine: str, target: str) -> Path:
        """Host directory bound at ``target`` inside the machine (off its overlay root)."""
        return self.machine_dir(machine) / "binds" / target.strip("/").replace("/", "-")


def lab_paths(name: str, base: Path | None = None) -> LabPaths:
    return LabPaths((base or base_dir()) / name)


@dataclass(frozen=True)
class MachineState:
    name: str
    role: str
    address: ipaddress.IPv4Address
    netns: str
    veth: str
    nspawn_pid: int | None = None
    """The systemd-nspawn process; None while the machine is down (crashed, not restarted)."""
    leader_pid: int | None = None
    """The container's PID 1 (its systemd) as seen from the host."""


@dataclass(frozen=True)
class LabState:
    name: str
    subnet: ipaddress.IPv4Network
    bridge: str
    bridge_address: ipaddress.IPv4Address
    vip: ipaddress.IPv4Address
    key: Path
    machines: tuple[MachineState, ...] = field(default=())
    mirror_root: Path | None = None
    """The mirror served to the machines (None: no manifest there at ``up``, nothing served)."""
    mirror_pid: int | None = None
    """The ``metalseed mirror serve`` process on the bridge address."""
    mirror_url: str | None = None
    oom_score_adj_restricted: bool = False
    """The host cannot lower OOM scores (no CAP_SYS_RESOURCE), so neither can its machines."""

    def machine(self, name: str) -> MachineState:
        for m in self.machines:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.machines)
        raise LabError(f"lab {self.name!r} has no machine {name!r}; it has: {known}")

    def with_machine(self, updated: MachineState) -> LabState:
        return replace(
            self,
            machines=tuple(updated if m.name == updated.name else m for m in self.machines),
        )

    @property
    def masters(self) -> tuple[MachineState, ...]:
        return tuple(m for m in self.machines if m.role == "master")

    @property
    def workers(self) -> tuple[MachineState, ...]:
        return tuple(m for m in self.machines if m.role == "worker")

    @property
    def datastore(self) -> tuple[MachineState, ...]:
        return tuple(m for m in self.machines if m.role == "datastore")

    @property
    def tenant_workers(self) -> tuple[MachineState, ...]:
        return tuple(m for m in self.machines if m.role == planmod.TENANT_WORKER)


def state_from_plan(p: planmod.LabPlan, key: Path) -> LabState:
    return LabState(
        name=p.name,
        subnet=p.subnet,
        bridge=p.bridge,
        bridge_address=p.bridge_address,
        vip=p.vip,
        key=key,
        machines=tuple(
            MachineState(m.name, m.role, m.address, m.netns, m.veth) for m in p.machines
        ),
    )


def dump_state(s: LabState) -> str:
    doc: dict[str, Any] = {
        "version": STATE_VERSION,
        "name": s.name,
        "subnet": str(s.subnet),
        "bridge": s.bridge,
        "bridge_address": str(s.bridge_address),
        "vip": str(s.vip),
        "key": str(s.key),
        "mirror_root": str(s.mirror_root) if s.mirror_root else None,
        "mirror_pid": s.mirror_pid,
        "mirror_url": s.mirror_url,
        "oom_score_adj_restricted": s.oom_score_adj_restricted,
        "machines": [
            {
                "name": m.name,
                "role": m.role,
                "address": str(m.address),
                "netns": m.netns,
                "veth": m.veth,
                "nspawn_pid": m.nspawn_pid,
                "leader_pid": m.leader_pid,
            }
            for m in s.machines
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


def _pid(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise LabError(f"{where}: found {value!r}; accepted: a positive PID or null")


def parse_state(text: str, source: str = "state file") -> LabState:
    """Parse and check a state file. Any problem is a LabError naming the field."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise LabError(f"{source} is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise LabError(f"{source}: found {type(doc).__name__}; accepted: a JSON object")
    if doc.get("version") != STATE_VERSION:
        raise LabError(f"{source}: version: found {doc.get('version')!r}; accepted: "
                       f"{STATE_VERSION} (run `metalseed lab down` and up again)")
    try:
        name = planmod.check_lab_name(str(doc["name"]))
        machines = []
        for i, m in enumerate(doc["machines"]):
            where = f"{source}: machines[{i}]"
            role = planmod.machine_role(str(m["name"]))
            if m["role"] != role:
                raise LabError(f"{where}.role: found {m['role']!r}; accepted: {role!r}")
            machines.append(
                MachineState(
                    name=str(m["name"]),
                    role=role,
                    address=ipaddress.IPv4Address(m["address"]),
                    netns=str(m["netns"]),
                    veth=str(m["veth"]),
                    nspawn_pid=_pid(m.get("nspawn_pid"), f"{where}.nspawn_pid"),
                    leader_pid=_pid(m.get("leader_pid"), f"{where}.leader_pid"),
                )
            )
        return LabState(
            name=name,
            subnet=ipaddress.IPv4Network(doc["subnet"]),
            bridge=str(doc["bridge"]),
            bridge_address=ipaddress.IPv4Address(doc["bridge_address"]),
            vip=ipaddress.IPv4Address(doc["vip"]),
            key=Path(doc["key"]),
            machines=tuple(machines),
            mirror_root=Path(doc["mirror_root"]) if doc.get("mirror_root") else None,
            mirror_pid=_pid(doc.get("mirror_pid"), f"{source}: mirror_pid"),
            mirror_url=str(doc["mirror_url"]) if doc.get("mirror_url") else None,
            oom_score_adj_restricted=doc.get("oom_score_adj_restricted") is True,
        )
    except KeyError as e:
        raise LabError(f"{source}: missing field {e.args[0]!r}") from e
    except (TypeError, ValueError) as e:
        raise LabError(f"{source}: {e}") from e


def load(paths: LabPaths) -> LabState | None:
    """The saved state, or None when the lab has none (never up, or down)."""
    try:
        text = paths.state.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise LabError(f"cannot read {paths.state}: {e}") from e
    return parse_state(text, str(paths.state))


def save(paths: LabPaths, s: LabState) -> None:
    # Write-then-rename: a reader (inventory/lab.py in another process) never sees half a file.
    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = paths.state.with_suffix(".tmp")
    tmp.write_text(dump_state(s))
    os.replace(tmp, paths.state)
