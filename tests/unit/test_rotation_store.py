"""CA rotation in the store: three phases, trust never broken, resumable (checked with openssl)."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from metalseed.errors import PKIError
from metalseed.model import Cluster
from metalseed.pki import rotation
from metalseed.pki.issue import init_pki, store_for
from metalseed.pki.plan import MISMATCH, OK, PREVIOUS, inspect
from tests.unit.test_pki import NOW, make_cluster

CA = "etcd/ca"
LEAF = "etcd/m1/server"


def verifies(bundle: bytes, leaf: bytes, tmp: Path) -> bool:
    (tmp / "bundle.pem").write_bytes(bundle)
    (tmp / "leaf.pem").write_bytes(leaf)
    r = subprocess.run(["openssl", "verify", "-attime", str(int(NOW.timestamp()) + 60),
                        "-CAfile", str(tmp / "bundle.pem"), str(tmp / "leaf.pem")],
                       capture_output=True, text=True, check=False)
    return r.returncode == 0


@pytest.fixture()
def cluster(tmp_path: Path) -> Cluster:
    c = make_cluster(tmp_path / "pki")
    init_pki(c, now=NOW)
    return c


def test_three_phases_keep_trust_at_every_step(cluster: Cluster, tmp_path: Path) -> None:
    store = store_for(cluster)
    old_leaf = store.cert_path(LEAF).read_bytes()
    assert rotation.phase(store, CA) == rotation.STEADY

    assert rotation.begin(cluster, CA, now=NOW) is True
    assert rotation.begin(cluster, CA, now=NOW) is False  # idempotent
    assert rotation.phase(store, CA) == "trust"
    bundle = rotation.trust_bundle(store, CA)
    assert bundle.count(b"BEGIN CERTIFICATE") == 2
    assert rotation.bundle_path(store, CA).read_bytes() == bundle  # what deploys ship
    assert verifies(bundle, old_leaf, tmp_path)
    assert init_pki(cluster, now=NOW).actions == []  # phase 1 re-issues nothing

    assert rotation.promote(cluster, CA) is True
    assert rotation.phase(store, CA) == "reissue"
    states = {s.id: s.state for _, s in inspect(cluster, store, NOW).leaves}
    assert states[LEAF] == MISMATCH and states["apiserver"] == OK  # other CAs are untouched
    with pytest.raises(PKIError, match="not re-issued"):
        rotation.finish(cluster, CA)
    report = init_pki(cluster, now=NOW)
    assert {a.id for a in report.actions if not a.id.startswith("kubeconfig")} == {
        s.id for s, _ in inspect(cluster, store, NOW).leaves if s.ca == CA}
    new_leaf = store.cert_path(LEAF).read_bytes()
    bundle = rotation.trust_bundle(store, CA)
    assert verifies(bundle, old_leaf, tmp_path) and verifies(bundle, new_leaf, tmp_path)

    assert rotation.finish(cluster, CA) is True
    assert rotation.finish(cluster, CA) is False
    assert rotation.phase(store, CA) == rotation.STEADY
    bundle = rotation.trust_bundle(store, CA)
    assert bundle.count(b"BEGIN CERTIFICATE") == 1
    assert rotation.bundle_path(store, CA).read_bytes() == store.cert_path(CA).read_bytes()
    assert verifies(bundle, new_leaf, tmp_path) and not verifies(bundle, old_leaf, tmp_path)
    assert list((store.root / "retired").glob("etcd-ca-*.crt"))
    assert not store.key_path(CA + PREVIOUS).exists()
    assert {s.state for s in inspect(cluster, store, NOW).all()} == {OK}


def test_promote_interrupted_after_saving_previous_resumes(cluster: Cluster) -> None:
    store = store_for(cluster)
    old = store.cert_path(CA).read_bytes()
    rotation.begin(cluster, CA, now=NOW)
    new = store.cert_path(CA + ".next").read_bytes()
    # Simulate a crash right after the previous CA was saved.
    cert, key = store.read_pair(CA)
    assert cert is not None and key is not None
    store.write_pair(CA + PREVIOUS, cert, key)
    assert rotation.promote(cluster, CA) is True
    assert store.cert_path(CA).read_bytes() == new
    assert store.cert_path(CA + PREVIOUS).read_bytes() == old
    assert rotation.promote(cluster, CA) is False


def test_phases_out_of_order_are_refused(cluster: Cluster) -> None:
    with pytest.raises(PKIError, match="run phase 'trust' first"):
        rotation.promote(cluster, CA)
    rotation.begin(cluster, CA, now=NOW)
    with pytest.raises(PKIError, match="run phase 'reissue' first"):
        rotation.finish(cluster, CA)
    rotation.promote(cluster, CA)
    with pytest.raises(PKIError, match="run phase 'finish'"):
        rotation.begin(cluster, CA, now=NOW)
    with pytest.raises(PKIError, match="unknown CA"):
        rotation.begin(cluster, "nope", now=NOW)


def test_new_ca_is_a_different_key_and_subject(cluster: Cluster) -> None:
    store = store_for(cluster)
    rotation.begin(cluster, CA, now=NOW + dt.timedelta(seconds=1))
    from metalseed.pki import x509 as px

    old = px.load_cert(store.cert_path(CA).read_bytes())
    new = px.load_cert(store.cert_path(CA + ".next").read_bytes())
    assert old.subject != new.subject and old.public_key() != new.public_key()


def test_leaf_of_a_retired_ca_is_reissued_not_refused(tmp_path: Path) -> None:
    # A leaf for a node the model did not have during a CA rotation (a replacement master, say)
    # is still signed by the retired CA: it is ours, so it is re-issued rather than refused.
    with_w1 = make_cluster(tmp_path / "pki", masters=3, workers=1)
    init_pki(with_w1, now=NOW)
    without_w1 = make_cluster(tmp_path / "pki", masters=3, workers=0)
    rotation.begin(without_w1, "ca", now=NOW)
    rotation.promote(without_w1, "ca")
    init_pki(without_w1, now=NOW)
    rotation.finish(without_w1, "ca")
    states = {s.id: s for _, s in inspect(with_w1, store_for(with_w1), NOW).leaves}
    assert states["kubelet/w1"].state == MISMATCH
    assert states["kubelet/w1"].detail == "signed by a retired CA"
    report = init_pki(with_w1, now=NOW)
    assert "kubelet/w1" in {a.id for a in report.actions}


def _kubeconfig_cas(store_root: Path, name: str) -> list[bytes]:
    import base64

    import yaml

    from metalseed.pki import x509 as px

    doc = yaml.safe_load((store_root / "kubeconfig" / f"{name}.conf").read_bytes())
    pem = base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])
    from cryptography import x509

    return [px.cert_pem(c) for c in x509.load_pem_x509_certificates(pem)]


def test_kubeconfigs_trust_both_cluster_cas_while_the_cluster_ca_rotates(tmp_path: Path) -> None:
    c = make_cluster(tmp_path / "pki", kubernetes=True, etcd_source="mirror")
    init_pki(c, now=NOW)
    store = store_for(c)
    old = store.cert_path("ca").read_bytes()
    assert _kubeconfig_cas(store.root, "admin") == [old]

    rotation.begin(c, "ca", now=NOW)
    init_pki(c, now=NOW)
    new = store.cert_path("ca.next").read_bytes()
    trusting = rotation.trust_bundle(store, "ca")
    for name in ("admin", "controller-manager", "kubelet/w1", "kube-proxy", "flannel"):
        assert _kubeconfig_cas(store.root, name) == [old, new], name

    rotation.promote(c, "ca")
    init_pki(c, now=NOW)
    # The same bytes in phase 2: what only trusts (kubelets' client CA, kube-root-ca.crt) is not
    # shipped or restarted again.
    assert rotation.trust_bundle(store, "ca") == trusting
    assert _kubeconfig_cas(store.root, "admin") == [old, new]

    rotation.finish(c, "ca")
    init_pki(c, now=NOW)
    assert _kubeconfig_cas(store.root, "admin") == [new]
    assert _kubeconfig_cas(store.root, "kubelet/w1") == [new]


def test_host_checks_of_a_rotation(tmp_path: Path) -> None:
    """What the playbook checks on the hosts before ``reissue`` and before ``finish`` (pure)."""
    from metalseed.deploys.rotation import leaves_of, not_trusting
    from metalseed.pki.installed import Installed, fingerprint
    from metalseed.pki.x509 import describe, load_cert

    c = make_cluster(tmp_path / "pki", kubernetes=True, etcd_source="mirror")
    init_pki(c, now=NOW)
    store = store_for(c)
    rotation.begin(c, "ca", now=NOW)
    old, new = store.cert_path("ca").read_bytes(), store.cert_path("ca.next").read_bytes()
    leaf = store.cert_path("kubelet/w1").read_bytes()

    def item(path: str, *pems: bytes) -> Installed:
        certs = [load_cert(p) for p in pems]
        return Installed("w1", path, describe(certs[0]), fingerprint(certs[0]),
                         all_fingerprints=tuple(fingerprint(x) for x in certs))

    edge_chain = item("/etc/nginx/metalseed/edge.pem", store.cert_path("edge/server").read_bytes(),
                      store.cert_path("edge/ca").read_bytes())
    behind = {"w1": [item("/k/ca.crt", old), item("/k/kubeconfig#client-certificate-data", leaf),
                     edge_chain]}
    assert not_trusting(behind, old, new) == ["w1:/k/ca.crt"]
    ahead = {"w1": [item("/k/ca.crt", old, new), edge_chain]}
    assert not_trusting(ahead, old, new) == []
    # Before finish: a leaf of the old CA still installed is named, chains and CAs are not.
    assert leaves_of(behind, old) == ["w1:/k/kubeconfig#client-certificate-data"]
    assert leaves_of(ahead, old) == []
