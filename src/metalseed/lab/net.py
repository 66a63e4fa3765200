"""The lab network: one bridge holding the lab /24's first address, a netns and veth per machine.

Machines get an address on ``eth0`` and the connected /24 route, nothing else: no default route and
no NAT, so they reach each other and the bridge address only.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time

from metalseed.errors import LabError
from metalseed.lab.host import run

NETNS_DIR = "/run/netns"


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def links_matching(pattern: re.Pattern[str]) -> list[str]:
    try:
        return sorted(n for n in os.listdir("/sys/class/net") if pattern.match(n))
    except FileNotFoundError:
        return []


def netns_matching(pattern: re.Pattern[str]) -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if pattern.match(n))
    except FileNotFoundError:
        return []


def host_networks(ignore_dev: str | None = None) -> list[ipaddress.IPv4Network]:
    """Networks the host already routes (every table), to refuse a lab subnet that overlaps."""
    out = run(["ip", "-4", "-j", "route", "show", "table", "all"]).stdout or "[]"
    nets = []
    for r in json.loads(out):
        if r.get("dev") == ignore_dev or r.get("type") in ("broadcast", "local"):
            continue
        dst = r.get("dst", "")
        if dst in ("default", "") or dst.startswith("127."):
            continue
        try:
            nets.append(ipaddress.IPv4Network(dst, strict=False))
        except ValueError:
            continue
    return nets


def create_bridge(
    name: str, address: ipaddress.IPv4Address, prefixlen: int, mac: str
) -> None:
    if not link_exists(name):
        # A fixed MAC: otherwise the bridge takes its lowest port's, which changes as machines
        # crash and restart, and the machines' ARP entries for the host go stale.
        run(["ip", "link", "add", name, "address", mac, "type", "bridge"])
    run(["ip", "addr", "replace", f"{address}/{prefixlen}", "dev", name])
    run(["ip", "link", "set", name, "up"])


def delete_link(name: str) -> None:
    if link_exists(name):
        # Deleting one end of a veth pair deletes both; a vanished link is not an error.
        proc = run(["ip", "link", "del", name], check=False)
        if proc.returncode != 0 and link_exists(name):
            raise LabError(f"cannot delete link {name}: {proc.stderr.strip()}")


def create_machine_net(
    netns: str,
    veth: str,
    bridge: str,
    address: ipaddress.IPv4Address,
    prefixlen: int,
    mac: str,
) -> None:
    """Namespace + veth (``eth0`` inside) plugged into the bridge, with only the connected route."""
    if not os.path.exists(f"{NETNS_DIR}/{netns}"):
        run(["ip", "netns", "add", netns])
    if not link_exists(veth):
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0",
             "address", mac, "netns", netns])
    run(["ip", "link", "set", veth, "master", bridge, "up"])
    # One `ip -batch` for the inside: each `ip` start costs a few ms and up does this per machine.
    run(
        ["ip", "-n", netns, "-batch", "-"],
        input=f"addr replace {address}/{prefixlen} dev eth0\nlink set eth0 up\nlink set lo up\n",
    )
    # nspawn mounts /proc/sys read-only inside the machine, so the sysctls our deploys would set
    # from /etc/sysctl.d are set here, per namespace, as a real host's boot would: nginx on the
    # edge binds the VIP on masters that do not hold it; a Kubernetes node forwards pod traffic
    # (kube-proxy and flannel need ip_forward, which deploys/kubernetes.py sets on real hosts).
    run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", "net.ipv4.ip_nonlocal_bind=1",
         "net.ipv4.ip_forward=1"])


def delete_netns(netns: str) -> None:
    if not os.path.exists(f"{NETNS_DIR}/{netns}"):
        return
    # The last process in a namespace may still be exiting; the bind mount can be busy briefly.
    for _ in range(50):
        proc = run(["ip", "netns", "del", netns], check=False)
        if proc.returncode == 0 or not os.path.exists(f"{NETNS_DIR}/{netns}"):
            return
        time.sleep(0.1)
    raise LabError(f"cannot delete network namespace {netns}: {proc.stderr.strip()}")


def set_link(veth: str, up: bool) -> None:
    """Cut or restore a machine's link: the host end goes down, so the machine sees no carrier."""
    if not link_exists(veth):
        raise LabError(f"link {veth} does not exist (is the machine up?)")
    run(["ip", "link", "set", veth, "up" if up else "down"])


def link_is_up(veth: str) -> bool:
    try:
        with open(f"/sys/class/net/{veth}/flags") as f:
            return bool(int(f.read().strip(), 16) & 0x1)
    except OSError:
        return False


# Bridge port states (STP numbering). "listening" forwards no frames, and with STP off the bridge
# leaves a port in it; "disabled" and "blocking" are not kept by this kernel, so are not used.
_PORT_FORWARDING = "3"
_PORT_LISTENING = "1"


def set_port_blocked(veth: str, blocked: bool) -> None:
    """Silently drop every frame to and from a machine while its link stays up.

    A frozen machine must look like a hung host: its kernel must not answer ARP, ping or TCP
    handshakes either (the freezer stops processes only).
    """
    want = _PORT_LISTENING if blocked else _PORT_FORWARDING
    run(["ip", "link", "set", "dev", veth, "type", "bridge_slave", "state", want])
    try:
        with open(f"/sys/class/net/{veth}/brport/state") as f:
            got = f.read().strip()
    except OSError as e:
        raise LabError(f"cannot read the bridge port state of {veth}: {e}") from e
    if got != want:
        raise LabError(f"bridge port {veth} is in state {got}, not {want}")
