"""Tenant isolation onto a seed, by the seed's network policy engine (``network_policy``):

- ``cilium`` (a seed's default): each tenant namespace's CiliumNetworkPolicies and the
  cluster-wide one (:mod:`metalseed.tenants.isolation`), validated offline against Cilium's CRD
  schemas; the agents themselves are node units (:mod:`metalseed.render.cilium`), up and healthy
  before this runs;
- ``kube-router``: its firewall as a DaemonSet (:mod:`metalseed.kube.netpol`) and the same intent
  as standard NetworkPolicies, validated against the pinned Kubernetes' schemas, the DaemonSet
  waited for on every seed node.

Either way each tenant namespace gets its probe pod; everything is server-side applied where a
dry run says anything would change.

The policies need the seed's nodes' podCIDRs (flannel's per-node addresses, which node
traffic to pods comes from): read from the seed's Node objects when the run is prepared. A node
added later changes them, and the next seed.py run applies that.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Generator
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, operation

from metalseed.errors import KubernetesError
from metalseed.kube import apply as ka
from metalseed.kube import client as kc
from metalseed.kube import crd, netpol, openapi
from metalseed.kube.tenant import TENANT_LABEL
from metalseed.kube.tenant import labels as tenant_labels
from metalseed.model import Cluster
from metalseed.tenants import isolation as iso
from metalseed.tenants.spec import TenantSpec

APPLY_OP = "seed: tenant isolation (NetworkPolicy engine, policies, probe pods)"
WAIT_OP = "seed: the NetworkPolicy engine runs on every seed node"
PROBE_POD = "isolation-probe"
RUN_AS = 65532


def inputs(cluster: Cluster, pod_cidrs: tuple[ipaddress.IPv4Network, ...] = ()
           ) -> iso.IsolationInputs:
    ds = cluster.datastore
    # A tenant's workers are hosts of the tenant_workers group (the model refuses seed nodes).
    workers = {t.name: tuple(n.address for n in cluster.workers_of(t.name))
               for t in cluster.tenants}
    return iso.IsolationInputs(
        datastore=tuple(m.address for m in ds.members) if ds else (),
        datastore_port=ds.etcd.client_port if ds else cluster.etcd.client_port,
        node_sources=iso.node_sources((n.address for n in cluster.nodes), pod_cidrs),
        tenant_workers=workers)


def probe_deployment(tenant: TenantSpec, image: str) -> dict[str, Any]:
    """One pod that only waits: ``agnhost connect`` runs in it (exec) to probe what the tenant's
    control plane may and may not reach. Restricted, as the namespace enforces. A Deployment, not
    a bare Pod: a Pod's spec cannot change, a Deployment's template rolls."""
    selector = {TENANT_LABEL: tenant.name, iso.COMPONENT_LABEL: iso.PROBE}
    # The tenant's own labels too, as on every object of its namespace (kube.tenant.labels).
    labels = {**tenant_labels(tenant), **selector}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": PROBE_POD, "namespace": tenant.namespace,
                     "labels": {**labels, **iso.MANAGED_BY}},
        "spec": {"replicas": 1, "selector": {"matchLabels": selector}, "template": {
            "metadata": {"labels": labels},
            "spec": {
                "automountServiceAccountToken": False, "enableServiceLinks": False,
                "terminationGracePeriodSeconds": 1,
                "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS,
                                    "runAsGroup": RUN_AS,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "probe", "image": image, "imagePullPolicy": "IfNotPresent",
                    "command": ["/agnhost"], "args": ["pause"],
                    # A matrix runs one agnhost per probe at once: 64Mi was OOM-killed (seen).
                    "resources": {"requests": {"cpu": "5m", "memory": "16Mi"},
                                  "limits": {"memory": "512Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": False,
                                        "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                }],
            }}},
    }


def pod_cidrs(cluster: Cluster) -> tuple[ipaddress.IPv4Network, ...]:
    """The seed's nodes' podCIDRs as the API has them ([] when it does not answer yet)."""
    from kubernetes import client

    try:
        # The typed client: no API discovery (seconds on a loaded seed).
        core = client.CoreV1Api(kc.api_client(cluster))
        nodes = kc.translated("listing Nodes", lambda: core.list_node(
            _request_timeout=kc.REQUEST_TIMEOUT)).items
    except KubernetesError:
        return ()
    return tuple(sorted(ipaddress.IPv4Network(n.spec.pod_cidr) for n in nodes
                        if n.spec is not None and n.spec.pod_cidr))


def objects(cluster: Cluster, cidrs: tuple[ipaddress.IPv4Network, ...] | None = None,
            bundle: bytes | None = None) -> list[dict[str, Any]]:
    if bundle is None:
        try:
            bundle = ka.ca_bundle(cluster)
        except KubernetesError:
            bundle = b""
    probe_image = ka.mirror_image(cluster, "agnhost")
    probes = [probe_deployment(t, probe_image) for t in cluster.tenants]
    cidrs = pod_cidrs(cluster) if cidrs is None else cidrs
    i = inputs(cluster, cidrs)
    if cilium(cluster):
        return [*iso.all_cilium(cluster.tenants, i), *probes]
    return [*netpol.objects(cluster, ka.mirror_image(cluster, netpol.NAME), bundle),
            *iso.all_network_policies(cluster.tenants, i), *probes]


def cilium(cluster: Cluster) -> bool:
    return cluster.kubernetes.network_policy == "cilium"


def validate(cluster: Cluster) -> None:
    """Offline: the Cilium policies against Cilium's CRD schemas (always: they are the intent's
    reference form), everything else this run applies against the pinned Kubernetes."""
    schemas = crd.load(cluster.mirror_dir)
    crd.validate(iso.all_cilium(cluster.tenants, inputs(cluster)), schemas)
    core = [o for o in objects(cluster, cidrs=(), bundle=b"")
            if not o["apiVersion"].startswith("cilium.io/")]
    openapi.validate(core, openapi.load(cluster.mirror_dir))


@operation()
def apply_isolation(cluster: Cluster) -> Generator[Any, None, None]:
    """Apply where anything would change (call with ``_run_once=True``); decided when the run is
    prepared by a server-side dry run, so a converged seed reports none."""
    if ka.pending_once(APPLY_OP, lambda: ka.pending(cluster, objects(cluster))):
        yield FunctionCommand(_apply, (cluster,), {})


def _apply(cluster: Cluster) -> None:
    objs = objects(cluster)
    if cilium(cluster):
        validate(cluster)
        ka.apply(cluster, objs)
    else:
        ka.validate_and_apply(cluster, objs)


def wait_engine(cluster: Cluster) -> None:
    if not cilium(cluster):
        ka.wait_daemonset_available(cluster, netpol.NAMESPACE, netpol.NAME, len(cluster.nodes))
    for t in cluster.tenants:
        ka.wait_deployment_available(cluster, t.namespace, PROBE_POD)


VERIFY_OP = "seed: tenant isolation proven (probe matrix)"


@operation()
def verify_isolation(cluster: Cluster) -> Generator[Any, None, None]:
    """Not a change: the probe matrix runs when the deploy executes; an unexpected result (or
    none at all) fails this operation with the table."""
    if not host.state.is_executing or not cluster.tenants:
        return
    from metalseed.deploys.gates import _raise
    from metalseed.errors import HealthCheckError
    from metalseed.tenants.verify import format_table, run

    try:
        probes, seconds = run(cluster)
    except Exception as e:
        yield FunctionCommand(_raise, (e,), {})
        return
    bad = [p for p in probes if not p.as_expected]
    host.log(f"probe matrix: {len(probes)} probes in {seconds:.1f} s, {len(bad)} unexpected")
    if bad:
        yield FunctionCommand(_raise, (HealthCheckError(
            f"seed: tenant isolation not as expected:\n{format_table(probes)}"),), {})
