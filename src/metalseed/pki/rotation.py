"""CA rotation in the store, in three phases that never break trust.

1. ``trust``: a new CA is created beside the current one (``<ca>.next``). Hosts are given a bundle of
   both (:func:`trust_bundle`) and every consumer restarts onto it, one host at a time.
2. ``reissue``: the new CA takes charge: the current one becomes ``<ca>.prev`` and the new one
   ``<ca>``; every leaf it signs is re-issued (the old ones show as signed by the previous CA) and
   shipped host by host. The bundle still holds both, so old and new leaves are trusted alike.
3. ``finish``: once no leaf signed by the previous CA is left, it is retired from the bundle; its
   certificate is kept under ``retired/`` for the record, its key is deleted.

The phase is read from which files exist, so each step is idempotent and a run interrupted at any
point is resumed by running the same phase again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

from metalseed.errors import PKIError
from metalseed.model import Cluster
from metalseed.pki import x509 as px
from metalseed.pki.issue import store_for
from metalseed.pki.plan import NEXT, PREVIOUS, retired_path
from metalseed.pki.profiles import ca_specs, leaf_specs
from metalseed.pki.store import Store

STEADY = "steady"
PHASES = ("trust", "reissue", "finish")


def ca_ids(cluster: Cluster) -> list[str]:
    return [spec.id for spec in ca_specs(cluster)]


def phase(store: Store, ca_id: str) -> str:
    """``steady``, ``trust`` (a next CA exists) or ``reissue`` (a previous CA is still trusted)."""
    if store.cert_path(ca_id + NEXT).exists():
        return "trust"
    if store.cert_path(ca_id + PREVIOUS).exists():
        return "reissue"
    return STEADY


def bundle_path(store: Store, ca_id: str) -> Path:
    """``<ca>-bundle.crt``: what hosts and clients trust for ``ca_id`` (see :func:`trust_bundle`)."""
    return store.root / f"{ca_id}-bundle.crt"


def write_bundles(cluster: Cluster) -> list[str]:
    """Keep every ``<ca>-bundle.crt`` equal to its trust bundle; returns the ids rewritten."""
    store = store_for(cluster)
    return [ca_id for ca_id in ca_ids(cluster)
            if store.write(bundle_path(store, ca_id), trust_bundle(store, ca_id), secret=False)]


def trust_bundle(store: Store, ca_id: str) -> bytes:
    """What consumers must trust for ``ca_id``: the CA in charge and any CA of a rotation, the
    old one first. Phase 1 holds (current, next) and phase 2 (previous, current): the same two
    certificates in the same order, so the bundle is byte for byte the same in both phases and
    ``reissue`` restarts only what reads a re-issued leaf, not every consumer of the bundle."""
    parts = []
    for id in (ca_id + PREVIOUS, ca_id, ca_id + NEXT):
        data = store.read(store.cert_path(id))
        if data is not None:
            parts.append(data if data.endswith(b"\n") else data + b"\n")
    if not parts:
        raise PKIError(f"no CA {ca_id} in {store.root}: run `metalseed pki init` first")
    return b"".join(parts)


def _check_ca(cluster: Cluster, ca_id: str) -> None:
    if ca_id not in ca_ids(cluster):
        raise PKIError(f"unknown CA {ca_id!r}; the cluster's CAs are {ca_ids(cluster)}")


def begin(cluster: Cluster, ca_id: str, now: dt.datetime | None = None) -> bool:
    """Phase 1 in the store: create ``<ca>.next``. Returns whether anything changed."""
    _check_ca(cluster, ca_id)
    store = store_for(cluster)
    current = phase(store, ca_id)
    if current == "trust":
        return False
    if current == "reissue":
        raise PKIError(f"a rotation of {ca_id} is still in phase 'reissue': run phase 'finish' "
                       "before starting another")
    now = now or dt.datetime.now(dt.UTC)
    spec = next(s for s in ca_specs(cluster) if s.id == ca_id)
    key = px.generate_key(cluster.pki.key_algorithm)
    cert = px.issue_ca(replace(spec, common_name=f"{spec.common_name}-{now:%Y%m%d%H%M%S}"), key, now)
    store.write_pair(ca_id + NEXT, px.cert_pem(cert), px.key_pem(key))
    write_bundles(cluster)
    return True


def promote(cluster: Cluster, ca_id: str) -> bool:
    """Phase 2 in the store: the next CA takes charge; the current one becomes the previous.

    Written so that a crash between any two file operations is resumed by calling it again:
    the previous CA is saved before the current one is overwritten, and the next is removed last.
    """
    _check_ca(cluster, ca_id)
    store = store_for(cluster)
    nxt_cert, nxt_key = store.read_pair(ca_id + NEXT)
    if nxt_cert is None or nxt_key is None:
        if phase(store, ca_id) == "reissue":
            return False
        raise PKIError(f"no rotation of {ca_id} in progress: run phase 'trust' first")
    cur_cert, cur_key = store.read_pair(ca_id)
    if cur_cert is None or cur_key is None:
        raise PKIError(f"CA {ca_id} is missing from {store.root}")
    if cur_cert != nxt_cert:
        if store.cert_path(ca_id + PREVIOUS).exists() and store.read(
                store.cert_path(ca_id + PREVIOUS)) != cur_cert:
            raise PKIError(f"{ca_id}{PREVIOUS} exists and is not the current CA: an older "
                           "rotation was not finished; inspect the store by hand")
        store.write_pair(ca_id + PREVIOUS, cur_cert, cur_key)
        store.write_pair(ca_id, nxt_cert, nxt_key)
    store.key_path(ca_id + NEXT).unlink(missing_ok=True)
    store.cert_path(ca_id + NEXT).unlink(missing_ok=True)
    write_bundles(cluster)
    return True


def leaves_on_previous(cluster: Cluster, ca_id: str) -> list[str]:
    """Store ids of leaves still signed by the previous CA of a rotation."""
    store = store_for(cluster)
    prev = store.read(store.cert_path(ca_id + PREVIOUS))
    if prev is None:
        return []
    prev_cert = px.load_cert(prev)
    out = []
    for spec in leaf_specs(cluster):
        data = store.read(store.cert_path(spec.id)) if spec.ca == ca_id else None
        if data is not None and px.signed_by(px.load_cert(data), prev_cert):
            out.append(spec.id)
    return out


def finish(cluster: Cluster, ca_id: str) -> bool:
    """Phase 3 in the store: retire the previous CA once no leaf depends on it."""
    _check_ca(cluster, ca_id)
    store = store_for(cluster)
    if phase(store, ca_id) == "trust":
        raise PKIError(f"the rotation of {ca_id} is in phase 'trust': run phase 'reissue' first")
    prev = store.read(store.cert_path(ca_id + PREVIOUS))
    if prev is None:
        return False
    pending = leaves_on_previous(cluster, ca_id)
    if pending:
        raise PKIError(f"leaves of {ca_id} are not re-issued from the new CA yet: {pending}; "
                       "run phase 'reissue' to the end first")
    serial = px.load_cert(prev).serial_number
    store.write(retired_path(store, ca_id, serial), prev, secret=False)
    store.key_path(ca_id + PREVIOUS).unlink(missing_ok=True)
    store.cert_path(ca_id + PREVIOUS).unlink()
    write_bundles(cluster)
    return True
