"""Each tenant's PKI under pki/<seed>/tenants/<name>/, from the same code as the seed's: its own
CAs, an API server certificate for its endpoint and Service names, an admin.conf through the seed's
VIP with the endpoint as TLS server name, kubeconfigs for its controller-manager and scheduler, a
service-account key pair; inspected and listed with everything else."""

from __future__ import annotations

import base64
import io
from contextlib import redirect_stdout
from pathlib import Path

import yaml

from metalseed.model import Cluster
from metalseed.pki import x509 as px
from metalseed.pki.cli import show_store
from metalseed.pki.issue import init_pki
from metalseed.pki.plan import OK, inspect
from metalseed.pki.store import Store

from .test_pki import NOW, make_cluster, openssl, snapshot

SEED = {"kubernetes": True, "tenants": {"acme": {}, "globex": {"profile": "medium"}},
        "etcd_source": "tarball", "etcd_tarball_url": "https://e.example/e.tgz",
        "etcd_tarball_sha256": "0" * 64}


def seed(tmp_path: Path) -> Cluster:
    c = make_cluster(tmp_path / "pki", **SEED)
    init_pki(c, now=NOW)
    return c


def verify(ca: Path, cert: Path, *extra: str) -> str:
    proc = openssl("verify", "-attime", str(int(NOW.timestamp())), "-CAfile", str(ca), *extra,
                   str(cert))
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


def test_the_api_server_certificate_names_the_endpoint_and_the_services(tmp_path: Path) -> None:
    c = seed(tmp_path)
    t = c.pki_dir / "tenants" / "acme"
    endpoint = "acme.prod.tenants.cluster.local"
    assert c.tenant_endpoint("acme") == endpoint
    info = px.describe(px.load_cert((t / "apiserver.crt").read_bytes()))
    assert set(info.sans()) == {
        endpoint, "kube-apiserver", "kube-apiserver.tenant-acme", "kube-apiserver.tenant-acme.svc",
        "kube-apiserver.tenant-acme.svc.cluster.local", "kubernetes", "kubernetes.default",
        "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost",
        "10.96.0.1", "127.0.0.1"}
    for name in (endpoint, "kube-apiserver.tenant-acme.svc"):
        assert verify(t / "ca.crt", t / "apiserver.crt", "-purpose", "sslserver",
                      "-verify_hostname", name) == ""
    # Signed by the tenant's CA, not the seed's, nor another tenant's.
    assert verify(c.pki_dir / "ca.crt", t / "apiserver.crt") != ""
    assert verify(c.pki_dir / "tenants" / "globex" / "ca.crt", t / "apiserver.crt") != ""
    assert verify(t / "front-proxy-ca.crt", t / "front-proxy-client.crt",
                  "-purpose", "sslclient") == ""


def test_admin_conf_goes_through_the_vip_with_the_endpoint_as_server_name(tmp_path: Path) -> None:
    c = seed(tmp_path)
    t = c.pki_dir / "tenants" / "globex"
    conf = yaml.safe_load((t / "admin.conf").read_text())
    cluster = conf["clusters"][0]
    assert cluster["name"] == "globex"
    assert cluster["cluster"]["server"] == f"https://{c.vip}:6443"
    assert cluster["cluster"]["tls-server-name"] == "globex.prod.tenants.cluster.local"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == (
        t / "ca.crt").read_bytes()
    user = px.describe(px.load_cert(base64.b64decode(conf["users"][0]["user"]
                                                     ["client-certificate-data"])))
    assert (user.common_name, user.organizations) == ("kubernetes-admin", ("system:masters",))
    for name, cn in (("controller-manager", "system:kube-controller-manager"),
                     ("scheduler", "system:kube-scheduler")):
        conf = yaml.safe_load((t / f"{name}.conf").read_text())
        assert conf["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
        assert "tls-server-name" not in conf["clusters"][0]["cluster"]
        assert px.describe(px.load_cert(base64.b64decode(
            conf["users"][0]["user"]["client-certificate-data"]))).common_name == cn
    # The seed's own admin.conf is untouched by the tenants: no server name, the seed's CA.
    own = yaml.safe_load((c.pki_dir / "kubeconfig" / "admin.conf").read_text())
    assert "tls-server-name" not in own["clusters"][0]["cluster"]


def test_each_tenant_has_its_own_service_account_keys(tmp_path: Path) -> None:
    c = seed(tmp_path)
    keys = {p: (c.pki_dir / p).read_bytes() for p in
            ("sa.key", "tenants/acme/sa.key", "tenants/globex/sa.key")}
    assert len(set(keys.values())) == 3
    for t in ("acme", "globex"):
        key = px.load_key(keys[f"tenants/{t}/sa.key"])
        assert px.public_pem(key) == (c.pki_dir / "tenants" / t / "sa.pub").read_bytes()
        assert (c.pki_dir / "tenants" / t / "sa.key").stat().st_mode & 0o077 == 0


def test_inspected_and_listed_with_the_rest_and_a_rerun_keeps_every_byte(tmp_path: Path) -> None:
    c = seed(tmp_path)
    before = snapshot(c.pki_dir)
    assert not init_pki(c, now=NOW).changed
    assert snapshot(c.pki_dir) == before
    inv = inspect(c, Store(c.pki_dir), NOW)
    ids = {s.id: s.state for s in inv.all()}
    for t in ("acme", "globex"):
        for item in ("ca", "front-proxy-ca", "apiserver", "apiserver-kubelet-client",
                     "front-proxy-client", "admin", "controller-manager", "scheduler", "sa"):
            assert ids[f"tenants/{t}/{item}"] == OK
    out = io.StringIO()
    with redirect_stdout(out):
        rc, _ = show_store(c, "inventory.py", NOW)
    assert rc == 0 and "tenants/acme/apiserver " in out.getvalue()


def test_a_missing_or_mismatched_tenant_leaf_is_reissued_alone(tmp_path: Path) -> None:
    c = seed(tmp_path)
    t = c.pki_dir / "tenants" / "acme"
    (t / "apiserver.crt").unlink()
    (t / "apiserver.key").unlink()
    report = init_pki(c, now=NOW)
    assert [a.id for a in report.actions] == ["tenants/acme/apiserver"]
    # A new tenant domain changes the endpoint: its API server certificate and admin.conf follow.
    moved = make_cluster(tmp_path / "pki", **SEED, tenant_domain="t.example.com")
    report = init_pki(moved, now=NOW)
    assert {a.id for a in report.actions} == {
        "tenants/acme/apiserver", "tenants/globex/apiserver", "tenants/acme/admin.conf",
        "tenants/globex/admin.conf"}
    info = px.describe(px.load_cert((t / "apiserver.crt").read_bytes()))
    assert "acme.t.example.com" in info.sans()
