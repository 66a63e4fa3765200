"""Driving etcd on a lab, for tests/lab/test_etcd.py and bench/etcd.py: deploys through pyinfra's
API, a continuous writer that records every acknowledged write, leader lookup."""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from metalseed import etcdclient
from metalseed.errors import DeployError
from metalseed.model import Cluster, Node, cluster_from_inventory
from metalseed.probe import BackgroundLoop


def lab_inventory(lab: Any, masters: Sequence[str] | None = None,
                  workers: Sequence[str] | None = None, **extra: Any) -> Any:
    """A pyinfra Inventory of a lab (see :func:`metalseed.lab.inventory.pyinfra_inventory`)."""
    from metalseed.lab.inventory import pyinfra_inventory

    return pyinfra_inventory(lab.require_state(), masters, workers, **extra)


class _Problems(logging.Handler):
    """The warnings and errors pyinfra logs during a run, without their terminal colours."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage()).strip())


@dataclass
class RunResult:
    state: Any
    changed: dict[str, list[str]]
    """host -> names of the operations that changed something."""
    seconds: float


def run_deploy(inventory: Any, deploy: Callable[..., Any], **kwargs: Any) -> RunResult:
    """Run one deploy through pyinfra's API; DeployError naming the hosts that failed."""
    from pyinfra.api import Config, State
    from pyinfra.api.connect import connect_all
    from pyinfra.api.deploy import add_deploy
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.operations import run_ops

    start = time.monotonic()
    problems = _Problems()
    logger = logging.getLogger("pyinfra")
    logger.addHandler(problems)
    try:
        state = State(inventory, Config())
        connect_all(state)
        add_deploy(state, deploy, **kwargs)
        stopped = None
        try:
            run_ops(state)
        except PyinfraError as e:  # "No hosts remaining!": every host failed
            stopped = str(e)
            problems.lines.append(stopped)
    finally:
        logger.removeHandler(problems)
    seconds = time.monotonic() - start
    failed = {h.name for h in state.failed_hosts}
    failed |= {h.name for h in state.inventory if state.get_results_for_host(h).error_ops}
    if stopped and not failed:  # pyinfra gave up without naming a host: still a failure
        failed = {"(the run)"}
    if failed:
        # pyinfra logs why an operation failed and keeps no record of it: without these lines
        # a failure in CI says only which host.
        raise DeployError(f"{getattr(deploy, '__name__', deploy)} failed on {sorted(failed)}:\n  "
                          + "\n  ".join(problems.lines[-20:]))
    changed: dict[str, list[str]] = {}
    for h in state.inventory:
        for op in state.get_op_order():
            data = state.ops[h].get(op)
            if data is not None and data.operation_meta.did_change():
                changed.setdefault(h.name, []).append(sorted(state.get_op_meta(op).names)[0])
    return RunResult(state, changed, seconds)


def client(cluster: Cluster, timeout: float = 2.0) -> etcdclient.EtcdClient:
    from metalseed.deploys.etcd import client_for

    return client_for(cluster, timeout=timeout)


def cluster_of(inventory: Any) -> Cluster:
    return cluster_from_inventory(inventory)


def leader(cluster: Cluster, c: etcdclient.EtcdClient) -> Node:
    """The master whose member is the leader, as the healthy members agree."""
    from metalseed.render.etcd import member_client_url

    by_url = {member_client_url(cluster, m): m for m in cluster.masters}
    ids = {}
    leaders = set()
    for url in by_url:
        try:
            st = c.status(url, timeout=1.0)
        except etcdclient.EtcdError:
            continue
        ids[st.member_id] = by_url[url]
        if st.leader:
            leaders.add(st.leader)
    if len(leaders) != 1 or next(iter(leaders)) not in ids:
        raise DeployError(f"no agreed etcd leader (leaders seen: {leaders})")
    return ids[next(iter(leaders))]


@dataclass
class Writer(BackgroundLoop):
    """Writes ``/probe/<run>/<seq>`` as fast as acknowledgements come, through any member that
    answers; keeps every acknowledged sequence number with its time."""

    thread_name = "etcd-writer"

    cluster: Cluster
    prefix: str = "/probe/"
    attempt_timeout: float = 0.3
    acked: list[tuple[int, float]] = field(default_factory=list)
    attempts: int = 0

    def _run(self) -> None:
        seq = 0
        with client(self.cluster, timeout=self.attempt_timeout) as c:
            while not self._stop.is_set():
                self.attempts += 1
                key = f"{self.prefix}{seq:08d}"
                try:
                    c.put(key, str(seq), timeout=self.attempt_timeout)
                except etcdclient.EtcdError:
                    # Unacknowledged: it may or may not have been applied; only acknowledged
                    # writes are promised. The next attempt uses a new key.
                    seq += 1
                    continue
                self.acked.append((seq, time.monotonic()))
                seq += 1

    def wait_acks(self, count: int, timeout: float = 10.0) -> None:
        start = len(self.acked)
        deadline = time.monotonic() + timeout
        while len(self.acked) < start + count:
            if time.monotonic() > deadline:
                raise DeployError(f"the writer got {len(self.acked) - start} of {count} "
                                  f"acknowledgements in {timeout:.0f}s")
            time.sleep(0.02)

    def last_ack_before(self, t: float) -> float:
        return max((at for _, at in self.acked if at <= t), default=float("nan"))

    def first_ack_after(self, t: float) -> float:
        return min((at for _, at in self.acked if at > t), default=float("nan"))

    def longest_gap(self, since: float = 0.0) -> float:
        """The longest time without an acknowledged write, from the last write before
        ``since`` on: with ``since`` just before a fault, how long writes stopped."""
        times = [at for _, at in self.acked]
        start = next((i for i, at in enumerate(times) if at > since), len(times))
        window = times[max(0, start - 1):]
        return max((b - a for a, b in itertools.pairwise(window)),
                   default=float("nan"))

    def lost(self, present: set[str]) -> list[int]:
        return [seq for seq, _ in self.acked if f"{self.prefix}{seq:08d}" not in present]
