"""The tenant datastore on a real etcd (the mirror's, in a lab machine d1), with python-etcd3 as
every client: each tenant's certificate reaches exactly its own prefix, a client without a
certificate (or with one of the cluster's etcd CA) is refused, a backup holds every key, a removed
tenant leaves no key, no role and no user, a restore brings the snapshot back and the data's
tenants again, and a rerun changes nothing.

The lab is m1 + d1: the model wants a master, but the datastore deploy touches only d1.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from metalseed import etcdclient  # first: it sets up protobuf for python-etcd3
from metalseed.deploys.datastore import (
    admin_client,
    datastore,
    datastore_backup,
    datastore_restore,
    tenant_usage,
)
from metalseed.errors import DeployError
from metalseed.etcdprobe import RunResult, run_deploy
from metalseed.lab import Lab
from metalseed.lab.inventory import pyinfra_inventory
from metalseed.model import Cluster, cluster_from_inventory
from metalseed.pki.issue import store_for
from metalseed.tenants import datastore as ds
from tests.lab.labs import TEST_LAB, booted_lab

pytestmark = pytest.mark.lab

# A lab of its own (1 master, no worker, 1 datastore machine), beside the session's 3 + 2.
DATASTORE_LAB = os.environ.get("METALSEED_TEST_DATASTORE_LAB") or f"{TEST_LAB}d"
TENANTS = ("acme", "acme2", "globex")
TOP_OP = "datastore: authentication, tenant users and roles"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with booted_lab(DATASTORE_LAB, masters=1, workers=0, datastore=1) as the_lab:
        yield the_lab


def deploy(lab: Lab, tenants: tuple[str, ...], playbook: Callable[..., Any] = datastore,
           **data: Any) -> tuple[Cluster, RunResult]:
    # Tenants are data of a seed (kubernetes = True); only datastore playbooks run here.
    inv = pyinfra_inventory(lab.require_state(), kubernetes=True,
                            tenants={t: {} for t in tenants}, **data)
    return cluster_from_inventory(inv), run_deploy(inv, playbook)


@pytest.fixture(scope="module")
def backups(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datastore-backups")


@pytest.fixture(scope="module")
def seeded(lab: Lab) -> tuple[Cluster, RunResult]:
    """The three tenants, each with a key root wrote under its prefix."""
    cluster, result = deploy(lab, TENANTS)
    with admin_client(cluster) as root:
        for t in TENANTS:
            root.put(f"/{t}/seeded-by-root", t)
    return cluster, result


def etcd3_client(cluster: Cluster, cert: str | None) -> Any:
    """A python-etcd3 client of the datastore's first member, with ``cert`` (a store id) as its
    client certificate, or none."""
    etcd3 = etcdclient._load_etcd3()
    store = store_for(cluster)
    assert cluster.datastore is not None
    u = urlsplit(cluster.datastore.client_urls()[0])
    return etcd3.client(host=u.hostname, port=u.port, timeout=15,
                        ca_cert=str(store.cert_path(ds.CA_BUNDLE_ID)),
                        cert_cert=str(store.cert_path(cert)) if cert else None,
                        cert_key=str(store.key_path(cert)) if cert else None)


def tenant(cluster: Cluster, name: str) -> Any:
    return etcd3_client(cluster, ds.client_id(name))


def denied(call: Callable[[], Any]) -> str:
    """The refusal ``call`` gets (it must get one)."""
    try:
        call()
    except Exception as e:  # python-etcd3 raises its own classes around grpc's codes
        text = f"{type(e).__name__}: {e} {e.__context__ or ''}"
        return text
    raise AssertionError(f"{call} was allowed")


def test_each_tenant_reaches_exactly_its_own_prefix(seeded: tuple[Cluster, RunResult]) -> None:
    cluster, first = seeded
    assert TOP_OP in " ".join(first.changed.get("d1", []))
    with admin_client(cluster) as root:
        assert root.auth_enabled()
        users, roles = root.users(), root.roles()
    assert users["root"] == ["root"]
    assert {u: r for u, r in users.items() if u != "root"} == {
        f"tenant-{t}": [f"tenant-{t}"] for t in TENANTS}
    assert roles["tenant-acme"] == [etcdclient.Permission(etcdclient.READWRITE, b"/acme/",
                                                          b"/acme0")]
    acme = tenant(cluster, "acme")
    try:
        acme.put("/acme/x", "mine")
        value, _ = acme.get("/acme/x")
        assert value == b"mine"
        assert acme.delete("/acme/x")
        assert acme.get("/acme/x")[0] is None
        assert acme.get("/acme/seeded-by-root")[0] == b"acme"
        assert sorted(m.key for _, m in acme.get_prefix("/acme/")) == [b"/acme/seeded-by-root"]
        # acme2 sorts right after acme's prefix: Kamaji's old range end (\0) covered it.
        for other in ("/acme2/seeded-by-root", "/globex/seeded-by-root", "/acme0", "/acme"):
            for what, call in (("get", lambda k=other: acme.get(k)),
                               ("put", lambda k=other: acme.put(k, "theirs")),
                               ("delete", lambda k=other: acme.delete(k))):
                assert "permission denied" in denied(call).lower(), (what, other)
        for what, call in (("range over /", lambda: list(acme.get_prefix("/"))),
                           ("range over all", lambda: list(acme.get_all())),
                           ("range /acme2/", lambda: list(acme.get_prefix("/acme2/")))):
            assert "permission denied" in denied(call).lower(), what
    finally:
        acme.close()
    with admin_client(cluster) as root:
        assert root.get("/acme2/seeded-by-root") == b"acme2"
        assert root.get("/globex/seeded-by-root") == b"globex"


def test_clients_without_a_datastore_certificate_are_refused(
        seeded: tuple[Cluster, RunResult]) -> None:
    cluster, _ = seeded
    anonymous = etcd3_client(cluster, None)
    try:
        text = denied(lambda: anonymous.get("/acme/seeded-by-root"))
    finally:
        anonymous.close()
    assert "permission denied" not in text.lower(), text  # refused before any RBAC: at TLS
    # A certificate of the cluster's own etcd CA is no datastore client either.
    foreign = etcd3_client(cluster, "etcd/healthcheck-client")
    try:
        denied(lambda: foreign.get("/acme/seeded-by-root"))
    finally:
        foreign.close()


def test_a_backup_holds_every_key_of_the_datastore(
        lab: Lab, seeded: tuple[Cluster, RunResult], backups: Path) -> None:
    cluster, _ = seeded
    with admin_client(cluster) as root:
        keys = root.count_range(b"\0", b"\0")
    deploy(lab, TENANTS, datastore_backup, etcd_backup_dir=str(backups))
    [manifest] = (backups / cluster.name / "datastore").glob("*.json")
    m = json.loads(manifest.read_text())
    snapshot = manifest.with_suffix(".db")
    assert m["member"] == "d1" and m["etcd"] == "datastore"
    assert m["total_keys"] == keys >= len(TENANTS)
    assert m["size"] == snapshot.stat().st_size
    assert m["sha256"] == hashlib.sha256(snapshot.read_bytes()).hexdigest()
    # The seed's own backups are elsewhere: nothing in <backup_dir>/<seed>/ itself.
    assert not list((backups / cluster.name).glob("*.db"))


def test_removing_a_tenant_leaves_nothing_of_it_and_a_rerun_changes_nothing(
        lab: Lab, seeded: tuple[Cluster, RunResult]) -> None:
    cluster, _ = seeded
    with admin_client(cluster) as root:
        for i in range(20):
            root.put(f"/globex/registry/k{i}", "x")
        root.put("/acme/kept", "still here")
        globex_keys = root.count_range(b"/globex/", b"/globex0")
    assert globex_keys == 21
    # 20 keys of 'x' at /globex/registry/kNN plus the seeded one.
    usage = tenant_usage(cluster, ["globex", "acme"])
    assert usage["globex"].keys == 21
    assert usage["globex"].bytes == sum(len(f"/globex/registry/k{i}") + 1 for i in range(20)) + \
        len("/globex/seeded-by-root") + len("globex")
    assert usage["acme"].keys == 2  # seeded-by-root and kept
    with admin_client(cluster) as root:
        assert root.range_size(b"/globex/", b"/globex0", page=4) == (
            usage["globex"].keys, usage["globex"].bytes)
    start = time.monotonic()
    cluster, removal = deploy(lab, ("acme", "acme2"))
    took = time.monotonic() - start
    assert TOP_OP in " ".join(removal.changed.get("d1", []))
    with admin_client(cluster) as root:
        assert root.count_range(b"/globex/", b"/globex0") == 0
        users, roles = root.users(), root.roles()
        assert "tenant-globex" not in users and "tenant-globex" not in roles
        assert sorted(users) == ["root", "tenant-acme", "tenant-acme2"]
        assert roles["tenant-acme"] == [etcdclient.Permission(etcdclient.READWRITE, b"/acme/",
                                                              b"/acme0")]
        assert root.get("/acme2/seeded-by-root") == b"acme2"
    acme = tenant(cluster, "acme")
    try:
        assert acme.get("/acme/kept")[0] == b"still here"
    finally:
        acme.close()
    # globex's certificate is still signed by the datastore CA, but names no user any more.
    globex = tenant(cluster, "globex")
    try:
        denied(lambda: globex.put("/globex/again", "x"))
    finally:
        globex.close()
    _, rerun = deploy(lab, ("acme", "acme2"))
    assert rerun.changed == {}, rerun.changed
    print(f"removal run {took:.1f} s, rerun {rerun.seconds:.1f} s")


def test_a_restore_brings_the_snapshot_back_and_the_data_decides_the_tenants(
        lab: Lab, seeded: tuple[Cluster, RunResult], backups: Path) -> None:
    """After the removal above: the snapshot (taken with globex) comes back whole, then the
    restore's own convergence removes globex again, since the data no longer has it."""
    cluster, _ = seeded
    with admin_client(cluster) as root:
        assert root.get("/acme/kept") == b"still here"  # written after the snapshot
    # A quorum is healthy: refused without etcd_restore_force, before anything is touched.
    with pytest.raises(DeployError, match="failed on"):
        deploy(lab, ("acme", "acme2"), datastore_restore, etcd_backup_dir=str(backups))
    with admin_client(cluster) as root:
        assert root.get("/acme/kept") == b"still here"
    _, restored = deploy(lab, ("acme", "acme2"), datastore_restore,
                         etcd_backup_dir=str(backups), etcd_restore_force=True)
    assert TOP_OP in " ".join(restored.changed.get("d1", []))
    with admin_client(cluster) as root:
        assert root.get("/acme/kept") is None  # newer than the snapshot
        assert root.get("/acme/seeded-by-root") == b"acme"
        assert root.get("/acme2/seeded-by-root") == b"acme2"
        assert root.count_range(b"/globex/", b"/globex0") == 0
        users, roles = root.users(), root.roles()
        assert sorted(users) == ["root", "tenant-acme", "tenant-acme2"]
        assert "tenant-globex" not in roles
    acme = tenant(cluster, "acme")
    try:
        assert acme.get("/acme/seeded-by-root")[0] == b"acme"
        assert "permission denied" in denied(lambda: acme.get("/acme2/seeded-by-root")).lower()
    finally:
        acme.close()
    _, rerun = deploy(lab, ("acme", "acme2"))
    assert rerun.changed == {}, rerun.changed
