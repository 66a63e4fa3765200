"""Day-2 certificate rotation without downtime.

Rotation is "change the store, then converge the hosts": the store step runs once, on the
operator's machine, before any host is touched; then the etcd and edge deploys ship what changed,
one master at a time, each restart or reload behind its health gate (etcd: every member healthy
over mutual TLS; nginx: answering again). A failed gate stops the run with the rest of the cluster
as it was; running the same command again resumes, because both steps are idempotent.

Inputs are pyinfra data (``--data rotate=all``, or group data), validated by the model:
``rotate`` is ``due`` (default: what ``certs check`` flags), ``all``, ``none``, or store ids (a
list, or separated by commas). CAs rotate (``rotate_ca``, ``rotate_phase``) in three phases
(:mod:`metalseed.pki.rotation`): ``trust``, ``reissue``, ``finish``, each a separate run. Before
``reissue`` puts the new CA in charge, every master must already trust it (its installed etcd CA
bundle is read back and checked), so no member ever sees a certificate it cannot verify.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host, logger
from pyinfra.api import deploy

from metalseed.deploys.edge import edge
from metalseed.deploys.etcd import etcd
from metalseed.deploys.gates import shared
from metalseed.deploys.kubernetes import kubernetes
from metalseed.errors import DeployError, ModelError, PKIError
from metalseed.model import Cluster, cluster_from_inventory, playbook_inputs
from metalseed.pki import rotation
from metalseed.pki.installed import InstalledCertificates, fingerprint, parse_dump
from metalseed.pki.issue import init_pki, mark_store_converged, store_for
from metalseed.pki.plan import NEXT
from metalseed.pki.profiles import CLUSTER_CA, ETCD_CA, FRONT_PROXY_CA, leaf_specs
from metalseed.pki.x509 import load_cert
from metalseed.render import etcd as etcd_render
from metalseed.runmode import dry_run

DEFAULTS = {"rotate": "due", "rotate_ca": None, "rotate_phase": None}
"""The playbook's inputs (pyinfra data) and their defaults."""


def leaves_to_force(cluster: Cluster, leaves: str | tuple[str, ...]) -> frozenset[str]:
    """Store ids to re-issue even though valid; ``due`` leaves are re-issued by init_pki anyway."""
    known = [s.id for s in leaf_specs(cluster)]
    if leaves in ("due", "none"):
        return frozenset()
    if leaves == "all":
        return frozenset(known)
    chosen = set(leaves)
    unknown = sorted(chosen - set(known))
    if unknown:
        raise ModelError("rotate", list(leaves), "due, all, none or store ids of this cluster's "
                         f"leaves ({', '.join(unknown)} unknown): {', '.join(known)}")
    return frozenset(chosen)


def check_ca(cluster: Cluster, ca: str | None) -> None:
    if ca is not None and ca not in rotation.ca_ids(cluster):
        raise ModelError("rotate_ca", ca, f"one of the cluster's CAs: {', '.join(rotation.ca_ids(cluster))}")
    if ca in (CLUSTER_CA, FRONT_PROXY_CA) and cluster.kubernetes.enabled:
        # Every kubelet, kubeconfig and the API server would have to trust both CAs first; the
        # Kubernetes deploy does not ship trust bundles yet, so a rotation could lock nodes out.
        raise ModelError("rotate_ca", ca, "etcd/ca or edge/ca: rotating the Kubernetes and "
                         "front-proxy CAs of a running Kubernetes cluster is not supported yet")


def masters_trusting(cluster: Cluster, inventory: Any, ca_pem: bytes) -> dict[str, bool]:
    """For each master: does its installed etcd CA bundle hold this CA? (read over SSH)."""
    want = fingerprint(load_cert(ca_pem))
    out = {}
    for m in cluster.masters:
        h = inventory.get_host(m.inventory_name)
        text = h.get_fact(InstalledCertificates, dirs=(etcd_render.PKI_DIR,)) if h.connected else None
        items = [i for i in parse_dump(m.name, text or "") if i.path == etcd_render.PKI.ca]
        out[m.name] = bool(items) and want in items[0].all_fingerprints
    return out


def store_step(cluster: Cluster, inventory: Any, leaves: str | tuple[str, ...], ca: str | None,
               phase: str | None) -> list[str]:
    """Bring the store to what this run ships. Returns what was done, for the log."""
    check_ca(cluster, ca)
    force = leaves_to_force(cluster, leaves)
    store = store_for(cluster)
    done: list[str] = []
    try:
        if ca is not None and phase == "trust" and rotation.begin(cluster, ca):
            done.append(f"{ca}: new CA created; every consumer will trust both")
        elif ca is not None and phase == "reissue":
            if rotation.phase(store, ca) == "trust" and ca == ETCD_CA:
                nxt = store.read(store.cert_path(ca + NEXT))
                assert nxt is not None
                missing = [n for n, ok in masters_trusting(cluster, inventory, nxt).items() if not ok]
                if missing:
                    raise DeployError(
                        f"{ca}: not every master trusts the new CA yet ({', '.join(missing)}): "
                        "run phase 'trust' to the end first")
            if rotation.promote(cluster, ca):
                done.append(f"{ca}: the new CA is in charge; its leaves are re-issued")
        elif ca is not None and phase == "finish" and rotation.finish(cluster, ca):
            done.append(f"{ca}: the previous CA is retired from every trust bundle")
        report = init_pki(cluster, force=force)
    except PKIError as e:
        raise DeployError(f"certificate rotation: {e}") from e
    done += [f"{a.id}: {a.what} ({a.reason})" for a in report.actions]
    mark_store_converged(inventory)  # the etcd and edge deploys need not converge it again
    return done


@deploy("metalseed: rotate certificates (store, then host by host)", data_defaults=DEFAULTS)
def rotate_certs() -> None:
    cluster = cluster_from_inventory(host.inventory)
    inputs = playbook_inputs(cluster, host.data, DEFAULTS)

    def step() -> list[str]:
        if dry_run():
            check_ca(cluster, inputs["rotate_ca"])
            force = sorted(leaves_to_force(cluster, inputs["rotate"]))
            logger.info(f"rotation (dry run: the store is not changed): rotate={inputs['rotate']}"
                        + (f" ({', '.join(force)})" if force else "")
                        + (f", {inputs['rotate_ca']} phase {inputs['rotate_phase']}"
                           if inputs["rotate_ca"] else "")
                        + "; the hosts are compared with the store as it is")
            mark_store_converged(host.inventory)
            return []
        done = store_step(cluster, host.inventory, inputs["rotate"], inputs["rotate_ca"],
                          inputs["rotate_phase"])
        for line in done or ["nothing to re-issue: every certificate is valid and not due"]:
            logger.info(f"rotation: {line}")
        return done

    shared(host.state, "rotation-store-step", step)
    etcd()
    edge()
    if cluster.kubernetes.enabled:  # the same on every host
        kubernetes()  # restarts what reads a renewed file, API servers one master at a time
