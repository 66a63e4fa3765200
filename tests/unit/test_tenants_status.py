"""`metalseed tenants status`: conditions from observations, the table, the JSON, the store's
certificates and the command line, without a seed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from metalseed.cli import build_parser
from metalseed.tenants import status as ts
from metalseed.tenants.profiles import PROFILES

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
RENEW = dt.timedelta(days=30)
QUOTA = PROFILES["small"].datastore_quota


def healthy_obs(name: str = "acme", **kw: object) -> ts.Observation:
    base: dict[str, object] = dict(
        name=name, profile="small", version="v1.36.3",
        endpoint=f"https://{name}.tm.tenants.cluster.local:6443", ready=None, replicas=(1, 1),
        keys=412, bytes=300_000,
        certs=(ts.CertExpiry("ca.crt", NOW + dt.timedelta(days=3650)),
               ts.CertExpiry("apiserver.crt", NOW + dt.timedelta(days=365))))
    base.update(kw)
    return ts.Observation(**base)  # type: ignore[arg-type]


def conds(s: ts.TenantStatus) -> dict[str, tuple[bool, str, bool]]:
    return {c.type: (c.status, c.reason, c.failing) for c in s.conditions}


def test_a_healthy_tenant() -> None:
    s = ts.evaluate("tm", healthy_obs(), NOW, RENEW)
    assert s.healthy and s.reasons() == []
    assert s.nearest_cert == ts.CertExpiry("apiserver.crt", NOW + dt.timedelta(days=365))
    c = conds(s)
    assert c[ts.API_READY] == (True, "/readyz ok through the edge", False)
    assert c[ts.DEPLOYMENT_AVAILABLE] == (True, "1/1 replicas available", False)
    assert c[ts.DATASTORE_WITHIN_QUOTA][0] and f"300000 of {QUOTA} bytes" in c[
        ts.DATASTORE_WITHIN_QUOTA][1]
    assert c[ts.CERTIFICATES_VALID] == (True, "nearest apiserver.crt in 365.0 days", False)


def test_each_failure_makes_the_tenant_unhealthy_with_its_reason() -> None:
    cases = {
        ts.API_READY: (dict(ready="ConnectTimeoutError: timed out"),
                       "/readyz: ConnectTimeoutError: timed out"),
        ts.DEPLOYMENT_AVAILABLE: (dict(replicas=(0, 1)), "0/1 replicas available"),
        ts.DATASTORE_WITHIN_QUOTA: (dict(bytes=QUOTA + 1), f"{QUOTA + 1} of {QUOTA} bytes"),
        ts.CERTIFICATES_VALID: (dict(certs=(ts.CertExpiry("admin.crt",
                                                          NOW - dt.timedelta(hours=1)),)),
                                "admin.crt expired 2026-12-01 11:00Z"),
    }
    for kind, (change, reason) in cases.items():
        s = ts.evaluate("tm", healthy_obs(**change), NOW, RENEW)
        assert not s.healthy, kind
        assert [r.split(": ", 1)[0] for r in s.reasons()] == [kind]
        assert reason in s.reasons()[0], s.reasons()


def test_what_could_not_be_read_is_a_failure_naming_why() -> None:
    s = ts.evaluate("tm", healthy_obs(replicas=None, replicas_error="no admin kubeconfig",
                                      keys=None, bytes=None, usage_error="datastore: deadline",
                                      certs=(), certs_error=""), NOW, RENEW)
    assert not s.healthy
    assert s.reasons() == [f"{ts.DEPLOYMENT_AVAILABLE}: no admin kubeconfig",
                           f"{ts.DATASTORE_WITHIN_QUOTA}: usage not read: datastore: deadline",
                           f"{ts.CERTIFICATES_VALID}: no certificate in the store"]


def test_a_certificate_due_is_a_warning_not_a_failure() -> None:
    due = healthy_obs(certs=(ts.CertExpiry("apiserver.crt", NOW + dt.timedelta(days=3)),))
    s = ts.evaluate("tm", due, NOW, RENEW)
    assert s.healthy
    assert conds(s)[ts.CERTIFICATES_VALID] == (True, "apiserver.crt due: expires in 3.0 days",
                                               False)
    assert "acme: warning: apiserver.crt due: expires in 3.0 days" in ts.format_table([s], NOW)


def test_the_table() -> None:
    good = ts.evaluate("tm", healthy_obs(), NOW, RENEW)
    bad = ts.evaluate("tm", healthy_obs("globex", ready="503 [-]etcd failed"), NOW, RENEW)
    text = ts.format_table([good, bad], NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["TENANT", "SEED", "PROFILE", "VERSION", "API", "NODES", "KEYS",
                                "SIZE", "CERT", "EXPIRY", "ENDPOINT"]
    assert lines[1].split() == ["acme", "tm", "small", "v1.36.3", "ready", "0/0", "412",
                                f"293.0KiB/{QUOTA / 2**20:.1f}MiB", "2027-12-01", "(365d)",
                                "https://acme.tm.tenants.cluster.local:6443"]
    assert lines[2].split()[:5] == ["globex", "tm", "small", "v1.36.3", "NOT"]
    # Columns line up: every row's endpoint starts where the header's does.
    col = lines[0].index("ENDPOINT")
    assert lines[1][col:].startswith("https://acme.") and lines[2][col:].startswith("https://glo")
    assert "globex: APIReady False: /readyz: 503 [-]etcd failed" in lines
    assert lines[-1] == "unhealthy: globex"
    assert ts.format_table([good], NOW).splitlines()[-1] == "1 tenant(s), all healthy"
    assert ts.format_table([], NOW).splitlines()[-1] == "no tenants"


def test_the_json() -> None:
    good = ts.evaluate("tm", healthy_obs(), NOW, RENEW)
    bad = ts.evaluate("tm", healthy_obs("globex", replicas=(0, 1)), NOW, RENEW)
    doc = json.loads(ts.to_json([good, bad]))
    assert doc["healthy"] is False
    acme, globex = doc["tenants"]
    assert acme["healthy"] and not globex["healthy"]
    assert acme["datastore"] == {"keys": 412, "bytes": 300_000, "quota_bytes": QUOTA}
    assert acme["nearest_cert_expiry"] == {"id": "apiserver.crt",
                                           "not_after": "2027-12-01T12:00:00+00:00"}
    assert acme["api_ready"] is True and acme["api_said"] is None
    assert acme["replicas"] == {"available": 1, "desired": 1}
    assert {c["type"]: c["failing"] for c in globex["conditions"]}[ts.DEPLOYMENT_AVAILABLE]
    assert json.loads(ts.to_json([good]))["healthy"] is True


def _pem(cn: str, not_after: dt.datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_store_certs_reads_every_certificate_bundles_included(tmp_path: Path) -> None:
    later, sooner = NOW + dt.timedelta(days=300), NOW + dt.timedelta(days=20)
    (tmp_path / "ca.crt").write_bytes(_pem("ca", later))
    (tmp_path / "ca-bundle.crt").write_bytes(_pem("old", later) + _pem("new", sooner))
    (tmp_path / "sa.pub").write_text("not a certificate")
    certs = ts.store_certs(tmp_path)
    assert sorted((c.id, c.not_after) for c in certs) == [
        ("ca-bundle.crt", sooner), ("ca-bundle.crt", later), ("ca.crt", later)]
    s = ts.evaluate("tm", healthy_obs(certs=certs), NOW, RENEW)
    assert s.nearest_cert == ts.CertExpiry("ca-bundle.crt", sooner)
    assert conds(s)[ts.CERTIFICATES_VALID][1] == "ca-bundle.crt due: expires in 20.0 days"


def test_status_command_line() -> None:
    args = build_parser().parse_args(["tenants", "status", "inventory/lab-seed.py", "--json",
                                      "--data", "kubernetes=true"])
    assert (args.inventory, args.json, args.data) == ("inventory/lab-seed.py", True,
                                                      ["kubernetes=true"])
    assert not build_parser().parse_args(["tenants", "status", "x.py"]).json


def test_a_tenants_nodes_are_its_workers_ready_in_its_own_api() -> None:
    # A control plane without workers: no node condition, healthy.
    alone = ts.evaluate("tm", healthy_obs(), NOW, RENEW)
    assert ts.NODES_READY not in conds(alone) and alone.healthy
    ready = ts.evaluate("tm", healthy_obs(workers=("t1",), nodes=(ts.NodeSeen("t1", True),)),
                        NOW, RENEW)
    assert conds(ready)[ts.NODES_READY] == (True, "1/1 nodes Ready", False) and ready.healthy
    assert ts.format_table([ready], NOW).splitlines()[1].split()[5] == "1/1"
    assert json.loads(ts.to_json([ready]))["tenants"][0]["nodes"] == [{"name": "t1",
                                                                       "ready": True}]
    down = ts.evaluate("tm", healthy_obs(workers=("t1", "t2"), nodes=(ts.NodeSeen("t1", False),)),
                       NOW, RENEW)
    assert conds(down)[ts.NODES_READY] == (
        False, "0/1 nodes Ready (not registered: t2; not Ready: t1)", True)
    assert down.reasons() == ["NodesReady: 0/1 nodes Ready (not registered: t2; not Ready: t1)"]
    unread = ts.evaluate("tm", healthy_obs(workers=("t1",), nodes=None, nodes_error="timed out"),
                         NOW, RENEW)
    assert conds(unread)[ts.NODES_READY] == (False, "nodes not read: timed out", True)
