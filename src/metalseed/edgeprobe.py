"""Probing the edge from outside: HTTPS requests to the VIP, who holds it, when it moved.

Used by the lab tests and ``bench/edge.py``. Every request goes to the VIP (or a lab machine's
address) only, and every client loop is bounded in count and in time.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from metalseed.errors import HealthCheckError
from metalseed.model import Cluster
from metalseed.probe import BackgroundLoop

if TYPE_CHECKING:
    from pyinfra.api import Inventory

    from metalseed.lab import Lab


class Shell(Protocol):
    """What the probe needs from a lab: a command on a machine (``metalseed.lab.Lab.ssh``)."""

    def ssh(self, name: str, command: str | Sequence[str], timeout: float = 30, check: bool = False,
            input: str | None = None) -> object: ...


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    fields: dict[str, str]
    """The body's ``key=value`` lines (the edge tests' backend answers node, host, xff, proto)."""
    body: str = ""


def tls_context(ca_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def get(address: str, port: int, path: str = "/", host: str | None = None,
        ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> Reply:
    """One request on a fresh connection (HTTPS when ``ctx`` is given); raises OSError on failure.

    The certificate is checked against ``address`` (the VIP is in the edge certificate's SANs)
    while the Host header says ``host``: the edge routes by Host, TLS verifies the VIP.
    """
    conn: http.client.HTTPConnection
    if ctx is not None:
        conn = http.client.HTTPSConnection(address, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host or address, "Connection": "close"})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        fields = dict(line.split("=", 1) for line in body.splitlines() if "=" in line)
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, fields, body)
    except (http.client.HTTPException, ssl.SSLError) as e:
        raise OSError(str(e)) from e
    finally:
        conn.close()


def who(reply: Reply) -> str:
    """Who answered: the backend's ``node=`` line, or a one-line body (agnhost's ``/hostname``
    answers with its pod's name)."""
    if "node" in reply.fields:
        return reply.fields["node"]
    text = reply.body.strip()
    return text if text and "\n" not in text and len(text) <= 253 else ""


@dataclass(frozen=True)
class Sample:
    start: float
    end: float
    ok: bool
    node: str = ""
    error: str = ""


@dataclass
class Client(BackgroundLoop):
    """A continuous HTTPS client against the VIP, in a thread: one request at a time, each on a
    fresh connection with a short timeout, at most ``max_requests`` and ``max_seconds``."""

    thread_name = "edge-probe"

    address: str
    port: int
    ctx: ssl.SSLContext
    host: str = "probe.edge.test"
    path: str = "/"
    timeout: float = 0.5
    pause: float = 0.01
    max_requests: int = 5000
    max_seconds: float = 60.0
    samples: list[Sample] = field(default_factory=list)

    def _run(self) -> None:
        deadline = time.time() + self.max_seconds
        for _ in range(self.max_requests):
            if self._stop.is_set() or time.time() > deadline:
                return
            t0 = time.time()
            try:
                reply = get(self.address, self.port, path=self.path, host=self.host, ctx=self.ctx,
                            timeout=self.timeout)
                ok, node, error = reply.status == 200, who(reply), ""
                if not ok:
                    error = f"HTTP {reply.status}"
            except OSError as e:
                ok, node, error = False, "", f"{type(e).__name__}: {e}"
            self.samples.append(Sample(t0, time.time(), ok, node, error))
            self._stop.wait(self.pause)

    def failures(self, since: float = 0.0) -> list[Sample]:
        return [s for s in self.samples if not s.ok and s.end >= since]

    def outage(self, since: float) -> float:
        """Seconds from ``since`` to the first success after the last failure (0 if none failed)."""
        failed = self.failures(since)
        if not failed:
            return 0.0
        after = [s.end for s in self.samples if s.ok and s.start >= failed[-1].start]
        return (after[0] if after else self.samples[-1].end) - since

    def wait_ok(self, count: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            tail = self.samples[-count:]
            if len(tail) == count and all(s.ok for s in tail):
                return
            time.sleep(0.05)
        errors = sorted({s.error for s in self.samples[-50:] if s.error})
        raise HealthCheckError(f"the edge did not answer {count} requests in a row within {timeout} s"
                               f" (last errors: {'; '.join(errors[:3]) or 'none'})")


def holder(lab: Shell, cluster: Cluster, names: Sequence[str] | None = None) -> str | None:
    """The master whose interface holds the VIP (None if none of those asked does)."""
    for m in cluster.masters:
        if names is not None and m.name not in names:
            continue
        out = lab.ssh(m.name, f"ip -4 -o addr show dev {cluster.vip_interface}", timeout=5)
        if f" {cluster.vip}/" in str(getattr(out, "stdout", "")):
            return m.name
    return None


def wait_holder(lab: Shell, cluster: Cluster, expected: str | None = None, timeout: float = 20,
                names: Sequence[str] | None = None) -> str:
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = holder(lab, cluster, names)
        if last is not None and (expected is None or last == expected):
            return last
        time.sleep(0.2)
    raise HealthCheckError(f"VIP {cluster.vip}: holder is {last!r}, expected {expected or 'any'!r}")


def became_master(lab: Shell, name: str, since: float, last: bool = False) -> float | None:
    """When keepalived on ``name`` first (or ``last``) entered MASTER state after ``since``
    (journal, host clock: lab machines share the host's clock)."""
    out = lab.ssh(name, f"journalctl -u keepalived -o short-unix --no-pager --since @{since:.6f}",
                  timeout=10)
    times = [float(line.split()[0]) for line in str(getattr(out, "stdout", "")).splitlines()
             if "Entering MASTER STATE" in line and line[:1].isdigit()]
    return (times[-1] if last else times[0]) if times else None


def mac_address(lab: Shell, cluster: Cluster, name: str) -> str:
    """The MAC of ``name``'s VIP interface, from the machine's own netlink (a lab machine's
    /sys/class/net is the host's)."""
    out = lab.ssh(name, f"ip -br link show dev {cluster.vip_interface}", timeout=30)
    fields = str(getattr(out, "stdout", "")).split()
    if len(fields) < 3:
        raise HealthCheckError(f"{name}: no link {cluster.vip_interface}: {out}")
    return fields[2]


def vip_neighbour(cluster: Cluster) -> str:
    """This machine's ARP entry for the VIP (``ip neigh show``: address, device, MAC, state), or
    an empty string: which master its packets to the VIP go to."""
    return subprocess.run(["ip", "neigh", "show", str(cluster.vip)], capture_output=True,
                          text=True, check=False).stdout.strip()


def wait_port(address: str, port: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise HealthCheckError(f"{address}:{port} did not open within {timeout} s")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------------------------
# Driving a lab (tests and bench)


def lab_inventory(lab: Lab, **extra: Any) -> Inventory:
    """A pyinfra Inventory of a lab, with extra cluster-wide data (e.g. ``edge_failover``)."""
    from metalseed.lab.inventory import pyinfra_inventory

    return pyinfra_inventory(lab.require_state(), **extra)


def deploy_edge(lab: Lab, **extra: Any) -> dict[str, tuple[int, int]]:
    """Run the edge deploy on a lab through pyinfra's API (what answers on the workers' NodePort
    is the caller's business).

    Returns {host: (operations that changed something, operations without change)}; raises
    DeployError when any host failed.
    """
    from metalseed.deploys.edge import edge
    from metalseed.etcdprobe import run_deploy

    state = run_deploy(lab_inventory(lab, **extra), edge).state
    counts: dict[str, tuple[int, int]] = {}
    for h in state.inventory:
        meta = state.get_meta_for_host(h)
        counts[h.name] = (meta.ops_change, meta.ops_no_change)
    return counts
