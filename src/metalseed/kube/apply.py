"""Cluster objects into the API: server-side apply (field manager ``metalseed``), then waits on
real conditions (every node Ready, CoreDNS Available, the ingress controller available on every
worker).

Whether anything would change is decided when the run is prepared: each object is applied with
``dryRun=All`` and compared with what the API holds, so a converged cluster reports no change
(and an API that does not answer yet -- the first run -- means everything will be applied).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

from pyinfra import host
from pyinfra.api import FunctionCommand, operation

from metalseed.errors import ArtifactError, KubernetesError
from metalseed.kube import client as kc
from metalseed.kube import ingress, openapi
from metalseed.kube import objects as o
from metalseed.model import Cluster

FIELD_MANAGER = "metalseed"
WAIT_OP = "kubernetes: every node Ready, CoreDNS and the ingress controller available"
NODES_TIMEOUT = 300.0
DEPLOYMENT_TIMEOUT = 300.0
ROOT_CA_TIMEOUT = 120.0
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
_VOLATILE = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid")


def mirror_image(cluster: Cluster, component: str) -> str:
    """``component``'s image as the mirror names it (containerd pulls it through the mirror), or
    the pinned upstream reference without a mirror."""
    from metalseed.mirror import load_manifest, load_pins

    if cluster.mirror_url:
        refs = [a.image for a in load_manifest(cluster.mirror_dir).images()
                if (a.component or a.name) == component and a.image]
        if not refs:
            raise ArtifactError(f"the mirror manifest under {cluster.mirror_dir} has no {component} "
                                "image (run `metalseed mirror build`)")
        return refs[0]
    return load_pins().get(component).images[0]


def coredns_image(cluster: Cluster) -> str:
    return mirror_image(cluster, "coredns")


def traefik_image(cluster: Cluster) -> str:
    return mirror_image(cluster, "traefik")


def describe(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {ns}{meta['name']}"


def _resource(dyn: Any, obj: dict[str, Any]) -> Any:
    return kc.translated(describe(obj), lambda: dyn.resources.get(api_version=obj["apiVersion"],
                                                                  kind=obj["kind"]))


APPLY_TRIES = 3


def _apply_one(dyn: Any, obj: dict[str, Any], dry_run: bool) -> Any:
    meta = obj["metadata"]
    extra = {"dry_run": "All"} if dry_run else {}
    for attempt in range(1, APPLY_TRIES + 1):
        try:
            return kc.translated(f"applying {describe(obj)}", lambda: _resource(
                dyn, obj).server_side_apply(body=obj, name=meta["name"],
                                            namespace=meta.get("namespace"),
                                            field_manager=FIELD_MANAGER, force_conflicts=True,
                                            _request_timeout=kc.REQUEST_TIMEOUT, **extra))
        except KubernetesError as e:
            # A connection the API server dropped (seen once, at load average 200, right after
            # the masters restarted) is tried again: an apply is idempotent. A refusal is not.
            if attempt == APPLY_TRIES or not isinstance(e.__cause__, (OSError, _http_errors())):
                raise
            time.sleep(2.0 * attempt)
    raise AssertionError("unreachable")


def _http_errors() -> type[Exception]:
    from urllib3.exceptions import HTTPError

    return HTTPError


def _stable(obj: Any) -> dict[str, Any]:
    d = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    d.pop("status", None)
    d["metadata"] = {k: v for k, v in d.get("metadata", {}).items() if k not in _VOLATILE}
    return d


def pending(cluster: Cluster, objects: list[dict[str, Any]], api: Any = None) -> list[str]:
    """The objects a real apply would change ([] on a converged cluster); every object when the
    API does not answer (yet). ``api``: another cluster's client (a tenant's) than the seed's."""
    try:
        api = api or kc.api_client(cluster)
        if kc.readyz(api) is not None:
            return [describe(x) for x in objects]
        dyn = kc.dynamic(api)
        out = []
        for obj in objects:
            meta = obj["metadata"]
            try:
                current = _resource(dyn, obj).get(name=meta["name"], namespace=meta.get("namespace"),
                                                   _request_timeout=kc.REQUEST_TIMEOUT)
            except Exception:  # not there (404) or not readable: applying decides
                out.append(describe(obj))
                continue
            if _stable(_apply_one(dyn, obj, dry_run=True)) != _stable(current):
                out.append(describe(obj))
        return out
    except KubernetesError:
        return [describe(x) for x in objects]


def apply(cluster: Cluster, objects: list[dict[str, Any]], api: Any = None) -> None:
    dyn = kc.dynamic(api or kc.api_client(cluster))
    for obj in objects:
        _apply_one(dyn, obj, dry_run=False)


def validate_and_apply(cluster: Cluster, objects: list[dict[str, Any]], api: Any = None) -> None:
    """Apply after validating against the pinned schemas again: the objects are rendered anew
    when the run executes, from a store the run may have just written."""
    openapi.validate(objects, openapi.load(cluster.mirror_dir))
    apply(cluster, objects, api)


def pending_once(key: str, compute: Callable[[], list[str]], verb: str = "apply") -> list[str]:
    """What an operation named ``key`` would change, computed once per run when it is prepared
    (every host then agrees, and a converged cluster costs no second look); logged on a dry run."""
    cache: dict[str, list[str]] = host.state.__dict__.setdefault("_metalseed_kube_pending", {})
    if key not in cache:
        cache[key] = compute()
    if not host.state.is_executing and cache[key]:
        host.log(f"would {verb}: {', '.join(cache[key])}")
    return cache[key]


def wait_nodes_registered(cluster: Cluster, timeout: float = NODES_TIMEOUT) -> None:
    api = kc.api_client(cluster)
    dyn = kc.dynamic(api)
    nodes = _resource(dyn, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "-"}})
    wanted = {n.name for n in cluster.nodes}

    def check() -> str | None:
        items = kc.translated("listing Nodes", lambda: nodes.get(_request_timeout=kc.REQUEST_TIMEOUT))
        missing = wanted - {i.metadata.name for i in items.items}
        return f"not registered: {', '.join(sorted(missing))}" if missing else None

    kc.wait_for("Nodes " + ", ".join(sorted(wanted)), "registration", check, timeout)


def wait_nodes_ready(cluster: Cluster, timeout: float = NODES_TIMEOUT) -> None:
    api = kc.api_client(cluster)
    dyn = kc.dynamic(api)
    nodes = _resource(dyn, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "-"}})
    wanted = sorted(n.name for n in cluster.nodes)

    def check() -> str | None:
        items = kc.translated("listing Nodes", lambda: nodes.get(_request_timeout=kc.REQUEST_TIMEOUT))
        by_name = {i.metadata.name: i.to_dict() for i in items.items}
        bad = []
        for name in wanted:
            if name not in by_name:
                bad.append(f"Node {name}: not registered")
                continue
            cond = kc.condition(by_name[name], "Ready")
            if cond is None or cond[0] != "True":
                bad.append(f"Node {name}: Ready={cond[0] if cond else '?'} "
                           f"({cond[1] if cond else 'no condition yet'})")
        return "; ".join(bad) or None

    kc.wait_for("Nodes " + ", ".join(wanted), "condition Ready=True", check, timeout)


def _selector(selector: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))


def _pod_state(pod: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """One pod as an operator reads it: where, each container's state and restarts, the last
    termination, the newest warning event (a failing probe says why here)."""
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    parts = [f"{meta.get('name')} on {(pod.get('spec') or {}).get('nodeName') or '-'} "
             f"{st.get('phase')}"]
    unscheduled = kc.condition(pod, "PodScheduled")
    if unscheduled and unscheduled[0] != "True":
        parts.append(f"unscheduled: {unscheduled[1]}")
    for cs in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]:
        state = cs.get("state") or {}
        now = next(iter(state), "?")
        why = (state.get(now) or {}).get("reason") or ""
        last = (cs.get("lastState") or {}).get("terminated") or {}
        parts.append(f"{cs.get('name')}: {now}{' ' + why if why else ''}, "
                     f"ready={cs.get('ready')}, restarts={cs.get('restartCount')}"
                     + (f", last exit {last.get('exitCode')} {last.get('reason') or ''}".rstrip()
                        if last else ""))
    mine = [e for e in events if (e.get("involvedObject") or {}).get("name") == meta.get("name")
            and e.get("type") == "Warning"]
    if mine:
        newest = max(mine, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        parts.append(f"warning: {newest.get('reason')}: {str(newest.get('message'))[:300]}")
    return "; ".join(parts)


def pods_summary(dyn: Any, namespace: str, selector: dict[str, Any]) -> str:
    """The pods behind a workload that is not ready, for the error that names it."""
    try:
        pods = _list(dyn, "v1", "Pod", namespace=namespace, label_selector=_selector(selector))
        events = _list(dyn, "v1", "Event", namespace=namespace)
    except KubernetesError as e:
        return f"pods not readable: {e}"
    return " | ".join(_pod_state(p, events) for p in pods) or "no pods"


def wait_deployment_available(cluster: Cluster, namespace: str, name: str,
                              timeout: float = DEPLOYMENT_TIMEOUT) -> None:
    dyn = kc.dynamic(kc.api_client(cluster))
    deployments = _resource(dyn, {"apiVersion": "apps/v1", "kind": "Deployment",
                                  "metadata": {"name": name}})

    selector: dict[str, Any] = {}

    def check() -> str | None:
        d = kc.translated(f"reading Deployment {namespace}/{name}", lambda: deployments.get(
            name=name, namespace=namespace, _request_timeout=kc.REQUEST_TIMEOUT)).to_dict()
        selector.update((d.get("spec") or {}).get("selector") or {})
        cond = kc.condition(d, "Available")
        status = d.get("status") or {}
        want = (d.get("spec") or {}).get("replicas", 1)
        ready = status.get("readyReplicas") or 0
        # Rolled out too (as `kubectl rollout status` has it): every replica from the current
        # template and no old one left, so a changed template (a new trust bundle) is in effect.
        updated = status.get("updatedReplicas") or 0
        total = status.get("replicas") or 0
        observed = status.get("observedGeneration") or 0
        generation = (d.get("metadata") or {}).get("generation") or 0
        if (cond and cond[0] == "True" and ready >= want and updated >= want and total <= want
                and observed >= generation):
            return None
        return (f"Available={cond[0] if cond else '?'}, {ready}/{want} ready, {updated} updated, "
                f"{total} in all ({cond[1] if cond else ''})")

    kc.wait_for(f"Deployment {namespace}/{name}", "condition Available=True with every replica "
                "ready and rolled out", check, timeout,
                explain=lambda: pods_summary(dyn, namespace, selector))


def wait_daemonset_available(cluster: Cluster, namespace: str, name: str, nodes: int,
                             timeout: float = DEPLOYMENT_TIMEOUT) -> None:
    """Until the DaemonSet's current pods run and are available on all ``nodes`` it selects."""
    dyn = kc.dynamic(kc.api_client(cluster))
    daemonsets = _resource(dyn, {"apiVersion": "apps/v1", "kind": "DaemonSet",
                                 "metadata": {"name": name}})

    def check() -> str | None:
        d = kc.translated(f"reading DaemonSet {namespace}/{name}", lambda: daemonsets.get(
            name=name, namespace=namespace, _request_timeout=kc.REQUEST_TIMEOUT)).to_dict()
        st = d.get("status") or {}
        desired = st.get("desiredNumberScheduled") or 0
        updated = st.get("updatedNumberScheduled") or 0
        available = st.get("numberAvailable") or 0
        seen = (d.get("metadata") or {}).get("generation") == st.get("observedGeneration")
        if seen and desired >= nodes and updated == desired and available == desired:
            return None
        return (f"{available} available, {updated} updated of {desired} scheduled "
                f"(want {nodes}){'' if seen else ', spec change not observed yet'}")

    kc.wait_for(f"DaemonSet {namespace}/{name}", f"every pod available on {nodes} node(s)", check,
                timeout)


BOOTSTRAP = "bootstrap"
ADDONS = "addons"
BOOTSTRAP_OP = "kubernetes: RBAC for the node agents, Cilium's CRDs (server-side apply)"
ADDONS_OP = "kubernetes: CoreDNS, node roles, the ingress controller (server-side apply)"


OBJECT_SETS = (BOOTSTRAP, ADDONS)


def _rendered(cluster: Cluster, which: str) -> list[dict[str, Any]]:
    if which == BOOTSTRAP:
        if cluster.kubernetes.network_policy != "cilium":
            return o.bootstrap_objects()
        from metalseed.kube import cilium, crd

        return [*o.bootstrap_objects(), *cilium.objects(crd.load(cluster.mirror_dir))]
    # Only the digest of the bundle goes into objects: validating them against the schemas
    # (before a dry run or a first run has a store) needs no real one. Applying does: it first
    # waits for kube-root-ca.crt to hold the store's bundle, which reads it strictly.
    try:
        bundle = ca_bundle(cluster)
    except KubernetesError:
        bundle = b""
    return [*o.addon_objects(cluster, coredns_image(cluster), bundle),
            *ingress.ingress_objects(cluster, traefik_image(cluster), bundle)]


def ca_bundle(cluster: Cluster) -> bytes:
    """The cluster CA's trust bundle from the store: what the controller-manager publishes."""
    from metalseed.pki.issue import store_for
    from metalseed.pki.profiles import CLUSTER_CA
    from metalseed.pki.rotation import bundle_path

    path = bundle_path(store_for(cluster), CLUSTER_CA)
    try:
        return path.read_bytes()
    except OSError as e:
        raise KubernetesError(f"cannot read {path}: {e.strerror} (run `metalseed pki init`)") from e


def objects_of(cluster: Cluster, which: str) -> list[dict[str, Any]]:
    """One set of objects, as rendered, checked against the pinned version's schemas (nothing
    that does not fit is ever sent)."""
    objects = _rendered(cluster, which)
    openapi.validate(objects, openapi.load(cluster.mirror_dir))
    return objects


def validate_all(cluster: Cluster) -> None:
    """Every object the deploy applies, against the schemas: all problems of all sets at once."""
    schemas = openapi.load(cluster.mirror_dir)
    openapi.validate([x for which in OBJECT_SETS for x in _rendered(cluster, which)], schemas)


def _cert_set(pem: str | bytes) -> frozenset[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return frozenset(c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(data))
    except ValueError:
        return frozenset()


def _list(dyn: Any, api_version: str, kind: str, **kwargs: Any) -> list[dict[str, Any]]:
    res = _resource(dyn, {"apiVersion": api_version, "kind": kind, "metadata": {"name": "-"}})
    items = kc.translated(f"listing {kind}s", lambda: res.get(
        _request_timeout=kc.REQUEST_TIMEOUT, **kwargs)).to_dict()
    return list(items.get("items") or [])


def _get(dyn: Any, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    res = _resource(dyn, obj)
    live: dict[str, Any] = kc.translated(f"reading {describe(obj)}", lambda: res.get(
        name=meta["name"], namespace=meta.get("namespace"),
        _request_timeout=kc.REQUEST_TIMEOUT)).to_dict()
    return live


def root_ca_stale(cluster: Cluster, bundle: bytes) -> list[str]:
    """Namespaces whose kube-root-ca.crt ConfigMap does not hold exactly ``bundle``'s CAs (the
    controller-manager publishes its --root-ca-file there; pods trust the API server with it)."""
    dyn = kc.dynamic(kc.api_client(cluster))
    namespaces = _list(dyn, "v1", "Namespace")
    maps = _list(dyn, "v1", "ConfigMap", field_selector=f"metadata.name={ROOT_CA_CONFIGMAP}")
    want = _cert_set(bundle)
    held = {m["metadata"]["namespace"]: _cert_set((m.get("data") or {}).get("ca.crt", ""))
            for m in maps}
    # A terminating namespace takes no new objects: the publisher cannot update it, nor need to.
    return sorted(n["metadata"]["name"] for n in namespaces
                  if (n.get("status") or {}).get("phase") != "Terminating"
                  and held.get(n["metadata"]["name"]) != want)


def addons_not_rolled(cluster: Cluster, bundle: bytes) -> list[str]:
    """metalseed's add-ons (Deployments, DaemonSets) that talk to the API server and are not yet
    rolled out with pods started on ``bundle`` (their template's trust annotation)."""
    want = o.trust_annotations(bundle)[o.TRUST_ANNOTATION]
    dyn = kc.dynamic(kc.api_client(cluster))
    out = []
    for obj in objects_of(cluster, ADDONS):
        template = (obj.get("spec") or {}).get("template") or {}
        if o.TRUST_ANNOTATION not in (template.get("metadata") or {}).get("annotations", {}):
            continue
        live = _get(dyn, obj)
        annotations = (((live.get("spec") or {}).get("template") or {}).get("metadata")
                       or {}).get("annotations") or {}
        status = live.get("status") or {}
        rolled = (status.get("observedGeneration") or 0) >= (live["metadata"].get("generation") or 0)
        if obj["kind"] == "Deployment":
            rolled = rolled and (status.get("updatedReplicas") or 0) == (status.get("replicas") or 0)
        elif obj["kind"] == "DaemonSet":
            rolled = rolled and (status.get("updatedNumberScheduled") or 0) == (
                status.get("desiredNumberScheduled") or 0)
        if annotations.get(o.TRUST_ANNOTATION) != want or not rolled:
            out.append(describe(obj))
    return out


def wait_root_ca(cluster: Cluster, timeout: float = ROOT_CA_TIMEOUT) -> None:
    bundle = ca_bundle(cluster)

    def check() -> str | None:
        stale = root_ca_stale(cluster, bundle)
        return f"not yet in namespaces {', '.join(stale)}" if stale else None

    kc.wait_for(f"ConfigMaps {ROOT_CA_CONFIGMAP}", "holding the store's ca-bundle.crt (the "
                "controller-manager publishes it)", check, timeout)


def _apply_all(cluster: Cluster, which: str) -> None:
    if which == ADDONS:
        # Node role labels need the Node objects: applying a missing Node would create a bare one.
        wait_nodes_registered(cluster)
        # Add-on pods started now must find the current trust bundle in their projected ca.crt.
        wait_root_ca(cluster)
    apply(cluster, objects_of(cluster, which))


def wait_all(cluster: Cluster) -> None:
    wait_nodes_ready(cluster)
    wait_root_ca(cluster)
    wait_deployment_available(cluster, o.NAMESPACE, o.COREDNS)
    wait_daemonset_available(cluster, ingress.NAMESPACE, ingress.NAME, len(cluster.workers))


AUTH_CONFIGMAP = ("kube-system", "extension-apiserver-authentication")
AUTH_CA_KEYS = ("client-ca-file", "requestheader-client-ca-file")
RETIRE_OP = "kubernetes: extension-apiserver-authentication holds no retired CA"


def current_cas(cluster: Cluster) -> frozenset[bytes]:
    """Every CA the store's cluster and front-proxy trust bundles hold (DER)."""
    from metalseed.pki.issue import store_for
    from metalseed.pki.profiles import FRONT_PROXY_CA
    from metalseed.pki.rotation import bundle_path

    path = bundle_path(store_for(cluster), FRONT_PROXY_CA)
    try:
        front = path.read_bytes()
    except OSError as e:
        raise KubernetesError(f"cannot read {path}: {e.strerror}") from e
    return _cert_set(ca_bundle(cluster)) | _cert_set(front)


def authentication_cas(cluster: Cluster) -> dict[str, frozenset[bytes]] | None:
    """The CAs the API servers publish for other components (the scheduler, the controller-manager,
    aggregated API servers) to authenticate clients with, per key; None if not published yet."""
    from kubernetes import client as k8s

    api = k8s.CoreV1Api(kc.api_client(cluster))
    ns, name = AUTH_CONFIGMAP
    try:
        cm = kc.translated(f"reading ConfigMap {ns}/{name}", lambda: api.read_namespaced_config_map(
            name, ns, _request_timeout=kc.REQUEST_TIMEOUT))
    except KubernetesError as e:
        if getattr(e.__cause__, "status", None) == 404:
            return None
        raise
    data = cm.data or {}
    return {k: _cert_set(data.get(k, "")) for k in AUTH_CA_KEYS}


def retired_in_authentication(cluster: Cluster) -> bool:
    """Does extension-apiserver-authentication still hold a CA no trust bundle holds? Each API
    server adds its CAs to what the ConfigMap holds and never removes one (until it expires), so
    a finished CA rotation leaves the retired CA there."""
    held = authentication_cas(cluster)
    if held is None:
        return False
    current = current_cas(cluster)
    return any(cas - current for cas in held.values())


def _republish_authentication(cluster: Cluster, timeout: float = ROOT_CA_TIMEOUT) -> None:
    """Delete the ConfigMap: every API server (all trusting only the current CAs by now) writes
    it again from its own files, within seconds."""
    from kubernetes import client as k8s

    api = k8s.CoreV1Api(kc.api_client(cluster))
    ns, name = AUTH_CONFIGMAP
    kc.translated(f"deleting ConfigMap {ns}/{name}", lambda: api.delete_namespaced_config_map(
        name, ns, _request_timeout=kc.REQUEST_TIMEOUT))
    current = current_cas(cluster)

    def check() -> str | None:
        held = authentication_cas(cluster)
        if held is None:
            return "not published again yet"
        bad = [k for k, cas in held.items() if not cas or cas - current]
        return f"{', '.join(bad)}: not the current CAs yet" if bad else None

    kc.wait_for(f"ConfigMap {ns}/{name}", "published again with the current CAs only", check,
                timeout)


@operation()
def retire_authentication_cas(cluster: Cluster) -> Generator[Any, None, None]:
    """After a CA rotation's last phase: the published authentication CAs lose the retired CA
    (call with ``_run_once=True``). Decided when the run is prepared; nothing to do, no change."""
    cache: dict[str, bool] = host.state.__dict__.setdefault("_metalseed_kube_pending", {})
    if RETIRE_OP not in cache:
        try:
            cache[RETIRE_OP] = retired_in_authentication(cluster)
        except KubernetesError:
            cache[RETIRE_OP] = False  # the API does not answer yet (a first run): nothing to retire
    if cache[RETIRE_OP]:
        if not host.state.is_executing:
            host.log(f"would republish ConfigMap {'/'.join(AUTH_CONFIGMAP)} without retired CAs")
        yield FunctionCommand(_republish_authentication, (cluster,), {})


@operation()
def apply_objects(cluster: Cluster, which: str) -> Generator[Any, None, None]:
    """Apply one set of cluster objects (call with ``_run_once=True``) where any would change."""
    if pending_once(which, lambda: pending(cluster, objects_of(cluster, which))):
        yield FunctionCommand(_apply_all, (cluster, which), {})
