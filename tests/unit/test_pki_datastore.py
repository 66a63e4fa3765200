"""The tenant datastore's PKI: its own CA, members, the root client and each tenant's client,
checked with openssl; a cluster without a datastore keeps exactly the material it had."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

from metalseed.model import Cluster, _HostInput, build_cluster
from metalseed.pki import x509 as px
from metalseed.pki.issue import init_pki
from metalseed.pki.plan import OK, inspect
from metalseed.pki.profiles import ca_specs, leaf_specs
from metalseed.pki.store import Store
from metalseed.tenants import datastore as ds

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def seed(store: Path, tenants: dict[str, Any] | None, datastore: int = 1) -> Cluster:
    data: dict[str, Any] = {"cluster_name": "seed", "node_network": "10.20.0.0/24",
                            "vip": "10.20.0.10", "pki_store": str(store), "kubernetes": True}
    if tenants is not None:
        data["tenants"] = tenants
    hosts = [_HostInput("m1", ("masters",), {**data, "ssh_hostname": "10.20.0.11"}),
             _HostInput("w1", ("workers",), {**data, "ssh_hostname": "10.20.0.21"})]
    hosts += [_HostInput(f"d{i}", ("datastore",), {**data, "ssh_hostname": f"10.20.0.{30 + i}"})
              for i in range(1, datastore + 1)]
    return build_cluster(hosts)


def verify(ca: Path, leaf: Path, purpose: str) -> bool:
    r = subprocess.run(["openssl", "verify", "-attime", str(int(NOW.timestamp())), "-purpose",
                        purpose, "-CAfile", str(ca), str(leaf)], capture_output=True, text=True,
                       check=False)
    return r.returncode == 0


def test_datastore_material_under_its_own_ca(tmp_path: Path) -> None:
    c = seed(tmp_path / "pki", {"acme": {}, "globex": {}})
    init_pki(c, now=NOW)
    root = c.pki_dir
    assert (root / "datastore" / "ca.crt").is_file()
    assert (root / "datastore" / "ca-bundle.crt").read_bytes() == (
        root / "datastore" / "ca.crt").read_bytes()
    ca = root / "datastore" / "ca.crt"
    for leaf, purposes in (("datastore/d1/server", ("sslserver", "sslclient")),
                           ("datastore/d1/peer", ("sslserver", "sslclient")),
                           ("datastore/root", ("sslclient",)),
                           ("tenants/acme/datastore-client", ("sslclient",)),
                           ("tenants/globex/datastore-client", ("sslclient",))):
        for purpose in purposes:
            assert verify(ca, root / f"{leaf}.crt", purpose), (leaf, purpose)
        # Never a certificate of the cluster's etcd CA, nor one of ours for that CA.
        assert not verify(root / "etcd" / "ca.crt", root / f"{leaf}.crt", "sslclient")
    assert not verify(ca, root / "apiserver-etcd-client.crt", "sslclient")
    assert not verify(ca, root / "tenants/acme/datastore-client.crt", "sslserver")
    store = Store(root)
    cns = {id: px.describe(px.load_cert(store.read(store.cert_path(id)) or b"")).common_name
           for id in ("datastore/root", ds.client_id("acme"), ds.client_id("globex"))}
    assert cns == {"datastore/root": "root", "tenants/acme/datastore-client": "tenant-acme",
                   "tenants/globex/datastore-client": "tenant-globex"}
    d1 = px.describe(px.load_cert(store.read(store.cert_path("datastore/d1/server")) or b""))
    assert {str(a) for a in d1.ip_addresses} == {"10.20.0.31", "127.0.0.1"}
    assert oct((root / "tenants/acme/datastore-client.key").stat().st_mode & 0o777) == "0o600"
    inv = inspect(c, store, NOW)
    assert all(s.state == OK for s in inv.all()), [(s.id, s.state) for s in inv.all()]
    assert "datastore/ca" in inv.cas
    # A second run writes nothing.
    assert not init_pki(c, now=NOW).changed


def test_a_new_tenant_gets_its_client_and_nothing_else_changes(tmp_path: Path) -> None:
    c = seed(tmp_path / "pki", {"acme": {}})
    init_pki(c, now=NOW)
    report = init_pki(seed(tmp_path / "pki", {"acme": {}, "acme2": {}}), now=NOW)
    done = [(a.id, a.what) for a in report.actions]
    assert ("tenants/acme2/datastore-client", "issued") in done
    # The new tenant's own material only (its tenant PKI is helper S's): nothing of the
    # datastore's or of acme's is touched.
    assert all(id.startswith("tenants/acme2/") for id, _ in done), done


def test_without_a_datastore_no_datastore_material(tmp_path: Path) -> None:
    c = seed(tmp_path / "pki", None, datastore=0)
    assert all(not s.id.startswith(("datastore/", "tenants/")) for s in leaf_specs(c))
    assert ds.CA_ID not in [s.id for s in ca_specs(c)]
    init_pki(c, now=NOW)
    assert not (c.pki_dir / "datastore").exists()
