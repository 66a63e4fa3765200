"""Nodes through the API, from the operator's machine: what version each runs, and ``kubectl
drain`` semantics with the official client -- cordon, evict every pod the node runs (the Eviction
API, so PodDisruptionBudgets are respected: a refused eviction is retried until the budget allows
it), wait until they are gone -- then uncordon.

A node metalseed cordons carries the annotation :data:`CORDONED`, so a rerun after a failed run
uncordons exactly the nodes it cordoned itself and never one an operator cordoned by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metalseed.errors import HealthCheckError, KubernetesError
from metalseed.kube import client as kc
from metalseed.model import Cluster

CORDONED = "metalseed.dev/cordoned-for"
DRAIN_TIMEOUT = 300.0
READY_TIMEOUT = 300.0
EVICTION_RETRY = 2.0


@dataclass(frozen=True)
class NodeState:
    name: str
    kubelet_version: str
    unschedulable: bool
    cordoned_by_us: bool


def _core(cluster: Cluster) -> Any:
    from kubernetes import client

    return client.CoreV1Api(kc.api_client(cluster))


def node_states(cluster: Cluster) -> dict[str, NodeState]:
    core = _core(cluster)
    items = kc.translated("listing Nodes", lambda: core.list_node(
        _request_timeout=kc.REQUEST_TIMEOUT)).items
    return {n.metadata.name: NodeState(
        name=n.metadata.name,
        kubelet_version=n.status.node_info.kubelet_version if n.status and n.status.node_info
        else "",
        unschedulable=bool(n.spec.unschedulable) if n.spec else False,
        cordoned_by_us=CORDONED in (n.metadata.annotations or {}),
    ) for n in items}


def apiserver_version(cluster: Cluster, address: str) -> str:
    """gitVersion of one master's own API server (not the VIP's pick)."""
    from kubernetes import client

    api = kc.api_client(cluster)
    api.configuration.host = f"https://{address}:{cluster.apiserver_port}"
    info = kc.translated(f"reading /version of the API server on {address}", lambda: client.VersionApi(
        api).get_code(_request_timeout=kc.REQUEST_TIMEOUT))
    return str(info.git_version)


def _patch_node(cluster: Cluster, name: str, body: dict[str, Any]) -> None:
    core = _core(cluster)
    kc.translated(f"patching Node {name}", lambda: core.patch_node(
        name, body, _request_timeout=kc.REQUEST_TIMEOUT))


def cordon(cluster: Cluster, name: str, why: str) -> None:
    _patch_node(cluster, name, {"metadata": {"annotations": {CORDONED: why}},
                                "spec": {"unschedulable": True}})


def uncordon(cluster: Cluster, name: str) -> None:
    _patch_node(cluster, name, {"metadata": {"annotations": {CORDONED: None}},
                                "spec": {"unschedulable": None}})


def _evictable(pod: Any) -> bool:
    """What ``kubectl drain --ignore-daemonsets`` evicts: not DaemonSet pods (their controller
    would put them straight back), not static pods' mirrors (the kubelet owns them)."""
    owners = pod.metadata.owner_references or []
    if any(o.kind == "DaemonSet" for o in owners):
        return False
    return "kubernetes.io/config.mirror" not in (pod.metadata.annotations or {})


def _pods_on(core: Any, node: str) -> list[Any]:
    pods = kc.translated(f"listing the pods on {node}", lambda: core.list_pod_for_all_namespaces(
        field_selector=f"spec.nodeName={node}", _request_timeout=kc.REQUEST_TIMEOUT)).items
    return [p for p in pods if _evictable(p)]


def drain(cluster: Cluster, name: str, why: str, timeout: float = DRAIN_TIMEOUT,
          log: Callable[[str], None] = lambda _: None) -> None:
    """Cordon ``name``, evict its pods (respecting PodDisruptionBudgets), wait until they are gone.

    A pod no controller owns would not come back anywhere: it is refused, naming it, as kubectl
    drain refuses without --force."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = _core(cluster)
    cordon(cluster, name, why)
    pods = _pods_on(core, name)
    bare = [f"{p.metadata.namespace}/{p.metadata.name}" for p in pods
            if not p.metadata.owner_references]
    if bare:
        raise KubernetesError(f"draining Node {name}: pods no controller owns would be lost: "
                              f"{', '.join(bare)} (move or delete them first)")
    deadline = time.monotonic() + timeout
    waiting = {(p.metadata.namespace, p.metadata.name): p.metadata.uid for p in pods}
    pending = dict(waiting)
    while pending:
        for (ns, pod), _uid in list(pending.items()):
            body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=ns))
            try:
                core.create_namespaced_pod_eviction(pod, ns, body,
                                                    _request_timeout=kc.REQUEST_TIMEOUT)
            except ApiException as e:
                if e.status == 429 and time.monotonic() < deadline:
                    continue  # a PodDisruptionBudget says not now: try again shortly
                if e.status != 404:
                    raise KubernetesError(f"evicting Pod {ns}/{pod} from {name}: the API "
                                          f"answered {e.status} {e.reason}: "
                                          f"{str(e.body)[:300]}") from e
            pending.pop((ns, pod))
            log(f"evicted Pod {ns}/{pod} from {name}")
        if pending:
            if time.monotonic() >= deadline:
                raise HealthCheckError(f"kubernetes: draining Node {name}: evictions still "
                                       f"refused after {timeout:.0f}s (PodDisruptionBudget): "
                                       f"{', '.join(f'{a}/{b}' for a, b in pending)}")
            time.sleep(EVICTION_RETRY)

    def gone() -> str | None:
        left = [f"{p.metadata.namespace}/{p.metadata.name}" for p in _pods_on(core, name)
                if waiting.get((p.metadata.namespace, p.metadata.name)) == p.metadata.uid]
        return f"still there: {', '.join(left)}" if left else None

    kc.wait_for(f"Node {name}", "every evicted pod gone", gone,
                max(deadline - time.monotonic(), 30.0))


def wait_node_at(cluster: Cluster, name: str, version: str, timeout: float = READY_TIMEOUT) -> None:
    """Until Node ``name`` is Ready and its kubelet reports ``version``."""
    core = _core(cluster)

    def check() -> str | None:
        n = kc.translated(f"reading Node {name}", lambda: core.read_node(
            name, _request_timeout=kc.REQUEST_TIMEOUT))
        running = n.status.node_info.kubelet_version if n.status and n.status.node_info else "?"
        ready = next((c for c in (n.status.conditions or []) if c.type == "Ready"), None)
        if ready is not None and ready.status == "True" and running == version:
            return None
        return (f"kubelet {running}, Ready={ready.status if ready else '?'}"
                f" ({ready.message if ready else 'no condition yet'})")

    kc.wait_for(f"Node {name}", f"condition Ready=True with kubelet {version}", check, timeout)
