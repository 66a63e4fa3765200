"""Tenant control planes onto their seed: each tenant's material read from the store, its objects
rendered by :mod:`metalseed.kube.tenant`, validated offline against the pinned schemas,
server-side applied on the seed (field manager ``metalseed``), then waited for on real conditions:
the tenant's Deployment rolled out and its API answering ``/readyz`` through the seed's edge (the
VIP, by SNI) with the tenant's own admin.conf.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from pyinfra.api import FunctionCommand, operation

from metalseed.errors import ArtifactError, DeployError, HealthCheckError, KubernetesError
from metalseed.kube import apply as ka
from metalseed.kube import client as kc
from metalseed.kube import openapi
from metalseed.kube.tenant import PDB, PKI_FILES, TENANT_LABEL, ControlPlaneInputs, control_plane
from metalseed.model import Cluster
from metalseed.pki.issue import store_for
from metalseed.pki.profiles import tenant_dir
from metalseed.tenants import datastore as ds
from metalseed.tenants.profiles import PROFILES
from metalseed.tenants.spec import TenantSpec

APPLY_OP = "seed: tenant control planes (server-side apply)"
DELETE_OP = "seed: control planes of tenants no longer in the data (namespace deleted, PKI archived)"
DELETE_TIMEOUT = 180.0
ARCHIVE_SUFFIX = ".archive"
"""A removed tenant's PKI goes to ``pki/<seed>.archive/tenants/<name>-<UTC time>/``: out of the live
store (nothing ships or renews it), kept for whatever it signed."""
WAIT_OP = "seed: every tenant's API answers /readyz through the edge"
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
READY_TIMEOUT = 300.0
DEPLOYMENT = "control-plane"


def store_files(cluster: Cluster, tenant: str) -> dict[str, str]:
    """File name in the tenant's Secret -> path of its source, relative to the seed's store."""
    d = tenant_dir(tenant)
    own = {f: f"{d}/{f}" for f in PKI_FILES if not f.startswith("datastore-")}
    # The API server trusts the CA bundle (the CA in charge and one being rotated in), not one CA.
    own["ca.crt"] = f"{d}/ca-bundle.crt"
    own["front-proxy-ca.crt"] = f"{d}/front-proxy-ca-bundle.crt"
    return {**own, "datastore-ca.crt": f"{ds.CA_BUNDLE_ID}.crt",
            "datastore-client.crt": f"{ds.client_id(tenant)}.crt",
            "datastore-client.key": f"{ds.client_id(tenant)}.key"}


def pki_files(cluster: Cluster, tenant: str) -> dict[str, bytes]:
    """The tenant's Secret's files from the store; KubernetesError naming what is missing."""
    store = store_for(cluster)
    out: dict[str, bytes] = {}
    missing = []
    for name, rel in store_files(cluster, tenant).items():
        data = store.read(store.root / rel)
        if data is None:
            missing.append(str(store.root / rel))
        else:
            out[name] = data
    if missing:
        raise KubernetesError(f"tenant {tenant}: the store lacks {', '.join(missing)} (run "
                              "`metalseed pki init INVENTORY`; the datastore's material comes "
                              "with the datastore)")
    return out


def images(cluster: Cluster, version: str) -> dict[str, str]:
    """The control plane images of ``version`` as the seed's nodes pull them."""
    from metalseed.mirror import load_manifest, load_pins

    out: dict[str, str] = {}
    for component in COMPONENTS:
        if cluster.mirror_url:
            found = [a for a in load_manifest(cluster.mirror_dir).images()
                     if a.name == f"{component}-image" and a.image]
            refs = [a.image for a in found if a.version == version and a.image]
            if not refs:
                held = sorted({a.version for a in found})
                raise ArtifactError(f"the mirror under {cluster.mirror_dir} has no {component} image "
                                    f"of {version} (it holds: {', '.join(held) or 'none'}; run "
                                    "`metalseed mirror build`)")
            out[component] = refs[0]
        else:
            pin = load_pins().get("kubernetes")
            if pin.version != version:
                raise ArtifactError(f"no {component} image of {version} is pinned (the kubernetes "
                                    f"pin is {pin.version})")
            out[component] = next(i for i in pin.images if f"/{component}:" in i)
    return out


def inputs(cluster: Cluster, tenant: TenantSpec, pki: dict[str, bytes]) -> ControlPlaneInputs:
    if cluster.datastore is None:
        raise DeployError("seed: tenants need the tenant datastore: a 'datastore' group of 1, 3 "
                          "or 5 hosts in the inventory")
    return ControlPlaneInputs(
        tenant=tenant, images=images(cluster, tenant.kubernetes_version),
        datastore_urls=tuple(cluster.datastore.client_urls()),
        # A tenant's cluster has networks of its own: only its workers use them, so the seed's
        # defaults serve (see kube.tenant).
        service_network=str(cluster.service_network), pod_network=str(cluster.pod_network),
        endpoint_name=cluster.tenant_endpoint(tenant.name), pki=pki)


def objects(cluster: Cluster, placeholder_pki: bool = False) -> list[dict[str, Any]]:
    """Every tenant's objects. ``placeholder_pki``: stand-in bytes for the material, for an
    offline check of the objects' shape before the store has any (a first or a dry run)."""
    out: list[dict[str, Any]] = []
    for t in cluster.tenants:
        pki = ({f: b"placeholder" for f in PKI_FILES} if placeholder_pki
               else pki_files(cluster, t.name))
        out.extend(control_plane(inputs(cluster, t, pki)))
    return out


def validate(cluster: Cluster) -> None:
    """Offline, before any host is touched: every tenant object fits the pinned schemas."""
    openapi.validate(objects(cluster, placeholder_pki=True), openapi.load(cluster.mirror_dir))


def admin_kubeconfig(cluster: Cluster, tenant: str) -> Path:
    return store_for(cluster).root / tenant_dir(tenant) / "admin.conf"


def tenant_api(cluster: Cluster, tenant: str) -> Any:
    """A client of ``tenant``'s API with its admin.conf: the seed's VIP, the endpoint as SNI."""
    from kubernetes.client import Configuration
    from kubernetes.config import new_client_from_config

    path = admin_kubeconfig(cluster, tenant)
    if not path.is_file():
        raise KubernetesError(f"no admin.conf for tenant {tenant} at {path} (run `metalseed pki "
                              "init INVENTORY`)")
    return new_client_from_config(config_file=str(path), client_configuration=Configuration())


def wait_ready(cluster: Cluster, timeout: float = READY_TIMEOUT) -> None:
    """Every tenant's Deployment rolled out, then its API's /readyz through the edge; a timeout
    names the tenants that did not come and what each said last."""
    deadline = time.monotonic() + timeout
    for t in cluster.tenants:
        ka.wait_deployment_available(cluster, t.namespace, DEPLOYMENT,
                                     timeout=max(1.0, deadline - time.monotonic()))
    waiting = {t.name: "nothing yet" for t in cluster.tenants}
    clients: dict[str, Any] = {}
    while waiting:
        for name in list(waiting):
            try:
                api = clients.get(name) or clients.setdefault(name, tenant_api(cluster, name))
                seen = kc.readyz(api)
            except KubernetesError as e:
                seen = str(e)
            if seen is None:
                del waiting[name]
            else:
                waiting[name] = seen
        if not waiting:
            return
        if time.monotonic() >= deadline:
            said = "; ".join(f"{n} at {cluster.tenant_endpoint(n)}: {s}"
                             for n, s in sorted(waiting.items()))
            raise HealthCheckError(f"seed: the API of tenant(s) {', '.join(sorted(waiting))} did "
                                   f"not answer /readyz through the edge (https://{cluster.vip}:"
                                   f"{cluster.apiserver_port}, by SNI) within {timeout:.0f}s "
                                   f"(last: {said})")
        time.sleep(kc.POLL)


def stale_pdbs(cluster: Cluster, pdbs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(namespace, name) of each tenant PodDisruptionBudget of a tenant still in the data whose
    profile no longer has one (demoted to one replica): server-side apply adds and changes
    objects, it never removes one the rendering stopped producing."""
    wanted = {t.namespace: PROFILES[t.profile].replicas > 1 for t in cluster.tenants}
    out = []
    for pdb in pdbs:
        meta = pdb.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        if name == PDB and (meta.get("labels") or {}).get(TENANT_LABEL) and \
                wanted.get(ns) is False:
            out.append((ns, name))
    return sorted(out)


def _pdbs(cluster: Cluster) -> list[dict[str, Any]]:
    dyn = kc.dynamic(kc.api_client(cluster))
    return ka._list(dyn, "policy/v1", "PodDisruptionBudget", label_selector=TENANT_LABEL)


@operation()
def apply_tenants(cluster: Cluster) -> Generator[Any, None, None]:
    """Apply every tenant's objects where any would change, and delete a demoted tenant's
    PodDisruptionBudget (call with ``_run_once=True``); decided when the run is prepared by a
    server-side dry run, so a converged seed reports none."""
    if ka.pending_once(APPLY_OP, lambda: _pending(cluster)):
        yield FunctionCommand(_apply, (cluster,), {})


def _pending(cluster: Cluster) -> list[str]:
    try:
        todo = objects(cluster)
    except KubernetesError:
        # A dry run before the store holds the material: all of it would be applied.
        todo = objects(cluster, placeholder_pki=True)
    try:
        stale = stale_pdbs(cluster, _pdbs(cluster))
    except KubernetesError:
        stale = []  # the API does not answer (yet): no PDB is known to be left over
    return [*ka.pending(cluster, todo), *(f"PodDisruptionBudget {ns}/{n} (delete)"
                                          for ns, n in stale)]


def _apply(cluster: Cluster) -> None:
    ka.validate_and_apply(cluster, objects(cluster))
    from kubernetes.client import PolicyV1Api

    policy = PolicyV1Api(kc.api_client(cluster))
    for ns, name in stale_pdbs(cluster, _pdbs(cluster)):
        def delete(ns: str = ns, name: str = name) -> Any:
            return policy.delete_namespaced_pod_disruption_budget(
                name, ns, _request_timeout=kc.REQUEST_TIMEOUT)

        kc.translated(f"deleting PodDisruptionBudget {ns}/{name}", delete)


def removed(cluster: Cluster, namespaces: list[dict[str, Any]]) -> list[str]:
    """Namespaces metalseed made for a tenant (its label, the ``tenant-<name>`` form) whose
    tenant is no longer in the data."""
    from metalseed.tenants.spec import NAMESPACE_PREFIX

    keep = {t.name for t in cluster.tenants}
    out = []
    for ns in namespaces:
        meta = ns.get("metadata") or {}
        name, label = meta.get("name", ""), (meta.get("labels") or {}).get(TENANT_LABEL)
        if label and name == f"{NAMESPACE_PREFIX}{label}" and label not in keep:
            out.append(name)
    return sorted(out)


def _namespaces(cluster: Cluster) -> list[dict[str, Any]]:
    dyn = kc.dynamic(kc.api_client(cluster))
    return ka._list(dyn, "v1", "Namespace", label_selector=TENANT_LABEL)


def archive_pki(cluster: Cluster, tenant: str, now: str) -> Path | None:
    """Move the removed ``tenant``'s directory out of the live store; None if there is none."""
    import shutil

    store = store_for(cluster)
    src = store.root / tenant_dir(tenant)
    if not src.is_dir():
        return None
    dst = store.root.with_name(store.root.name + ARCHIVE_SUFFIX) / tenant_dir(tenant)
    dst = dst.with_name(f"{dst.name}-{now}")
    dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.move(str(src), str(dst))
    return dst


def _delete(cluster: Cluster, names: list[str]) -> None:
    import datetime as dt

    dyn = kc.dynamic(kc.api_client(cluster))
    res = ka._resource(dyn, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "-"}})
    def delete(name: str) -> Any:
        return res.delete(name=name, _request_timeout=kc.REQUEST_TIMEOUT)

    for name in names:
        kc.translated(f"deleting Namespace {name}", lambda: delete(name))  # noqa: B023 (called at once)

    def check() -> str | None:
        left = [n for n in removed(cluster, _namespaces(cluster)) if n in names]
        return f"still there: {', '.join(left)}" if left else None

    kc.wait_for(f"Namespaces {', '.join(names)}", "gone (every object in them deleted)", check,
                DELETE_TIMEOUT)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    from metalseed.tenants.spec import NAMESPACE_PREFIX

    for name in names:
        archive_pki(cluster, name.removeprefix(NAMESPACE_PREFIX), stamp)


@operation()
def delete_removed(cluster: Cluster) -> Generator[Any, None, None]:
    """Delete the namespace of every tenant no longer in the data, then archive its PKI (call
    with ``_run_once=True``); decided when the run is prepared."""
    def compute() -> list[str]:
        try:
            return removed(cluster, _namespaces(cluster))
        except KubernetesError:
            return []  # the API does not answer (yet): nothing is known to remove

    todo = ka.pending_once(DELETE_OP, compute, verb="delete")
    if todo:
        yield FunctionCommand(_delete, (cluster, todo), {})
