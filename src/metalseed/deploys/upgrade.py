"""Kubernetes upgrades: ``pyinfra INVENTORY deploys/kubernetes-upgrade.py --data
kubernetes_version=v1.36.3`` moves a running cluster to ``kubernetes_version`` (a release the pins
hold), one minor version at a time.

When the run is prepared, before any host is touched, the operator's machine reads what runs --
every master's own API server (``/version``) and every node's kubelet -- and refuses a downgrade
or a skip of a minor version, naming the component, what it runs and what would be accepted.
Then, each step health-gated:

1. masters, one at a time: the new ``kube`` binary, then the control plane (each component
   restarts behind its health check; the next master waits for this one's ``/readyz``), so the
   API servers are all at the target before any kubelet is newer than one of them;
2. every node, masters first, then the workers, one at a time: drained (cordoned, pods evicted
   through the Eviction API, so PodDisruptionBudgets hold, and gone), kubelet and kube-proxy on
   the new binary, then Ready with the new kubelet version, then uncordoned.

A rerun at the target changes nothing: every binary's stamp and unit already match and no node
needs draining. A node the previous run cordoned and did not uncordon (a failed run) is
uncordoned; one an operator cordoned by hand is left alone (see :mod:`metalseed.kube.nodes`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pyinfra import host
from pyinfra.api import deploy

from metalseed.deploys import artifacts
from metalseed.deploys import kubernetes as k
from metalseed.deploys.converge import HostSpec, converge
from metalseed.deploys.gates import call_if, gate, shared
from metalseed.errors import DeployError, KubernetesError, ModelError
from metalseed.kube import nodes as kn
from metalseed.model import Cluster, Node, cluster_from_inventory

_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int, int]:
    m = _VERSION.match(text)
    if not m:
        raise ValueError(f"not a Kubernetes version: {text!r}")
    return int(m[1]), int(m[2]), int(m[3])


def check_step(target: str, running: dict[str, str]) -> None:
    """Refuse a downgrade or a skipped minor: ``running`` maps what (``kubelet on w1``) to its
    version. Every problem at once, as ModelError naming kubernetes_version."""
    t = parse_version(target)
    problems: list[str] = []
    for what, version in sorted(running.items()):
        v = parse_version(version)
        if t < v:
            problems.append(f"{what} runs {version}: no downgrade (a release no older than "
                            f"{version})")
        elif t[:1] != v[:1] or t[1] > v[1] + 1:
            nxt = f"v{v[0]}.{v[1] + 1}"
            problems.append(f"{what} runs {version}: one minor version at a time (a release of "
                            f"v{v[0]}.{v[1]} or {nxt} first)")
    if problems:
        raise ModelError("kubernetes_version", target, "; ".join(problems))


@dataclass(frozen=True)
class Plan:
    target: str
    kubelets: dict[str, str]
    apiservers: dict[str, str]
    cordoned_by_us: frozenset[str]

    def node_needs_drain(self, name: str) -> bool:
        return self.kubelets.get(name) != self.target

    def node_needs_uncordon(self, name: str) -> bool:
        return self.node_needs_drain(name) or name in self.cordoned_by_us


def plan(cluster: Cluster) -> Plan:
    """What runs now (from the API) and whether the step to the target is allowed."""
    target = k.release(cluster)
    try:
        states = kn.node_states(cluster)
        apiservers = {m.name: kn.apiserver_version(cluster, str(m.address))
                      for m in cluster.masters}
    except KubernetesError as e:
        raise DeployError(f"kubernetes-upgrade: cannot read what the cluster runs: {e} (an "
                          "upgrade starts from a running cluster: deploys/cluster.py first)") from e
    missing = [n.name for n in cluster.nodes if n.name not in states]
    if missing:
        raise DeployError(f"kubernetes-upgrade: nodes not registered with the API: "
                          f"{', '.join(missing)} (deploys/kubernetes.py first)")
    kubelets = {n.name: states[n.name].kubelet_version for n in cluster.nodes}
    running = {f"kube-apiserver on {m}": v for m, v in apiservers.items()}
    running |= {f"kubelet on {n}": v for n, v in kubelets.items()}
    check_step(target, running)
    return Plan(target, kubelets, apiservers,
                frozenset(n for n, s in states.items() if s.cordoned_by_us))


def _drain(state: Any, host: Any, cluster: Cluster, node: str, target: str) -> None:
    del state
    kn.drain(cluster, node, f"kubernetes-upgrade to {target}", log=host.log)


def _uncordon(state: Any, host: Any, cluster: Cluster, node: str) -> None:
    del state, host
    kn.uncordon(cluster, node)


@deploy("metalseed kubernetes-upgrade: masters one at a time, then each node drained")
def kubernetes_upgrade() -> None:
    cluster = cluster_from_inventory(host.inventory)
    if not cluster.kubernetes.enabled:
        raise DeployError("kubernetes-upgrade: set kubernetes = True")
    me = k._this_node(cluster)
    the_plan: Plan = shared(host.state, "kubernetes-upgrade plan", lambda: plan(cluster))
    target = the_plan.target
    k._shared("objects valid", lambda: k.ka.validate_all(cluster))
    todo = k._shared("downloads", lambda: k.downloads(cluster))
    kube, flanneld = k._shared("binaries", lambda: k.binaries(cluster))
    # Every host makes the same calls; the host a step is for gets the work, the others an
    # empty operation (no command, not even a fact).
    for m in host.loop(cluster.masters):
        mine = me == m
        artifacts.install(name=f"upgrade {m.name}: binaries ({target})",
                          downloads=todo if mine else ())
        converge(name=f"upgrade {m.name}: control plane ({target}, behind /readyz)",
                 spec=k.master_spec(cluster, m, kube) if mine else HostSpec())
    for n in host.loop(cluster.nodes):
        _node_step(cluster, the_plan, me, n, todo, kube, flanneld)


def _node_step(cluster: Cluster, the_plan: Plan, me: Node, n: Node,
               todo: tuple[artifacts.Download, ...], kube: Any, flanneld: Any) -> None:
    mine, target = me == n, the_plan.target
    call_if(name=f"upgrade {n.name}: drain (cordon, evict respecting PodDisruptionBudgets)",
            needed=the_plan.node_needs_drain(n.name), function=_drain, cluster=cluster,
            node=n.name, target=target, _run_once=True)
    # A master's binary came with its control plane.
    artifacts.install(name=f"upgrade {n.name}: binaries ({target})",
                      downloads=todo if mine and not n.is_master else ())
    converge(name=f"upgrade {n.name}: kubelet, kube-proxy, flanneld ({target})",
             spec=k.node_spec(cluster, n, kube, flanneld) if mine else HostSpec())
    gate(name=f"upgrade {n.name}: Ready with kubelet {target}", description=n.name,
         check=lambda: kn.wait_node_at(cluster, n.name, target), _run_once=True)
    call_if(name=f"upgrade {n.name}: uncordon", needed=the_plan.node_needs_uncordon(n.name),
            function=_uncordon, cluster=cluster, node=n.name, _run_once=True)
