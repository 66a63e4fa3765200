"""Inspection and renewal planning: what is in the store, and what must be (re)issued.

A leaf is *due* when it expires within ``pki_renew_before`` or has used up ``renew_fraction`` of its
lifetime. Material that is corrupt, whose key does not match, or that its CA did not sign is
*invalid*: it is reported and never used or silently replaced.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509

from metalseed.model import Cluster, PKISettings
from metalseed.pki import x509 as px
from metalseed.pki.profiles import (
    CLUSTER_CA,
    DATASTORE_CA,
    EDGE_CA,
    ETCD_CA,
    FRONT_PROXY_CA,
    SERVICE_ACCOUNT_KEY,
    CASpec,
    LeafSpec,
    ca_specs,
    key_pair_ids,
    leaf_specs,
)
from metalseed.pki.store import Store

OK = "ok"
MISSING = "missing"
DUE = "due"
EXPIRED = "expired"
MISMATCH = "mismatch"
INVALID = "invalid"
EXTERNAL = "external"

NEEDS_ISSUE = frozenset({MISSING, DUE, EXPIRED, MISMATCH})
BAD_FOR_CHECK = frozenset({MISSING, DUE, EXPIRED, MISMATCH, INVALID})


@dataclass
class Status:
    id: str
    kind: str  # "ca" | "leaf" | "key"
    state: str
    detail: str = ""
    info: px.CertInfo | None = None
    cert: x509.Certificate | None = None
    key: px.PrivateKey | None = None

    def days_left(self, now: dt.datetime) -> float | None:
        if self.info is None:
            return None
        return (self.info.not_after - now).total_seconds() / 86400


def is_due(info: px.CertInfo, settings: PKISettings, now: dt.datetime) -> str | None:
    """The reason a certificate is due for renewal, or None."""
    remaining = info.not_after - now
    if remaining <= dt.timedelta(0):
        return "expired"
    if remaining < settings.renew_before:
        return f"expires within the renewal window ({settings.renew_before})"
    elapsed = now - info.not_before
    if elapsed > info.lifetime * settings.renew_fraction:
        return f"past {settings.renew_fraction:.0%} of its lifetime"
    return None


def expiry_state(info: px.CertInfo, settings: PKISettings, now: dt.datetime) -> tuple[str, str]:
    """(``ok`` | ``due`` | ``expired``, reason) of a certificate under the renewal policy."""
    reason = is_due(info, settings, now)
    return (EXPIRED if reason == "expired" else DUE if reason else OK), reason or ""


def _load(store: Store, id: str) -> tuple[x509.Certificate | None, px.PrivateKey | None, str]:
    """(cert, key, problem). Both None and no problem means: not there at all."""
    cert_data, key_data = store.read_pair(id)
    if cert_data is None and key_data is None:
        return None, None, ""
    if cert_data is None:
        return None, None, f"{store.cert_path(id)} is missing but its key is there"
    if key_data is None:
        return None, None, f"{store.key_path(id)} is missing but its certificate is there"
    try:
        cert = px.load_cert(cert_data)
    except ValueError as e:
        return None, None, f"{store.cert_path(id)} is not a PEM certificate ({e})"
    try:
        key = px.load_key(key_data)
    except (ValueError, TypeError) as e:
        return None, None, f"{store.key_path(id)} is not an unencrypted PEM private key ({e})"
    if not px.key_matches(cert, key):
        return None, None, f"{store.key_path(id)} does not match {store.cert_path(id)}"
    return cert, key, ""


def inspect_ca(spec: CASpec, store: Store, settings: PKISettings, now: dt.datetime) -> Status:
    cert, key, problem = _load(store, spec.id)
    if problem:
        return Status(spec.id, "ca", INVALID, problem)
    if cert is None or key is None:
        return Status(spec.id, "ca", MISSING, "not issued yet")
    info = px.describe(cert)
    if not info.is_ca or not px.signed_by(cert, cert):
        return Status(spec.id, "ca", INVALID, "not a self-signed CA certificate", info)
    return Status(spec.id, "ca", *expiry_state(info, settings, now), info, cert, key)


def inspect_leaf(spec: LeafSpec, store: Store, ca: Status, settings: PKISettings,
                 now: dt.datetime, previous_ca: Status | None = None,
                 retired: Sequence[x509.Certificate] = ()) -> Status:
    cert, key, problem = _load(store, spec.id)
    if problem:
        return Status(spec.id, "leaf", INVALID, problem)
    if cert is None or key is None:
        return Status(spec.id, "leaf", MISSING, "not issued yet")
    info = px.describe(cert)
    if ca.cert is not None and not px.signed_by(cert, ca.cert):
        if previous_ca and previous_ca.cert is not None and px.signed_by(cert, previous_ca.cert):
            return Status(spec.id, "leaf", MISMATCH,
                          "signed by the previous CA: re-issue to go on with the CA rotation",
                          info, cert, key)
        if any(px.signed_by(cert, old) for old in retired):
            # Ours, from before a finished CA rotation (a master that was not in the model then).
            return Status(spec.id, "leaf", MISMATCH, "signed by a retired CA", info, cert, key)
        return Status(spec.id, "leaf", INVALID, f"not signed by the CA in {spec.ca}.crt", info)
    differs = _differences(spec, info, settings)
    if differs:
        return Status(spec.id, "leaf", MISMATCH, "; ".join(differs), info, cert, key)
    return Status(spec.id, "leaf", *expiry_state(info, settings, now), info, cert, key)


def _differences(spec: LeafSpec, info: px.CertInfo, settings: PKISettings) -> list[str]:
    out = []
    if info.common_name != spec.common_name or info.organizations != spec.organizations:
        out.append(f"subject is {info.subject}")
    if set(info.dns_names) != set(spec.dns_names) or set(info.ip_addresses) != set(
        spec.ip_addresses
    ):
        want = sorted([*spec.dns_names, *(str(a) for a in spec.ip_addresses)])
        out.append(f"SANs {sorted(info.sans())} should be {want}")
    if info.usages != spec.usages:
        out.append(f"usages {sorted(info.usages)} should be {sorted(spec.usages)}")
    if info.key_algorithm != settings.key_algorithm:
        out.append(f"key is {info.key_algorithm}, the model says {settings.key_algorithm}")
    return out


def inspect_sa_key(store: Store, id: str = SERVICE_ACCOUNT_KEY) -> Status:
    key_data = store.read(store.key_path(id))
    pub_data = store.read(store.root / f"{id}.pub")
    if key_data is None and pub_data is None:
        return Status(id, "key", MISSING, "not generated yet")
    if key_data is None or pub_data is None:
        return Status(id, "key", INVALID, f"{id}.key or {id}.pub is missing")
    try:
        key = px.load_key(key_data)
    except (ValueError, TypeError) as e:
        return Status(id, "key", INVALID, f"{id}.key is unreadable ({e})")
    if px.public_pem(key) != pub_data:
        return Status(id, "key", INVALID, f"{id}.pub does not match {id}.key")
    return Status(id, "key", OK, key=key)


RETIRED_DIR = "retired"


def retired_path(store: Store, ca_id: str, serial: int) -> Path:
    """Where a finished rotation keeps the retired CA's certificate (its key is deleted)."""
    return store.root / RETIRED_DIR / f"{ca_id.replace('/', '-')}-{serial:x}.crt"


def _retired(store: Store) -> dict[str, list[x509.Certificate]]:
    out: dict[str, list[x509.Certificate]] = {}
    for spec_id in (CLUSTER_CA, ETCD_CA, FRONT_PROXY_CA, EDGE_CA, DATASTORE_CA):
        for p in sorted((store.root / RETIRED_DIR).glob(f"{spec_id.replace('/', '-')}-*.crt")):
            data = store.read(p)
            with contextlib.suppress(ValueError):
                out.setdefault(spec_id, []).append(px.load_cert(data or b""))
    return out


NEXT = ".next"
"""Suffix of a CA that a rotation has introduced but not yet put in charge (phase 1)."""
PREVIOUS = ".prev"
"""Suffix of the CA a rotation has replaced; still trusted until phase 3 ends the rotation."""


@dataclass
class Inventory:
    """Everything the store holds for a cluster, inspected against the model."""

    cas: dict[str, Status]
    leaves: list[tuple[LeafSpec, Status]]
    sa: Status
    rotating: dict[str, Status]
    """CAs of a rotation in progress, by store id (``etcd/ca.next``, ``etcd/ca.prev``)."""
    key_pairs: list[Status] = field(default_factory=list)
    """The tenants' service-account key pairs (``tenants/<name>/sa``)."""

    def all(self) -> list[Status]:
        return [*self.cas.values(), *self.rotating.values(), *(s for _, s in self.leaves), self.sa,
                *self.key_pairs]


def inspect(cluster: Cluster, store: Store, now: dt.datetime) -> Inventory:
    settings = cluster.pki
    cas: dict[str, Status] = {}
    rotating: dict[str, Status] = {}
    for spec in ca_specs(cluster):
        cas[spec.id] = inspect_ca(spec, store, settings, now)
        for suffix in (NEXT, PREVIOUS):
            extra = inspect_ca(replace(spec, id=spec.id + suffix), store, settings, now)
            if extra.state != MISSING:
                rotating[extra.id] = extra
    retired = _retired(store)
    leaves = [(spec, inspect_leaf(spec, store, cas[spec.ca], settings, now,
                                  rotating.get(spec.ca + PREVIOUS), retired.get(spec.ca, ())))
              for spec in leaf_specs(cluster)]
    key_pairs = [inspect_sa_key(store, id) for id in key_pair_ids(cluster)[1:]]
    return Inventory(cas, leaves, inspect_sa_key(store), rotating, key_pairs)
