"""``pki init``: bring the store in line with the model, idempotently.

Keeps valid material; issues what is missing; re-issues leaves that are due, expired, or whose
subject, SANs, usages or key algorithm no longer match the model. Never replaces a CA silently and
never uses invalid material.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from metalseed.errors import CAReplacementRefused, PKIIntegrityError
from metalseed.model import Cluster
from metalseed.pki import kubeconfig
from metalseed.pki import x509 as px
from metalseed.pki.plan import INVALID, MISSING, NEEDS_ISSUE, OK, Inventory, Status, inspect
from metalseed.pki.profiles import ENCRYPTION_KEY, ca_specs
from metalseed.pki.store import Store


@dataclass
class Action:
    id: str
    what: str  # "created" | "issued" | "re-issued" | "written"
    reason: str


@dataclass
class InitReport:
    actions: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def store_for(cluster: Cluster) -> Store:
    return Store(cluster.pki_dir)


def init_pki(cluster: Cluster, now: dt.datetime | None = None,
             progress: Callable[[str], None] | None = None,
             force: frozenset[str] = frozenset()) -> InitReport:
    """Converge ``pki/<cluster>/``. ``force`` names leaf ids to re-issue even if valid."""
    now = now or utcnow()
    store = store_for(cluster)
    inv = inspect(cluster, store, now)
    report = InitReport()
    say = progress or (lambda _msg: None)

    _refuse_invalid(inv)

    algorithm = cluster.pki.key_algorithm
    for ca_spec in ca_specs(cluster):
        status = inv.cas[ca_spec.id]
        if status.state == MISSING:
            leftovers = [s.id for ls, s in inv.leaves if ls.ca == ca_spec.id and s.state != MISSING]
            if leftovers:
                raise CAReplacementRefused(
                    f"CA {ca_spec.id} is missing from {store.root} but certificates it signed are "
                    f"there ({', '.join(leftovers[:3])}...). Restore {ca_spec.id}.crt/.key from "
                    "backup; metalseed does not replace a CA silently."
                )
            ca_key = px.generate_key(algorithm)
            ca_cert = px.issue_ca(ca_spec, ca_key, now)
            store.write_pair(ca_spec.id, px.cert_pem(ca_cert), px.key_pem(ca_key))
            inv.cas[ca_spec.id] = Status(ca_spec.id, "ca", OK, cert=ca_cert, key=ca_key,
                                         info=px.describe(ca_cert))
            report.actions.append(Action(ca_spec.id, "created", "no CA yet"))
            say(f"created CA {ca_spec.id}")
        elif status.state != OK:
            msg = (f"CA {ca_spec.id} is {status.state} ({status.detail}); it is kept. Rotate it with "
                   "the CA phases of deploys/rotate-certs.py")
            if status.state == "expired":
                raise CAReplacementRefused(msg)
            report.warnings.append(msg)

    for pair in (inv.sa, *inv.key_pairs):
        if pair.state == MISSING:
            sa_key = px.generate_key(algorithm)
            store.write(store.key_path(pair.id), px.key_pem(sa_key), secret=True)
            store.write(store.root / f"{pair.id}.pub", px.public_pem(sa_key), secret=False)
            report.actions.append(Action(pair.id, "created", "no service-account key yet"))

    if cluster.kubernetes.enabled and store.read(store.root / ENCRYPTION_KEY) is None:
        secret = base64.b64encode(secrets.token_bytes(32)) + b"\n"
        store.write(store.root / ENCRYPTION_KEY, secret, secret=True)
        report.actions.append(Action(ENCRYPTION_KEY, "created", "no encryption-at-rest key yet"))

    from metalseed.pki.rotation import trust_bundle, write_bundles  # rotation builds on this

    for ca_id in write_bundles(cluster):
        report.actions.append(Action(f"{ca_id}-bundle", "written", "trust bundle changed"))

    for spec, status in inv.leaves:
        cert: x509.Certificate | None = status.cert
        key: px.PrivateKey | None = status.key
        if status.state in NEEDS_ISSUE or spec.id in force:
            ca = inv.cas[spec.ca]
            assert ca.cert is not None and ca.key is not None
            key = px.generate_key(algorithm)
            cert = px.issue_leaf(spec, key, ca.cert, ca.key, cluster.pki.leaf_lifetime, now)
            store.write_pair(spec.id, px.cert_pem(cert), px.key_pem(key))
            what = "issued" if status.state == MISSING else "re-issued"
            reason = status.detail if spec.id not in force else "asked for"
            report.actions.append(Action(spec.id, what, reason))
            say(f"{what} {spec.id}: {reason}")
        if spec.kubeconfig and cert is not None and key is not None:
            assert spec.kubeconfig_server is not None
            # The trust bundle, not only the signer: during a CA rotation a kubeconfig must accept
            # an API server certificate from either CA (phase 1 adds the new CA before any API
            # server serves one of its certificates; phase 3 drops the old one).
            text = kubeconfig.render(spec.kubeconfig_cluster or cluster.name,
                                     spec.kubeconfig_server, spec.common_name,
                                     trust_bundle(store, spec.ca), px.cert_pem(cert),
                                     px.key_pem(key), spec.tls_server_name)
            path = store.root / spec.kubeconfig_path
            if store.write(path, text, secret=True):
                report.actions.append(Action(spec.kubeconfig_path, "written",
                                             "certificate changed"))
    return report


_CONVERGED = "_metalseed_pki_converged"


def ensure_store(cluster: Cluster, inventory: Any) -> None:
    """Converge the store once per pyinfra run (per inventory object): every deploy of the run
    ships from the same store, and init_pki leaves a converged store byte for byte. Under
    ``pyinfra --dry`` nothing is written: what would be issued is logged instead."""
    from metalseed.runmode import dry_run

    if getattr(inventory, _CONVERGED, False):
        return
    if dry_run():
        from pyinfra import logger

        inv = inspect(cluster, store_for(cluster), utcnow())
        for s in inv.all():
            if s.state != OK:
                logger.info(f"PKI store (dry run: nothing written): {s.id} is {s.state}; "
                            "a real run issues it")
    else:
        init_pki(cluster)
    mark_store_converged(inventory)


def mark_store_converged(inventory: Any) -> None:
    """For a caller that ran init_pki itself (the rotation, with its own choices)."""
    setattr(inventory, _CONVERGED, True)


def _refuse_invalid(inv: Inventory) -> None:
    bad = [s for s in inv.all() if s.state == INVALID]
    if bad:
        lines = "\n".join(f"  - {s.id}: {s.detail}" for s in bad)
        raise PKIIntegrityError(
            f"{len(bad)} item(s) in the PKI store are invalid and will not be used:\n{lines}\n"
            "Restore them from backup, or delete a leaf's .crt and .key to have it re-issued."
        )
