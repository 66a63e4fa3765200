"""``metalseed tenants status``: what each tenant of a seed looks like from the operator's machine.

``observe`` reads (the tenant's /readyz through the edge with its own admin.conf, its
Deployment on the seed, its keys and bytes in the datastore as root, its certificates in the
store); ``evaluate`` turns those observations into conditions and is pure, as are the table and
JSON formats, so the rules are unit-tested without a seed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from metalseed.errors import MetalseedError
from metalseed.model import Cluster
from metalseed.pki.issue import store_for
from metalseed.pki.profiles import tenant_dir
from metalseed.tenants.profiles import PROFILES

# Condition types, each True when healthy.
API_READY = "APIReady"
DEPLOYMENT_AVAILABLE = "DeploymentAvailable"
DATASTORE_WITHIN_QUOTA = "DatastoreWithinQuota"
CERTIFICATES_VALID = "CertificatesValid"
NODES_READY = "NodesReady"


@dataclass(frozen=True)
class NodeSeen:
    name: str
    ready: bool


@dataclass(frozen=True)
class CertExpiry:
    id: str
    """The store file it came from, relative to the tenant's directory (``apiserver.crt``)."""
    not_after: dt.datetime


@dataclass(frozen=True)
class Observation:
    """What was read of one tenant; a field is None with its ``*_error`` set when it could not be
    read."""

    name: str
    profile: str
    version: str
    endpoint: str
    ready: str | None = "not checked"
    """None when /readyz answered ok, else what was seen (as kube.client.readyz gives it)."""
    replicas: tuple[int, int] | None = None
    """(available, desired) of the tenant's Deployment on the seed."""
    replicas_error: str = ""
    keys: int | None = None
    bytes: int | None = None
    usage_error: str = ""
    certs: tuple[CertExpiry, ...] = ()
    certs_error: str = ""
    workers: tuple[str, ...] = ()
    """The node names the tenant's ``workers`` give it."""
    nodes: tuple[NodeSeen, ...] | None = ()
    """The Nodes of the tenant's own API (None: not read, ``nodes_error`` says why)."""
    nodes_error: str = ""


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    failing: bool
    """False for a warning (a certificate due for renewal): shown, the tenant still healthy."""


@dataclass(frozen=True)
class TenantStatus:
    seed: str
    obs: Observation
    quota: int
    conditions: tuple[Condition, ...] = field(default=())

    @property
    def healthy(self) -> bool:
        return not any(c.failing for c in self.conditions)

    @property
    def nearest_cert(self) -> CertExpiry | None:
        return min(self.obs.certs, key=lambda c: c.not_after) if self.obs.certs else None

    def reasons(self) -> list[str]:
        return [f"{c.type}: {c.reason}" for c in self.conditions if c.failing]


def evaluate(seed: str, obs: Observation, now: dt.datetime,
             renew_before: dt.timedelta) -> TenantStatus:
    quota = PROFILES[obs.profile].datastore_quota
    conds = [
        Condition(API_READY, obs.ready is None,
                  "/readyz ok through the edge" if obs.ready is None else f"/readyz: {obs.ready}",
                  obs.ready is not None),
    ]
    if obs.replicas is None:
        conds.append(Condition(DEPLOYMENT_AVAILABLE, False,
                               obs.replicas_error or "not read", True))
    else:
        available, desired = obs.replicas
        conds.append(Condition(DEPLOYMENT_AVAILABLE, available >= desired > 0,
                               f"{available}/{desired} replicas available",
                               not available >= desired > 0))
    if obs.bytes is None:
        conds.append(Condition(DATASTORE_WITHIN_QUOTA, False,
                               f"usage not read: {obs.usage_error or 'unknown'}", True))
    else:
        within = obs.bytes <= quota
        conds.append(Condition(DATASTORE_WITHIN_QUOTA, within,
                               f"{obs.bytes} of {quota} bytes ({obs.bytes / quota:.1%})",
                               not within))
    if not obs.certs:
        conds.append(Condition(CERTIFICATES_VALID, False,
                               obs.certs_error or "no certificate in the store", True))
    else:
        nearest = min(obs.certs, key=lambda c: c.not_after)
        left = nearest.not_after - now
        if left <= dt.timedelta(0):
            conds.append(Condition(CERTIFICATES_VALID, False,
                                   f"{nearest.id} expired {nearest.not_after:%Y-%m-%d %H:%M}Z",
                                   True))
        elif left < renew_before:
            # Due, not broken: the next deploy (or rotate-certs.py) renews it.
            conds.append(Condition(CERTIFICATES_VALID, True,
                                   f"{nearest.id} due: expires in {_days(left)}", False))
        else:
            conds.append(Condition(CERTIFICATES_VALID, True,
                                   f"nearest {nearest.id} in {_days(left)}", False))
    nodes = _nodes_condition(obs)
    if nodes is not None:
        conds.append(nodes)
    return TenantStatus(seed, obs, quota, tuple(conds))


def _nodes_condition(obs: Observation) -> Condition | None:
    """Only for a tenant with workers or nodes: a control plane alone is a healthy tenant."""
    if obs.nodes is None:
        return (Condition(NODES_READY, False, f"nodes not read: {obs.nodes_error or 'unknown'}",
                          True) if obs.workers else None)
    if not obs.workers and not obs.nodes:
        return None
    seen = {n.name: n for n in obs.nodes}
    missing = [w for w in obs.workers if w not in seen]
    not_ready = sorted(n.name for n in obs.nodes if not n.ready)
    ready = sum(n.ready for n in obs.nodes)
    problems = ([f"not registered: {', '.join(missing)}"] if missing else []) + (
        [f"not Ready: {', '.join(not_ready)}"] if not_ready else [])
    reason = f"{ready}/{len(obs.nodes)} nodes Ready" + (f" ({'; '.join(problems)})"
                                                        if problems else "")
    return Condition(NODES_READY, not problems, reason, bool(problems))


def _days(d: dt.timedelta) -> str:
    return f"{d.total_seconds() / 86400:.1f} days"


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n}B"


COLUMNS = ("TENANT", "SEED", "PROFILE", "VERSION", "API", "NODES", "KEYS", "SIZE", "CERT EXPIRY",
           "ENDPOINT")


def _nodes_cell(obs: Observation) -> str:
    if obs.nodes is None:
        return "?"
    return f"{sum(n.ready for n in obs.nodes)}/{len(obs.nodes)}"


def format_table(statuses: Sequence[TenantStatus], now: dt.datetime) -> str:
    """One line per tenant, then one line per failing or warning condition."""
    rows = []
    for s in statuses:
        cert = s.nearest_cert
        rows.append((
            s.obs.name, s.seed, s.obs.profile, s.obs.version,
            "ready" if s.obs.ready is None else "NOT READY",
            _nodes_cell(s.obs),
            "?" if s.obs.keys is None else str(s.obs.keys),
            f"{_size(s.obs.bytes)}/{_size(s.quota)}",
            f"{cert.not_after:%Y-%m-%d} ({(cert.not_after - now).days}d)" if cert else "?",
            s.obs.endpoint,
        ))
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
             for r in [COLUMNS, *rows]]
    notes = []
    for s in statuses:
        for c in s.conditions:
            if c.failing:
                notes.append(f"{s.obs.name}: {c.type} False: {c.reason}")
            elif c.type == CERTIFICATES_VALID and "due" in c.reason:
                notes.append(f"{s.obs.name}: warning: {c.reason}")
    unhealthy = [s.obs.name for s in statuses if not s.healthy]
    tail = (f"unhealthy: {', '.join(unhealthy)}" if unhealthy
            else f"{len(statuses)} tenant(s), all healthy" if statuses else "no tenants")
    return "\n".join([*lines, *(["", *notes] if notes else []), "", tail]) + "\n"


def to_json(statuses: Sequence[TenantStatus]) -> str:
    out = []
    for s in statuses:
        cert = s.nearest_cert
        out.append({
            "name": s.obs.name, "seed": s.seed, "profile": s.obs.profile,
            "version": s.obs.version, "endpoint": s.obs.endpoint,
            "api_ready": s.obs.ready is None, "api_said": s.obs.ready,
            "replicas": (None if s.obs.replicas is None else
                         {"available": s.obs.replicas[0], "desired": s.obs.replicas[1]}),
            "workers": list(s.obs.workers),
            "nodes": (None if s.obs.nodes is None else
                      [{"name": n.name, "ready": n.ready} for n in s.obs.nodes]),
            "datastore": {"keys": s.obs.keys, "bytes": s.obs.bytes, "quota_bytes": s.quota},
            "nearest_cert_expiry": (None if cert is None else
                                    {"id": cert.id,
                                     "not_after": cert.not_after.isoformat()}),
            "conditions": [{"type": c.type, "status": c.status, "reason": c.reason,
                            "failing": c.failing} for c in s.conditions],
            "healthy": s.healthy,
        })
    return json.dumps({"tenants": out, "healthy": all(s.healthy for s in statuses)},
                      indent=2) + "\n"


# --- reading a real seed ------------------------------------------------------------------------

def store_certs(root: Path) -> tuple[CertExpiry, ...]:
    """Every certificate under a tenant's store directory (bundles hold several; the embedded
    ones of its kubeconfigs come from the same pairs)."""
    out = []
    for path in sorted(root.rglob("*.crt")):
        for cert in x509.load_pem_x509_certificates(path.read_bytes()):
            out.append(CertExpiry(str(path.relative_to(root)), cert.not_valid_after_utc))
    return tuple(out)


def _guard(fn: Callable[[], Any]) -> tuple[Any, str]:
    try:
        return fn(), ""
    except MetalseedError as e:
        return None, str(e)
    except Exception as e:  # a status command reports any failure to read, it never dies of it
        return None, f"{type(e).__name__}: {e}"


def observe(cluster: Cluster) -> list[Observation]:
    from kubernetes.client import AppsV1Api

    from metalseed.deploys.datastore import tenant_usage
    from metalseed.kube import client as kc

    usage, usage_error = _guard(lambda: tenant_usage(cluster))
    seed_api, seed_error = _guard(lambda: AppsV1Api(kc.api_client(cluster)))
    store = store_for(cluster).root
    out = []
    for t in cluster.tenants:
        ready, replicas, replicas_error, certs, certs_error = _observe_one(
            cluster, t.name, t.namespace, seed_api, seed_error, store)
        nodes, nodes_error = _guard(lambda: tenant_nodes(cluster, t.name))  # noqa: B023
        u = usage.get(t.name) if usage else None
        out.append(Observation(
            name=t.name, profile=t.profile, version=t.kubernetes_version,
            endpoint=f"https://{cluster.tenant_endpoint(t.name)}:{cluster.apiserver_port}",
            ready=ready,
            replicas=replicas, replicas_error=replicas_error,
            keys=u.keys if u else None, bytes=u.bytes if u else None, usage_error=usage_error,
            certs=certs, certs_error=certs_error,
            workers=tuple(n.name for n in cluster.workers_of(t.name)),
            nodes=nodes, nodes_error=nodes_error,
        ))
    return out


def tenant_nodes(cluster: Cluster, tenant: str) -> tuple[NodeSeen, ...]:
    """The Nodes of ``tenant``'s own API, through the edge with its admin.conf."""
    from metalseed.kube import apply as ka
    from metalseed.kube import client as kc
    from metalseed.tenants.apply import tenant_api

    out = []
    for n in ka._list(kc.dynamic(tenant_api(cluster, tenant)), "v1", "Node"):
        ready = kc.condition(n, "Ready")
        out.append(NodeSeen(str(n["metadata"]["name"]), ready is not None and ready[0] == "True"))
    return tuple(sorted(out, key=lambda x: x.name))


def _observe_one(cluster: Cluster, name: str, namespace: str, seed_api: Any, seed_error: str,
                 store: Path) -> tuple[str | None, tuple[int, int] | None, str,
                                       tuple[CertExpiry, ...], str]:
    from metalseed.kube import client as kc
    from metalseed.tenants.apply import DEPLOYMENT, tenant_api

    def ready_now() -> str:
        return kc.readyz(tenant_api(cluster, name)) or ""

    said, error = _guard(ready_now)
    ready = error if said is None else (said or None)
    replicas, replicas_error = None, seed_error
    if seed_api is not None:
        def read() -> Any:
            return seed_api.read_namespaced_deployment(DEPLOYMENT, namespace, _request_timeout=10)

        dep, replicas_error = _guard(read)
        if dep is not None:
            replicas = (dep.status.available_replicas or 0, dep.spec.replicas or 0)
    certs, certs_error = _guard(lambda: store_certs(store / tenant_dir(name)))
    return ready, replicas, replicas_error, certs or (), certs_error


def status(cluster: Cluster, now: dt.datetime) -> list[TenantStatus]:
    return [evaluate(cluster.name, o, now, cluster.pki.renew_before) for o in observe(cluster)]
