"""``metalseed tenants verify``: the isolation of a seed's tenants proven by connections, not read
off the policies.

From each tenant's probe pod (selected by its control plane's policies, so it may reach what its
API server may reach and no more), ``agnhost connect`` tries every path: the allowed ones (kube-dns,
each datastore member's client port, its own workers' kubelets) must connect; the forbidden ones
must not -- every other tenant's API server pods and Service, the seed's own API (its Service and
each master), a datastore member's port the tenant has no business with (ssh). The edge's path to
each tenant (the masters' nginx, by SNI on the VIP) is the tenant's ``/readyz`` with its own
admin.conf. Every forbidden target listens, so a failed connection there is the policy's doing,
not an absent server's.

Planning and judging are pure (:func:`plan`, :func:`judge`, :func:`format_table`); only
:func:`run` talks to the seed.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from metalseed.errors import KubernetesError
from metalseed.model import Cluster
from metalseed.tenants import isolation as iso

EDGE = "edge"
CONNECT_TIMEOUT = "3s"
SSH_PORT = 22
NOT_RUN = "not run"
EXEC_FAILED = "exec failed"


@dataclass(frozen=True)
class Probe:
    source: str
    """The tenant whose probe pod connects, or ``edge``."""
    target: str
    """What is probed, in words (``globex api pod``, ``kube-dns``, ...)."""
    address: str
    """host:port"""
    allowed: bool
    seen: str = ""
    """``ok`` or what agnhost said (TIMEOUT, REFUSED, OTHER: ...); empty until run."""

    @property
    def connected(self) -> bool:
        return self.seen == "ok"

    @property
    def ran(self) -> bool:
        """Whether the probe gave an answer: a probe that did not run proves nothing, either way."""
        return bool(self.seen) and self.seen != NOT_RUN and not self.seen.startswith(EXEC_FAILED)

    @property
    def as_expected(self) -> bool:
        return self.ran and self.connected == self.allowed


@dataclass(frozen=True)
class SeedFacts:
    """What the seed's API says the targets' addresses are."""

    api_pods: Mapping[str, tuple[str, ...]]
    """tenant -> its control plane pods' IPs"""
    api_services: Mapping[str, str]
    """tenant -> its API Service's ClusterIP"""


def plan(cluster: Cluster, facts: SeedFacts, i: iso.IsolationInputs) -> list[Probe]:
    """Every probe, for every ordered pair of tenants and every allowed path."""
    out: list[Probe] = []
    names = [t.name for t in cluster.tenants]
    for me in names:
        out.append(Probe(me, "kube-dns", f"{cluster.cluster_dns_address}:{iso.DNS_PORT}", True))
        for d in i.datastore:
            out.append(Probe(me, f"datastore {d}", f"{d}:{i.datastore_port}", True))
        if i.datastore:
            out.append(Probe(me, f"datastore {i.datastore[0]} ssh",
                             f"{i.datastore[0]}:{SSH_PORT}", False))
        for w in i.tenant_workers.get(me, ()):
            out.append(Probe(me, f"own worker {w} kubelet", f"{w}:{iso.KUBELET_PORT}", True))
        out.append(Probe(me, "seed API service",
                         f"{cluster.first_service_address}:443", False))
        for m in cluster.masters:
            out.append(Probe(me, f"seed API {m.name}", f"{m.address}:{cluster.apiserver_port}",
                             False))
        for other in names:
            if other == me:
                continue
            for ip in facts.api_pods.get(other, ()):
                out.append(Probe(me, f"{other} api pod", f"{ip}:{iso.API_PORT}", False))
            if other in facts.api_services:
                out.append(Probe(me, f"{other} api service",
                                 f"{facts.api_services[other]}:{iso.API_PORT}", False))
    for me in names:
        out.append(Probe(EDGE, f"{me} /readyz by SNI", f"{cluster.vip}:{cluster.apiserver_port}",
                         True))
    return out


def script(probes: Iterable[Probe]) -> str:
    """One shell run for all of a source's probes, in parallel: a line ``<address> <rc> <what
    agnhost said>`` each."""
    lines = []
    for p in probes:
        a = shlex.quote(p.address)
        lines.append(f"( o=$(/agnhost connect {a} --timeout={CONNECT_TIMEOUT} 2>&1); "
                     f"echo {a} $? $o ) &")
    return "\n".join([*lines, "wait"])


def parse(output: str) -> dict[str, str]:
    """address -> ``ok`` or agnhost's own words."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = "ok" if parts[1] == "0" else (parts[2] if len(parts) > 2 else "failed")
    return out


def key(p: Probe) -> tuple[str, str]:
    """What a result is filed under: the source and the address (the edge's probes all go to the
    VIP: the source and the target)."""
    return (p.source, p.target if p.source == EDGE else p.address)


def judge(probes: Iterable[Probe], seen: Mapping[tuple[str, str], str]) -> list[Probe]:
    """Each probe with what was seen under its :func:`key` ('not run' when nothing was)."""
    return [replace(p, seen=seen.get(key(p), NOT_RUN)) for p in probes]


def format_table(probes: list[Probe]) -> str:
    rows = [("FROM", "TO", "ADDRESS", "EXPECTED", "SEEN", "")]
    for p in probes:
        rows.append((p.source, p.target, p.address, "allow" if p.allowed else "deny",
                     p.seen if p.seen != "ok" else "connected",
                     "" if p.as_expected else "UNEXPECTED"))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = ["  ".join(r[c].ljust(widths[c]) for c in range(5)) + ("  " + r[5] if r[5] else "")
             for r in rows]
    bad = sum(1 for p in probes if not p.as_expected)
    lines.append(f"\n{len(probes)} probes, {bad} unexpected")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Against the seed


def facts(cluster: Cluster) -> SeedFacts:
    from kubernetes import client

    from metalseed.kube import client as kc
    from metalseed.kube.tenant import API_SERVICE, TENANT_LABEL

    # The typed client, not the dynamic one: no API discovery (seconds on a loaded seed).
    core = client.CoreV1Api(kc.api_client(cluster))
    pods: dict[str, tuple[str, ...]] = {}
    services: dict[str, str] = {}
    for t in cluster.tenants:
        items = kc.translated(f"listing the control plane pods of {t.namespace}", lambda: (
            core.list_namespaced_pod(t.namespace, label_selector=f"{TENANT_LABEL}={t.name},"  # noqa: B023
                                     f"{iso.COMPONENT_LABEL}={iso.CONTROL_PLANE}",
                                     _request_timeout=kc.REQUEST_TIMEOUT))).items
        pods[t.name] = tuple(sorted(p.status.pod_ip for p in items
                                    if p.status is not None and p.status.pod_ip))
        svcs = kc.translated(f"listing the Services of {t.namespace}", lambda: (
            core.list_namespaced_service(t.namespace, _request_timeout=kc.REQUEST_TIMEOUT))).items  # noqa: B023
        ips = [s.spec.cluster_ip for s in svcs if s.metadata is not None and s.spec is not None
               and s.metadata.name == API_SERVICE and s.spec.cluster_ip]
        if ips:
            services[t.name] = ips[0]
    return SeedFacts(pods, services)


def exec_probe(cluster: Cluster, tenant: str, text: str) -> str:
    """``bash -c text`` in the tenant's probe pod; its output."""
    from kubernetes import client
    from kubernetes.stream import stream

    from metalseed.kube import client as kc

    core = client.CoreV1Api(kc.api_client(cluster))
    ns = cluster.tenant(tenant).namespace
    pod = _probe_pod(core, ns)
    return str(kc.translated(f"exec in Pod {ns}/{pod}", lambda: stream(
        core.connect_get_namespaced_pod_exec, pod, ns, command=["/bin/bash", "-c", text],
        stderr=True, stdin=False, stdout=True, tty=False, _request_timeout=60)))


def watch_script(address: str, connects: bool, seconds: int) -> str:
    """A loop in a probe pod: ``start <time>``, then ``seen <time>`` at the first connection
    attempt to ``address`` whose outcome is ``connects`` (``never`` after ``seconds``). Times
    are the pod's wall clock: the lab machines' kernel clock, the host's."""
    a = shlex.quote(address)
    want = "0" if connects else "1"
    return (f"echo start $EPOCHREALTIME; end=$((SECONDS+{int(seconds)})); "
            f"while [ $SECONDS -lt $end ]; do /agnhost connect {a} --timeout=500ms >/dev/null 2>&1;"
            f" r=$?; [ $r -eq 0 ] || r=1; if [ $r = {want} ]; then echo seen $EPOCHREALTIME; "
            "exit 0; fi; done; echo never")


def parse_watch(output: str) -> tuple[float, float | None]:
    """(start, seen or None) from :func:`watch_script`'s output."""
    start, seen = None, None
    for line in output.split("\n"):
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("start", "seen"):
            if parts[0] == "start":
                start = float(parts[1])
            else:
                seen = float(parts[1])
    if start is None:
        raise KubernetesError(f"the watch loop did not start: {output[-300:]!r}")
    return start, seen


def time_to_enforce(cluster: Cluster, tenant: str, address: str, connects: bool,
                    change: Callable[[], None], limit: int = 20) -> float:
    """Seconds from ``change()`` (its start, host wall clock) until the tenant's probe pod first
    sees ``address`` connect (``connects``) or fail to. The loop runs in the pod (one exec, its
    output read as it comes): the change is made only once the loop has said it started, so its
    first attempts see the old state. KubernetesError if it never sees the new one in ``limit``."""
    import time as _time

    from kubernetes import client
    from kubernetes.stream import stream

    from metalseed.kube import client as kc

    core = client.CoreV1Api(kc.api_client(cluster))
    ns = cluster.tenant(tenant).namespace
    pod = _probe_pod(core, ns)
    ws = kc.translated(f"exec in Pod {ns}/{pod}", lambda: stream(
        core.connect_get_namespaced_pod_exec, pod, ns,
        command=["/bin/bash", "-c", watch_script(address, connects, limit)], stderr=True,
        stdin=False, stdout=True, tty=False, _preload_content=False))
    text, changed = "", None
    deadline = _time.monotonic() + limit + 60
    try:
        while ws.is_open() and _time.monotonic() < deadline:
            ws.update(timeout=0.2)
            text += ws.read_stdout() if ws.peek_stdout() else ""
            if changed is None and "start " in text:
                changed = _time.time()
                change()
            if "seen " in text or "never" in text:
                break
    finally:
        ws.close()
    if changed is None:
        raise KubernetesError(f"the watch in {tenant}'s probe pod never started: {text!r}")
    start, seen = parse_watch(text)
    if start > changed:
        # The pod said "start" before the change was made: a later time means two clocks.
        raise KubernetesError(f"the probe pod's clock is {start - changed:.2f} s ahead: no "
                              "measurement")
    if seen is None:
        raise KubernetesError(f"{tenant} -> {address}: never {'connected' if connects else 'refused'}"
                              f" within {limit} s of the change")
    return max(0.0, seen - changed)


def _probe_pod(core: Any, ns: str) -> str:
    from metalseed.kube import client as kc
    from metalseed.tenants.enforce import PROBE_POD

    pods = kc.translated(f"listing the probe pods of {ns}", lambda: core.list_namespaced_pod(
        ns, label_selector=f"{iso.COMPONENT_LABEL}={iso.PROBE}", _request_timeout=10)).items
    running = sorted(p.metadata.name for p in pods if p.status.phase == "Running"
                     and not p.metadata.deletion_timestamp)
    if not running:
        raise KubernetesError(f"no running {PROBE_POD} pod in {ns}")
    return str(running[0])


# How long the edge's path to a tenant may stay not ready before the probe calls it failed. Right
# after seed.py rolled a control plane, the old API server pod is in its shutdown delay, serving
# but answering /readyz with 500 (so load balancers drain it), until the masters' kube-proxy
# drops it from the Service (seen in the lab: a tenant CA rotation's seed.py ended, its probe
# met the old pod). The path is the edge's, not a policy's: there is no deny to hide.
EDGE_READY_WITHIN = 15.0


def _edge(cluster: Cluster, tenant: str) -> str:
    from metalseed.kube import client as kc
    from metalseed.tenants.apply import tenant_api

    try:
        api = tenant_api(cluster, tenant)
    except KubernetesError as e:
        return str(e)
    deadline = time.monotonic() + EDGE_READY_WITHIN
    while (said := kc.readyz(api)) is not None and time.monotonic() < deadline:
        time.sleep(1)
    return "ok" if said is None else said


def run(cluster: Cluster) -> tuple[list[Probe], float]:
    """Every probe of :func:`plan`, run in parallel (one exec per tenant); the seconds it took."""
    from metalseed.tenants.enforce import inputs

    start = time.monotonic()
    # The nodes' podCIDRs matter to the policies, not to what is probed.
    probes = plan(cluster, facts(cluster), inputs(cluster))
    seen: dict[tuple[str, str], str] = {}

    def one(source: str) -> dict[tuple[str, str], str]:
        mine = [p for p in probes if p.source == source]
        if source == EDGE:
            return {key(p): _edge(cluster, p.target.split()[0]) for p in mine}
        try:
            got = parse(exec_probe(cluster, source, script(mine)))
        except KubernetesError as e:
            return {(source, p.address): f"{EXEC_FAILED}: {e}" for p in mine}
        return {(source, a): s for a, s in got.items()}

    with ThreadPoolExecutor(max_workers=8) as pool:
        for part in pool.map(one, sorted({p.source for p in probes})):
            seen.update(part)
    return judge(probes, seen), time.monotonic() - start
