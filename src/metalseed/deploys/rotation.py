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

from metalseed.deploys.datastore import datastore
from metalseed.deploys.edge import edge
from metalseed.deploys.etcd import etcd
from metalseed.deploys.gates import shared
from metalseed.deploys.kubernetes import kubernetes
from metalseed.deploys.tenant_workers import tenant_worker
from metalseed.errors import DeployError, KubernetesError, ModelError, PKIError
from metalseed.model import Cluster, cluster_from_inventory, playbook_inputs
from metalseed.pki import rotation
from metalseed.pki.installed import Installed, InstalledCertificates, fingerprint, parse_dump
from metalseed.pki.issue import init_pki, mark_store_converged, store_for
from metalseed.pki.plan import NEXT, PREVIOUS
from metalseed.pki.profiles import CLUSTER_CA, DATASTORE_CA, leaf_specs
from metalseed.pki.x509 import load_cert
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


def check_ca(cluster: Cluster, cas: tuple[str, ...] | None) -> None:
    known = rotation.ca_ids(cluster)
    unknown = [ca for ca in cas or () if ca not in known]
    if unknown:
        raise ModelError("rotate_ca", ",".join(cas or ()),
                         f"the cluster's CAs (one, or several separated by commas): {', '.join(known)}")
    if DATASTORE_CA in (cas or ()):
        # Its phases would have to check and ship the datastore members' trust files and every
        # tenant API server's; this playbook reads and ships the cluster's nodes only.
        raise ModelError("rotate_ca", DATASTORE_CA, "a CA this playbook rotates: "
                         f"{', '.join(ca for ca in known if ca != DATASTORE_CA)} (the tenant "
                         "datastore's CA cannot be rotated yet)")


def installed_everywhere(cluster: Cluster, inventory: Any) -> dict[str, list[Installed]]:
    """Every node's installed certificates (files and kubeconfig-embedded), read over SSH. A node
    that cannot be read stops the rotation: it may not trust what the next step ships."""
    out: dict[str, list[Installed]] = {}
    unread = []
    for n in cluster.nodes:
        h = inventory.get_host(n.inventory_name)
        text = h.get_fact(InstalledCertificates) if h.connected else None
        if text is None:
            unread.append(n.name)
            continue
        out[n.name] = parse_dump(n.name, text)
    if unread:
        raise DeployError(f"certificate rotation: cannot read the installed certificates of "
                          f"{', '.join(unread)} (unreachable?): a CA rotation needs every node")
    return out


def _trust_file(item: Installed) -> bool:
    """A file of CA certificates (a trust bundle, a kubeconfig's certificate-authority-data), as
    opposed to a leaf or a chain that starts with one (the edge's serving bundle)."""
    return item.info is not None and item.info.is_ca


def not_trusting(installed: dict[str, list[Installed]], current_pem: bytes, next_pem: bytes
                 ) -> list[str]:
    """``host:path`` of every installed trust file that holds the current CA but not the next one
    (pure): before phase ``reissue`` puts the next CA in charge, there must be none."""
    current, nxt = fingerprint(load_cert(current_pem)), fingerprint(load_cert(next_pem))
    return [f"{host}:{i.path}" for host, items in sorted(installed.items()) for i in items
            if _trust_file(i) and current in i.all_fingerprints and nxt not in i.all_fingerprints]


def leaves_of(installed: dict[str, list[Installed]], ca_pem: bytes) -> list[str]:
    """``host:path`` of every installed leaf (or chain, or kubeconfig client certificate) issued by
    this CA (pure): before phase ``finish`` retires the previous CA, there must be none."""
    subject = load_cert(ca_pem).subject.rfc4514_string()
    return [f"{host}:{i.path}" for host, items in sorted(installed.items()) for i in items
            if i.info is not None and not i.info.is_ca and i.info.issuer == subject]


def _listed(items: list[str], limit: int = 6) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_hosts_trust(cluster: Cluster, inventory: Any, ca: str) -> None:
    """Before ``reissue``: every node trusts the next CA (its files, its kubeconfigs) and, for the
    cluster CA, every namespace's kube-root-ca.crt holds it and the add-ons were rolled onto it."""
    store = store_for(cluster)
    current, nxt = store.read(store.cert_path(ca)), store.read(store.cert_path(ca + NEXT))
    assert current is not None and nxt is not None
    missing = not_trusting(installed_everywhere(cluster, inventory), current, nxt)
    if missing:
        raise DeployError(f"{ca}: not every node trusts the new CA yet ({_listed(missing)}): run "
                          "phase 'trust' to the end first")
    if ca == CLUSTER_CA and cluster.kubernetes.enabled:
        from metalseed.kube.apply import addons_not_rolled, ca_bundle, root_ca_stale

        try:
            bundle = ca_bundle(cluster)
            stale = root_ca_stale(cluster, bundle)
            unrolled = addons_not_rolled(cluster, bundle)
        except KubernetesError as e:
            raise DeployError(f"{ca}: cannot check what the pods trust: {e}") from e
        if stale or unrolled:
            raise DeployError(
                f"{ca}: pods do not trust the new CA yet (kube-root-ca.crt stale in "
                f"{_listed(stale) or 'no namespace'}; not rolled onto it: "
                f"{_listed(unrolled) or 'none'}): run phase 'trust' to the end first")


def check_hosts_reissued(cluster: Cluster, inventory: Any, ca: str) -> None:
    """Before ``finish``: no node still uses a certificate of the previous CA."""
    store = store_for(cluster)
    prev = store.read(store.cert_path(ca + PREVIOUS))
    assert prev is not None
    old = leaves_of(installed_everywhere(cluster, inventory), prev)
    if old:
        raise DeployError(f"{ca}: certificates of the previous CA are still installed "
                          f"({_listed(old)}): run phase 'reissue' to the end first")


def store_step(cluster: Cluster, inventory: Any, leaves: str | tuple[str, ...],
               cas: tuple[str, ...] | None, phase: str | None) -> list[str]:
    """Bring the store to what this run ships. Returns what was done, for the log."""
    check_ca(cluster, cas)
    force = leaves_to_force(cluster, leaves)
    store = store_for(cluster)
    done: list[str] = []
    try:
        for ca in cas or ():
            # Each step checks the hosts first (read over SSH) where the store is about to take
            # away something they may still need; a rerun of the same phase skips what is done.
            if phase == "trust" and rotation.begin(cluster, ca):
                done.append(f"{ca}: new CA created; every consumer will trust both")
            elif phase == "reissue":
                if rotation.phase(store, ca) == "trust":
                    check_hosts_trust(cluster, inventory, ca)
                if rotation.promote(cluster, ca):
                    done.append(f"{ca}: the new CA is in charge; its leaves are re-issued")
            elif phase == "finish":
                if rotation.phase(store, ca) == "reissue" and not rotation.leaves_on_previous(
                        cluster, ca):
                    check_hosts_reissued(cluster, inventory, ca)
                if rotation.finish(cluster, ca):
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
    if cluster.is_tenant_worker_host(host.name):
        # A node of its tenant's cluster: its renewed kubelet, kube-proxy and flanneld material
        # from the tenant's CA, each agent restarted behind its health check (what Kamaji leaves
        # to the operator). The tenant's control plane takes its renewed leaves from seed.py.
        tenant_worker()
    elif not cluster.is_datastore_host(host.name):  # datastore members are no cluster nodes
        etcd()
        edge()
        if cluster.kubernetes.enabled:  # the same on every host
            kubernetes()  # restarts what reads a renewed file, API servers one master at a time
    # The datastore's renewed leaves, members restarted one at a time behind its health gate.
    datastore()
