"""Probing a Kubernetes cluster from outside while faults happen: a continuous API client through
the VIP, and the checks that say the cluster is whole again.

Used by the Kubernetes fault tests (tests/lab/test_kubernetes_faults.py) and
``bench/kubernetes.py``. The client is the official kubernetes client with the store's admin
kubeconfig (server: the VIP), three loops in threads, each bounded in time:

- a writer creating numbered ConfigMaps one after the other (a new number per attempt: a write
  that timed out may or may not have been applied, only acknowledged ones are promised);
- a lister listing them;
- a watcher watching them, resuming from the last resourceVersion it saw after any error.

Each loop keeps the monotonic times of its successes; the longest gap between two successes
around a fault is how long that kind of request stopped.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metalseed.errors import HealthCheckError, LabError
from metalseed.model import Cluster, Node
from metalseed.render.etcd import ETCDCTL_ENV_FILE

if TYPE_CHECKING:
    from metalseed.lab import Lab

PREFIX = "seq-"
# (connect, read) in seconds. A connection the crashed VIP holder took with it is noticed by the
# client's TCP keepalive (metalseed.kube.client.KEEPALIVE) within about a second, not by these.
# The read timeout is short because of etcd: a write that a follower had forwarded to a leader
# that then crashed is lost inside etcd, and the API server answers it only after etcd's request
# timeout (5 s + 2 x election timeout; etcd-io/etcd#5214), while a new write succeeds as soon as
# a new leader is elected. A careful client gives up on such a request and sends it again; the
# retry of a create that did land is answered 409 and counted as acknowledged (see _write).
WRITE_TIMEOUT = (1.0, 1.0)
LIST_TIMEOUT = (1.0, 1.0)
# How long a client retries one operation before it counts as failed.
OP_BUDGET = 10.0
# A watch reads a stream; a dead one is noticed by keepalive too. With a write every few ten
# milliseconds, 5 s without an event means something is wrong; a reconnect from the last
# resourceVersion costs no event.
WATCH_READ_TIMEOUT = 5.0


def seq_name(run: str, seq: int) -> str:
    return f"{PREFIX}{run}-{seq:07d}"


@dataclass
class Loop:
    """One loop's record: when each success completed, and the errors (time, text)."""

    name: str
    ok: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    """Every failed attempt."""
    failed: list[tuple[float, str]] = field(default_factory=list)
    """Operations that failed after the client's retries (OP_BUDGET)."""

    def longest_gap(self, since: float, until: float | None = None) -> float:
        """The longest time without a success, from the last success before ``since`` on (up to
        ``until``): with ``since`` the moment of a fault, how long this kind of request stopped.
        A loop with no success after ``since`` counts up to ``until`` (or now)."""
        end = until if until is not None else time.monotonic()
        start = next((i for i, t in enumerate(self.ok) if t > since), len(self.ok))
        window = [*self.ok[max(0, start - 1):], end] if start == len(self.ok) else \
            [t for t in self.ok[max(0, start - 1):] if t <= end]
        if not window:
            return float("nan")
        return max((b - a for a, b in itertools.pairwise(window)), default=0.0)

    def errors_since(self, since: float) -> list[str]:
        return [e for t, e in self.errors if t >= since]


def _short(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    body = getattr(e, "body", None)
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    return f"{type(e).__name__}: {text[:160]}" + (f" {str(body)[:240]}" if body else "")


class ApiClient:
    """Writer, lister and watcher against the API through the VIP, in daemon threads, for at most
    ``max_seconds``. Use as a context manager; ``stop()`` ends the loops."""

    def __init__(self, cluster: Cluster, namespace: str, max_seconds: float = 300,
                 pause: float = 0.02, kubeconfig: Path | None = None) -> None:
        self.cluster = cluster
        # None: the seed's own API (the store's admin kubeconfig); a tenant's admin.conf: its API.
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.max_seconds = max_seconds
        self.pause = pause
        self.writes = Loop("writes")
        self.lists = Loop("lists")
        self.watch = Loop("watch")
        self.acked: list[int] = []
        self.attempts = 0
        self.watched: set[str] = set()
        # Names of this client's own: a namespace may hold an earlier client's ConfigMaps.
        self.run = f"{time.time_ns() // 1_000_000 % 10**10:010d}"
        self._stop = threading.Event()
        # The writer starts once the watcher holds a resourceVersion: every write is after it.
        self._watching = threading.Event()
        self._writes_stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life

    def __enter__(self) -> ApiClient:
        self._deadline = time.monotonic() + self.max_seconds
        for target in (self._write, self._list, self._watch):
            t = threading.Thread(target=target, name=f"kubeprobe-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def finish(self, timeout: float = 30) -> None:
        """Stop writing, give the watcher up to ``timeout`` to see the last acknowledged write,
        then stop every loop."""
        self._writes_stopped.set()
        self._threads[0].join(timeout)
        deadline = time.monotonic() + timeout
        while self.unwatched() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _core(self) -> Any:
        from kubernetes import client as k8s

        from metalseed.kube.client import api_client

        # One ApiClient (one connection pool) per loop: a loop that waits on a dead connection
        # holds up no other loop.
        return k8s.CoreV1Api(api_client(self.cluster, self.kubeconfig))

    # -- loops

    def _attempt(self, loop: Loop, call: Callable[[], object], settled: Callable[[Any], bool]
                 ) -> bool:
        """One operation as a careful client makes it: retried on a connection that failed or a
        server error (5xx) until it succeeds or OP_BUDGET runs out. Every failed attempt is kept
        in ``loop.errors``; only an operation that ran out of budget is a failed request."""
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + OP_BUDGET
        while True:
            try:
                call()
                return True
            except ApiException as e:
                if settled(e):
                    return True
                loop.errors.append((time.monotonic(), _short(e)))
                if e.status is not None and 400 <= e.status < 500 and e.status != 429:
                    loop.failed.append((time.monotonic(), _short(e)))
                    return False
            except Exception as e:
                loop.errors.append((time.monotonic(), _short(e)))
            if not self._running() or time.monotonic() > deadline:
                loop.failed.append((time.monotonic(), loop.errors[-1][1]))
                return False
            self._stop.wait(self.pause)

    def _write(self) -> None:
        api = self._core()
        seq = 0
        while self._running() and not self._watching.wait(0.1):
            pass
        while self._running() and not self._writes_stopped.is_set():
            seq += 1
            self.attempts += 1
            body = {"metadata": {"name": seq_name(self.run, seq)}, "data": {"seq": str(seq)}}
            tries = [0]

            def create(body: dict[str, Any] = body, tries: list[int] = tries) -> None:
                tries[0] += 1
                api.create_namespaced_config_map(self.namespace, body,
                                                 _request_timeout=WRITE_TIMEOUT)

            # A retried create answered 409 AlreadyExists: an earlier attempt of this very write
            # was applied (the names are this client's own), so it is acknowledged now.
            def applied_before(e: Any, tries: list[int] = tries) -> bool:
                return bool(e.status == 409 and tries[0] > 1)

            if self._attempt(self.writes, create, applied_before):
                self.writes.ok.append(time.monotonic())
                self.acked.append(seq)
            self._stop.wait(self.pause)

    def _list(self) -> None:
        api = self._core()
        while self._running():
            if self._attempt(self.lists,
                             lambda: api.list_namespaced_config_map(
                                 self.namespace, limit=1, _request_timeout=LIST_TIMEOUT),
                             lambda e: False):
                self.lists.ok.append(time.monotonic())
            self._stop.wait(self.pause * 2)

    def _watch(self) -> None:
        from kubernetes import watch

        api = self._core()
        rv = ""
        while self._running():
            try:
                if not rv:
                    listed = api.list_namespaced_config_map(self.namespace, limit=1,
                                                            _request_timeout=LIST_TIMEOUT)
                    rv = listed.metadata.resource_version
                    self._watching.set()
                w = watch.Watch()
                for ev in w.stream(api.list_namespaced_config_map, self.namespace,
                                   resource_version=rv, timeout_seconds=60,
                                   _request_timeout=(LIST_TIMEOUT[0], WATCH_READ_TIMEOUT)):
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        # 410 Gone: the resourceVersion is too old; list again.
                        rv = ""
                        break
                    rv = obj.metadata.resource_version or rv
                    if ev["type"] == "ADDED":
                        self.watched.add(obj.metadata.name)
                        self.watch.ok.append(time.monotonic())
                    if not self._running():
                        w.stop()
                        break
            except Exception as e:
                self.watch.errors.append((time.monotonic(), _short(e)))
                if "410" in str(e) or "Expired" in str(e):
                    rv = ""
                self._stop.wait(self.pause)

    # -- waits and results

    def wait_steady(self, count: int = 10, timeout: float = 60) -> None:
        """Until each loop has ``count`` fresh successes (the client is up before a fault)."""
        marks = {lp.name: len(lp.ok) for lp in self.loops}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(len(lp.ok) >= marks[lp.name] + count for lp in self.loops):
                return
            time.sleep(0.05)
        seen = {lp.name: (len(lp.ok) - marks[lp.name], lp.errors[-1:]) for lp in self.loops}
        raise HealthCheckError(f"the API client did not get {count} successes of each kind "
                               f"within {timeout:.0f}s: {seen}")

    def wait_resumed(self, since: float, count: int = 5, timeout: float = 60) -> None:
        """Until each loop has ``count`` successes after ``since``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(sum(1 for t in lp.ok if t > since) >= count for lp in self.loops):
                return
            time.sleep(0.05)
        seen = {lp.name: (sum(1 for t in lp.ok if t > since), lp.errors[-2:]) for lp in self.loops}
        raise HealthCheckError(f"the API client did not resume within {timeout:.0f}s: {seen}")

    @property
    def loops(self) -> tuple[Loop, Loop, Loop]:
        return (self.writes, self.lists, self.watch)

    def gaps(self, since: float) -> dict[str, float]:
        return {lp.name: lp.longest_gap(since) for lp in self.loops}

    def failed(self, since: float) -> list[str]:
        """Writes and lists that failed after the client's retries."""
        return [e for lp in (self.writes, self.lists) for t, e in lp.failed if t >= since]

    def attempts_failed(self, since: float) -> int:
        return sum(len(lp.errors_since(since)) for lp in (self.writes, self.lists))

    def lost(self) -> list[int]:
        """Acknowledged writes whose ConfigMap the API does not have (read with paging)."""
        from kubernetes import client as k8s

        from metalseed.kube.client import api_client

        api: Any = k8s.CoreV1Api(api_client(self.cluster, self.kubeconfig))
        names: set[str] = set()
        token = None
        while True:
            page = api.list_namespaced_config_map(self.namespace, limit=500, _continue=token,
                                                  _request_timeout=30)
            names.update(i.metadata.name for i in page.items)
            token = page.metadata._continue
            if not token:
                break
        return [s for s in self.acked if seq_name(self.run, s) not in names]

    def unwatched(self) -> list[int]:
        """Acknowledged writes whose ADDED event the watcher never got."""
        return [s for s in self.acked if seq_name(self.run, s) not in self.watched]

    def summary(self, since: float) -> str:
        gaps = ", ".join(f"{k} {v:.2f} s" for k, v in self.gaps(since).items())
        return (f"longest gaps: {gaps}; {len(self.acked)} of {self.attempts} writes acknowledged, "
                f"{len(self.failed(since))} failed requests since the fault "
                f"({self.attempts_failed(since)} failed attempts, retried)")


# --------------------------------------------------------------------------------------------
# Is the cluster whole again?


def _units_active(lab: Lab, node: Node, units: Sequence[str]) -> str | None:
    out = lab.ssh(node.name, ["systemctl", "is-active", *units], timeout=15)
    states = out.stdout.split()
    bad = [f"{u}={s}" for u, s in zip(units, states, strict=False) if s != "active"]
    if len(states) != len(units):
        bad.append(f"(ssh: {out.returncode} {out.stderr.strip()[:100]})")
    return f"{node.name}: {', '.join(bad)}" if bad else None


def cluster_problems(lab: Lab, cluster: Cluster) -> str | None:
    try:
        return _problems(lab, cluster)
    except LabError as e:  # an SSH that did not answer in time (a loaded host): not whole yet
        return str(e)


def _problems(lab: Lab, cluster: Cluster) -> str | None:
    """None when the whole cluster is up: every machine running, every unit active, every
    component answering its health endpoint on its own node, etcd healthy on every member,
    every node Ready, the VIP on its expected holder. Else the first problems seen."""
    from metalseed.render import edge as re
    from metalseed.render import etcd as ret
    from metalseed.render import kubernetes as rk

    problems: list[str] = []
    for n in cluster.nodes:
        if not lab.is_running(n.name):
            problems.append(f"{n.name}: not running")
            continue
        units = [*rk.NODE_UNITS, "containerd.service"]
        checks = [f"http://127.0.0.1:{rk.KUBELET_HEALTHZ_PORT}/healthz",
                  f"http://127.0.0.1:{rk.PROXY_HEALTHZ_PORT}/healthz"]
        if n.is_master:
            units += [*rk.CONTROL_PLANE_UNITS, *re.UNITS, ret.UNIT_NAME]
            # /readyz needs credentials (anonymous auth is off): the master's kubelet-client pair.
            cert = f"{rk.PKI}/apiserver-kubelet-client"
            checks += [f"--cacert {rk.PKI}/ca.crt --cert {cert}.crt --key {cert}.key "
                       f"{rk.api_url(n.address, cluster.apiserver_port)}/readyz",
                       f"-k https://127.0.0.1:{rk.CM_PORT}/healthz",
                       f"-k https://127.0.0.1:{rk.SCHEDULER_PORT}/healthz"]
        bad = _units_active(lab, n, units)
        if bad:
            problems.append(bad)
            continue
        script = " && ".join(f"curl -fsS -o /dev/null --max-time 3 {c}" for c in checks)
        script += f" && test -s {rk.FLANNEL_SUBNET_FILE}"
        out = lab.ssh(n.name, script, timeout=30)
        if out.returncode != 0:
            problems.append(f"{n.name}: {(out.stderr.strip() or 'flannel subnet file')[-200:]}")
    if problems:
        return "; ".join(problems)
    from metalseed.deploys.etcd.common import wait_cluster_healthy

    try:
        wait_cluster_healthy(cluster, timeout=5)
    except HealthCheckError as e:
        return f"etcd: {e}"
    not_ready = nodes_not_ready(cluster)
    if not_ready:
        return not_ready
    held = holder(lab, cluster)
    expected = re.expected_holder(cluster).name
    if held != expected:
        return f"VIP on {held}, expected on {expected}"
    return None


def holder(lab: Lab, cluster: Cluster, names: Sequence[str] | None = None) -> str | None:
    """The master whose interface holds the VIP (None if none of those asked does); like
    edgeprobe.holder, with SSH given the time a loaded host needs (LabError if it does not
    answer)."""
    for m in cluster.masters:
        if (names is not None and m.name not in names) or not lab.is_running(m.name):
            continue
        out = lab.ssh(m.name, ["ip", "-4", "-o", "addr", "show", "dev", cluster.vip_interface],
                      timeout=30)
        if f" {cluster.vip}/" in out.stdout:
            return m.name
    return None


def wait_holder(lab: Lab, cluster: Cluster, expected: str | None = None,
                names: Sequence[str] | None = None, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    last: str | None = None
    while time.monotonic() < deadline:
        try:
            last = holder(lab, cluster, names)
        except LabError as e:
            last = str(e)
        if last is not None and last in [m.name for m in cluster.masters] and (
                expected is None or last == expected):
            return last
        time.sleep(0.2)
    raise HealthCheckError(f"VIP {cluster.vip}: holder is {last!r}, expected {expected or 'any'!r}")


def nodes_not_ready(cluster: Cluster) -> str | None:
    from kubernetes import client as k8s

    from metalseed.kube.client import api_client

    try:
        core: Any = k8s.CoreV1Api(api_client(cluster))
        nodes = core.list_node(_request_timeout=10).items
    except Exception as e:
        return f"nodes: {_short(e)}"
    ready = {n.metadata.name for n in nodes
             if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])}
    missing = sorted({n.name for n in cluster.nodes} - ready)
    return f"not Ready: {missing}" if missing else None


def wait_whole(lab: Lab, cluster: Cluster, timeout: float = 300,
               poll: Callable[[float], None] = time.sleep) -> float:
    """Until :func:`cluster_problems` finds none; returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout
    seen: str | None = "nothing yet"
    while time.monotonic() < deadline:
        seen = cluster_problems(lab, cluster)
        if seen is None:
            return time.monotonic() - start
        poll(2)
    raise HealthCheckError(f"the cluster was not whole again within {timeout:.0f}s (last: {seen})")


# etcd leadership, for the worst case of a master crash (the master that holds the VIP also leads
# etcd), through the etcdctl env file the etcd deploy writes on every member.
ETCDCTL_ENV = f"set -a; . {ETCDCTL_ENV_FILE}; set +a;"
ETCDCTL = f"{ETCDCTL_ENV} etcdctl"


def etcd_leader(lab: Lab, on: str) -> tuple[str, dict[str, int]]:
    """(the leader's client URL, member name -> member ID), as etcd reports it from ``on``."""
    members = json.loads(lab.ssh(on, f"{ETCDCTL} member list -w json", check=True,
                                 timeout=30).stdout)["members"]
    ids = {m["name"]: int(m["ID"]) for m in members}
    status = json.loads(lab.ssh(on, f"{ETCDCTL} endpoint status --cluster -w json", check=True,
                                timeout=30).stdout)
    leader = status[0]["Status"]["leader"]
    urls = [s["Endpoint"] for s in status if s["Status"]["header"]["member_id"] == leader]
    if leader not in ids.values() or not urls:
        raise HealthCheckError(f"etcd leader {leader:x} is not a member answering: {ids}")
    return urls[0], ids


def lead_etcd(lab: Lab, c: Cluster, name: str) -> None:
    """Make ``name`` the etcd leader (etcdctl move-leader, sent to the current leader)."""
    on = next(m.name for m in c.masters if m.name != name)
    url, ids = etcd_leader(lab, on)
    if not url.startswith(f"https://{c.node(name).address}:"):
        # Sent to the leader; etcdctl refuses --endpoints beside the env file's ETCDCTL_ENDPOINTS.
        lab.ssh(on, f"{ETCDCTL_ENV} ETCDCTL_ENDPOINTS={url} etcdctl move-leader {ids[name]:x}",
                check=True, timeout=30)
    url, _ = etcd_leader(lab, on)
    if not url.startswith(f"https://{c.node(name).address}:"):
        raise HealthCheckError(f"etcd leader is {url}, not {name}")
