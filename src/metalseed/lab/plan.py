"""Pure planning of a lab: names, subnet, addresses, interface and namespace names. No I/O.

Everything a lab creates on the host is named from the lab name alone, so ``down`` can find (and
remove) what a crashed ``up`` left behind even when the state file is gone, and two labs side by side
never touch each other's objects.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from metalseed.errors import LabError

DEFAULT_NAME = "lab"
DEFAULT_MASTERS = 3
DEFAULT_WORKERS = 2
MAX_MASTERS = 9
MAX_WORKERS = 29
MAX_DATASTORE = 5
MAX_TENANT_WORKERS = 9
SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")

# Host numbers inside the lab /24. The bridge (the host's side) holds .1; the VIP sits far from
# the machine ranges so that adding workers never collides with it.
BRIDGE_HOST = 1
MASTER_BASE = 10  # m1 -> .11
WORKER_BASE = 20  # w1 -> .21
DATASTORE_BASE = 50  # d1 -> .51 (the tenant datastore's etcd members), past the last worker
TENANT_WORKER_BASE = 60  # t1 -> .61 (nodes of a tenant's cluster, not of the seed)
VIP_HOST = 250

# Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
IFNAMSIZ = 15
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MACHINE = re.compile(r"^([mwdt])([1-9][0-9]*)$")


def check_lab_name(name: str) -> str:
    """A lab name is an RFC 1123 label: it becomes the cluster name of the lab inventory."""
    if not _NAME.match(name):
        raise LabError(
            f"lab name {name!r} is not valid; accepted: an RFC 1123 label (lowercase letters,"
            " digits and '-', starting and ending with a letter or digit, at most 63)"
        )
    return name


def derive_subnet(name: str) -> ipaddress.IPv4Network:
    """The /24 of a lab, chosen from 10.213.0.0/16 by a hash of its name.

    A hash rather than a counter so the subnet is known without any shared state; two names that
    collide are caught by the overlap check at ``up`` (the operator then passes a subnet).
    """
    octet = hashlib.sha256(name.encode()).digest()[0]
    return ipaddress.IPv4Network(f"{SUBNET_POOL.network_address + (octet << 8)}/24")


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as e:
        raise LabError(f"subnet {text!r} is not valid: {e}; accepted: an IPv4 /24 such as "
                       "10.213.7.0/24") from e
    if net.prefixlen != 24:
        raise LabError(f"subnet {text!r} is a /{net.prefixlen}; accepted: a /24")
    if not net.is_private:
        raise LabError(f"subnet {text!r} is not a private network; the lab never routes off it")
    return net


def ifname_tag(name: str) -> str:
    """A short stand-in for the lab name inside interface names (which are at most 15 bytes).

    Names of up to 6 characters are used as they are. Longer ones become their first letter,
    '_' and 4 hex digits of a hash: '_' is not allowed in lab names, so a tag of a long name
    never equals a short name.
    """
    if len(name) <= 6:
        return name
    return f"{name[0]}_{hashlib.sha256(name.encode()).hexdigest()[:4]}"


def bridge_name(name: str) -> str:
    return f"ms-{ifname_tag(name)}-br"


def veth_name(name: str, machine: str) -> str:
    """Host side of a machine's veth pair (the container side is always ``eth0``)."""
    return f"ms-{ifname_tag(name)}-{machine}"


def netns_name(name: str, machine: str) -> str:
    return f"ms-{name}-{machine}"


def netns_pattern(name: str) -> re.Pattern[str]:
    """Matches exactly this lab's namespaces: lab ``test`` must not match ``test-2``'s."""
    return re.compile(rf"^ms-{re.escape(name)}-[mwdt][1-9][0-9]*$")


def veth_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^ms-{re.escape(ifname_tag(name))}-[mwdt][1-9][0-9]*$")


def mac_address(name: str, interface: str) -> str:
    """A fixed, locally administered MAC for an interface of the lab.

    A restarted machine keeps its MAC, as a rebooted server keeps its NIC: with a new random one,
    ARP caches (the host's, the other machines') would point at a dead address for up to a minute.
    """
    digest = hashlib.sha256(f"{name}/{interface}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


TENANT_WORKER = "tenant-worker"
"""The role of t1..: a machine that joins a tenant's control plane (the inventory's
``tenant_workers`` group), no node of the seed."""


def machine_role(machine: str) -> str:
    m = _MACHINE.match(machine)
    if not m:
        raise LabError(f"{machine!r} is not a lab machine name; accepted: m1, m2, ..., w1, ..., "
                       "d1, ... or t1, ...")
    return {"m": "master", "w": "worker", "d": "datastore", "t": TENANT_WORKER}[m.group(1)]


@dataclass(frozen=True)
class MachinePlan:
    name: str
    role: str  # "master" | "worker" | "datastore" | "tenant-worker"
    address: ipaddress.IPv4Address
    netns: str
    veth: str


@dataclass(frozen=True)
class LabPlan:
    name: str
    subnet: ipaddress.IPv4Network
    bridge: str
    bridge_address: ipaddress.IPv4Address
    vip: ipaddress.IPv4Address
    machines: tuple[MachinePlan, ...]

    @property
    def masters(self) -> tuple[MachinePlan, ...]:
        return tuple(m for m in self.machines if m.role == "master")

    @property
    def workers(self) -> tuple[MachinePlan, ...]:
        return tuple(m for m in self.machines if m.role == "worker")

    @property
    def datastore(self) -> tuple[MachinePlan, ...]:
        return tuple(m for m in self.machines if m.role == "datastore")

    @property
    def tenant_workers(self) -> tuple[MachinePlan, ...]:
        return tuple(m for m in self.machines if m.role == TENANT_WORKER)


def plan_lab(
    name: str,
    masters: int = DEFAULT_MASTERS,
    workers: int = DEFAULT_WORKERS,
    subnet: ipaddress.IPv4Network | None = None,
    datastore: int = 0,
    tenant_workers: int = 0,
) -> LabPlan:
    """Lay out a lab of ``masters`` + ``workers`` (+ ``datastore``: d1.., members of a tenant
    datastore, no Kubernetes nodes; + ``tenant_workers``: t1.., nodes of a tenant's cluster)
    machines. Raises LabError on bad input."""
    check_lab_name(name)
    if not 1 <= masters <= MAX_MASTERS:
        raise LabError(f"masters: found {masters}; accepted: 1 to {MAX_MASTERS}")
    if not 0 <= workers <= MAX_WORKERS:
        raise LabError(f"workers: found {workers}; accepted: 0 to {MAX_WORKERS}")
    if not 0 <= datastore <= MAX_DATASTORE:
        raise LabError(f"datastore: found {datastore}; accepted: 0 to {MAX_DATASTORE}")
    if not 0 <= tenant_workers <= MAX_TENANT_WORKERS:
        raise LabError(f"tenant workers: found {tenant_workers}; accepted: 0 to "
                       f"{MAX_TENANT_WORKERS}")
    net = subnet if subnet is not None else derive_subnet(name)
    if net.prefixlen != 24:
        raise LabError(f"subnet: found {net}; accepted: a /24")
    base = net.network_address
    machines: list[MachinePlan] = []
    for role, prefix, count, offset in (
        ("master", "m", masters, MASTER_BASE),
        ("worker", "w", workers, WORKER_BASE),
        ("datastore", "d", datastore, DATASTORE_BASE),
        (TENANT_WORKER, "t", tenant_workers, TENANT_WORKER_BASE),
    ):
        for i in range(1, count + 1):
            machine = f"{prefix}{i}"
            machines.append(
                MachinePlan(
                    name=machine,
                    role=role,
                    address=base + offset + i,
                    netns=netns_name(name, machine),
                    veth=veth_name(name, machine),
                )
            )
    return LabPlan(
        name=name,
        subnet=net,
        bridge=bridge_name(name),
        bridge_address=base + BRIDGE_HOST,
        vip=base + VIP_HOST,
        machines=tuple(machines),
    )


def hosts_file(plan_machines: tuple[MachinePlan, ...]) -> str:
    """/etc/hosts of every machine: the lab machines resolve each other by name."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{m.address}\t{m.name}" for m in plan_machines]
    return "\n".join(lines) + "\n"


def overlaps(a: ipaddress.IPv4Network, others: list[ipaddress.IPv4Network]) -> list[str]:
    return [str(o) for o in others if a.overlaps(o)]
