"""The generated PKI, checked with openssl (an independent client) and the kubernetes client."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
import subprocess
import sys
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from metalseed.errors import CAReplacementRefused, PKIIntegrityError
from metalseed.model import Cluster, _HostInput, build_cluster
from metalseed.pki import x509 as px
from metalseed.pki.issue import init_pki, store_for
from metalseed.pki.plan import DUE, EXPIRED, MISMATCH, OK, inspect
from metalseed.pki.profiles import CLIENT, SERVER, ca_specs, leaf_specs

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def make_cluster(store: Path, masters: int = 3, workers: int = 2, **settings: Any) -> Cluster:
    data = {"cluster_name": "prod", "node_network": "10.20.0.0/24", "vip": "10.20.0.10",
            "pki_store": str(store), **settings}
    hosts = [_HostInput(f"m{i}", ("masters",), {**data, "ssh_hostname": f"10.20.0.{10 + i}"})
             for i in range(1, masters + 1)]
    hosts += [_HostInput(f"w{i}", ("workers",), {**data, "ssh_hostname": f"10.20.0.{100 + i}"})
              for i in range(1, workers + 1)]
    return build_cluster(hosts)


@pytest.fixture()
def cluster(tmp_path: Path) -> Cluster:
    c = make_cluster(tmp_path / "pki")
    init_pki(c, now=NOW)
    return c


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                       p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def test_every_chain_verifies_with_openssl_for_its_purpose(cluster: Cluster) -> None:
    root = cluster.pki_dir
    # Verify at NOW: openssl's -attime takes seconds since the epoch.
    at = str(int(NOW.timestamp()))
    for spec in leaf_specs(cluster):
        ca = root / f"{spec.ca}.crt"
        leaf = root / f"{spec.id}.crt"
        for usage, purpose in ((SERVER, "sslserver"), (CLIENT, "sslclient")):
            r = openssl("verify", "-attime", at, "-purpose", purpose, "-CAfile", str(ca), str(leaf))
            if usage in spec.usages:
                assert r.returncode == 0 and ": OK" in r.stdout, (spec.id, purpose, r.stderr)
            else:
                assert r.returncode != 0, f"{spec.id} must not be valid for {purpose}"
        # ...and never against a different CA.
        other = next(c.id for c in ca_specs(cluster) if c.id != spec.ca)
        r = openssl("verify", "-attime", at, "-CAfile", str(root / f"{other}.crt"), str(leaf))
        assert r.returncode != 0


def test_sans_and_subjects_match_the_profiles(cluster: Cluster) -> None:
    root = cluster.pki_dir

    def info(id: str) -> px.CertInfo:
        return px.describe(px.load_cert((root / f"{id}.crt").read_bytes()))

    s = info("etcd/m2/server")
    assert set(s.dns_names) == {"m2", "localhost"}
    assert set(s.ip_addresses) == {IPv4Address("10.20.0.12"), IPv4Address("127.0.0.1")}
    api = info("apiserver")
    assert set(api.dns_names) == {"m1", "m2", "m3", "kubernetes", "kubernetes.default",
                                  "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
    assert set(api.ip_addresses) == {IPv4Address(a) for a in (
        "10.20.0.10", "10.20.0.11", "10.20.0.12", "10.20.0.13", "10.96.0.1")}
    assert api.usages == {SERVER}
    kubelet = info("kubelet/w2")
    assert kubelet.common_name == "system:node:w2" and kubelet.organizations == ("system:nodes",)
    assert kubelet.usages == {CLIENT}
    assert info("edge/server").ip_addresses == (IPv4Address("10.20.0.10"),)
    # openssl agrees on the SANs of the apiserver certificate.
    text = openssl("x509", "-noout", "-ext", "subjectAltName", "-in", str(root / "apiserver.crt"))
    assert "IP Address:10.96.0.1" in text.stdout and "DNS:kubernetes.default.svc" in text.stdout


def test_key_usage_and_ca_constraints(cluster: Cluster) -> None:
    root = cluster.pki_dir
    ca_text = openssl("x509", "-noout", "-text", "-in", str(root / "etcd/ca.crt")).stdout
    assert "CA:TRUE" in ca_text and "Certificate Sign" in ca_text
    leaf_text = openssl("x509", "-noout", "-text", "-in", str(root / "etcd/m1/peer.crt")).stdout
    assert "CA:FALSE" in leaf_text
    assert "TLS Web Server Authentication" in leaf_text
    assert "TLS Web Client Authentication" in leaf_text
    assert "ecdsa-with-SHA256" in leaf_text and "prime256v1" in leaf_text


def test_validity_windows(cluster: Cluster) -> None:
    root = cluster.pki_dir
    for spec in ca_specs(cluster):
        i = px.describe(px.load_cert((root / f"{spec.id}.crt").read_bytes()))
        assert i.not_after == NOW + dt.timedelta(days=3650)
        assert i.not_before == NOW - px.MAX_BACKDATE
    for spec in leaf_specs(cluster):
        i = px.describe(px.load_cert((root / f"{spec.id}.crt").read_bytes()))
        assert i.not_after == NOW + dt.timedelta(days=365)


def test_permissions(cluster: Cluster) -> None:
    root = cluster.pki_dir
    for p in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        if p.is_dir():
            assert mode == 0o700, p
        elif p.suffix in (".key", ".conf"):
            assert mode == 0o600, p
        else:
            assert mode & 0o077 in (0, 0o044), p  # certificates are public, never writable by others


def test_second_init_changes_no_byte(cluster: Cluster) -> None:
    before = snapshot(cluster.pki_dir)
    report = init_pki(cluster, now=NOW + dt.timedelta(days=1))
    assert report.actions == []
    assert snapshot(cluster.pki_dir) == before


def test_changing_a_master_address_reissues_exactly_what_names_it(cluster: Cluster) -> None:
    before = snapshot(cluster.pki_dir)
    m2 = cluster.masters[1]
    moved = replace(cluster, masters=(cluster.masters[0], replace(m2, address=IPv4Address(
        "10.20.0.50")), cluster.masters[2]))
    report = init_pki(moved, now=NOW)
    assert {a.id for a in report.actions} == {"etcd/m2/server", "etcd/m2/peer", "apiserver"}
    after = snapshot(cluster.pki_dir)
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {f"{i}.{ext}" for i in ("etcd/m2/server", "etcd/m2/peer", "apiserver")
                       for ext in ("crt", "key")}


def test_due_leaves_are_renewed_and_cas_kept(tmp_path: Path) -> None:
    c = make_cluster(tmp_path / "pki", pki_leaf_lifetime="10m", pki_renew_before="2m",
                     pki_ca_lifetime="1d")
    init_pki(c, now=NOW)
    statuses = {s.id: s.state for s in inspect(c, store_for(c), NOW + dt.timedelta(minutes=5)).all()}
    assert set(statuses.values()) == {OK}
    later = NOW + dt.timedelta(minutes=7)  # past 2/3 of 10 minutes
    statuses = {s.id: s.state for s in inspect(c, store_for(c), later).all()}
    assert statuses["etcd/m1/server"] == DUE and statuses["etcd/ca"] == OK
    expired = {s.id: s.state for s in inspect(c, store_for(c), NOW + dt.timedelta(minutes=11)).all()}
    assert expired["apiserver"] == EXPIRED
    ca_before = (c.pki_dir / "etcd/ca.crt").read_bytes()
    report = init_pki(c, now=later)
    assert {a.id for a in report.actions} >= {s.id for s in leaf_specs(c)}
    assert (c.pki_dir / "etcd/ca.crt").read_bytes() == ca_before
    assert {s.state for s in inspect(c, store_for(c), later).all()} == {OK}


def test_key_algorithm_change_reissues_leaves_only(tmp_path: Path) -> None:
    c = make_cluster(tmp_path / "pki")
    init_pki(c, now=NOW)
    rsa = make_cluster(tmp_path / "pki", pki_key_algorithm="rsa-2048")
    states = {s.id: s.state for s in inspect(rsa, store_for(rsa), NOW).all()}
    assert states["apiserver"] == MISMATCH and states["ca"] == OK


def test_corrupt_file_is_reported_never_used(cluster: Cluster) -> None:
    (cluster.pki_dir / "etcd/m1/server.crt").write_text("garbage\n")
    with pytest.raises(PKIIntegrityError, match=r"etcd/m1/server.*not a PEM certificate"):
        init_pki(cluster, now=NOW)
    assert (cluster.pki_dir / "etcd/m1/server.crt").read_text() == "garbage\n"


def test_mismatched_key_is_reported(cluster: Cluster) -> None:
    root = cluster.pki_dir
    (root / "etcd/m1/server.key").write_bytes((root / "etcd/m2/server.key").read_bytes())
    with pytest.raises(PKIIntegrityError, match="does not match"):
        init_pki(cluster, now=NOW)


def test_certificate_from_another_ca_is_reported(cluster: Cluster, tmp_path: Path) -> None:
    other = make_cluster(tmp_path / "other")
    init_pki(other, now=NOW)
    for ext in ("crt", "key"):
        (cluster.pki_dir / f"apiserver.{ext}").write_bytes(
            (other.pki_dir / f"apiserver.{ext}").read_bytes())
    with pytest.raises(PKIIntegrityError, match=r"not signed by the CA in ca\.crt"):
        init_pki(cluster, now=NOW)


def test_missing_ca_with_leaves_is_never_replaced(cluster: Cluster) -> None:
    (cluster.pki_dir / "etcd/ca.crt").unlink()
    (cluster.pki_dir / "etcd/ca.key").unlink()
    with pytest.raises(CAReplacementRefused, match="does not replace a CA silently"):
        init_pki(cluster, now=NOW)
    assert not (cluster.pki_dir / "etcd/ca.crt").exists()


def test_expired_ca_is_refused(cluster: Cluster) -> None:
    with pytest.raises(CAReplacementRefused, match="expired"):
        init_pki(cluster, now=NOW + dt.timedelta(days=3651))


def test_kubeconfigs_load_with_the_kubernetes_client(cluster: Cluster) -> None:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cluster.pki_dir / "kubeconfig/admin.conf"),
                            client_configuration=cfg)
    assert cfg.host == "https://10.20.0.10:6443"
    cert = px.load_cert(Path(cfg.cert_file).read_bytes())
    assert px.describe(cert).subject == "CN=kubernetes-admin,O=system:masters"
    assert px.key_matches(cert, px.load_key(Path(cfg.key_file).read_bytes()))


def test_rsa_profile(tmp_path: Path) -> None:
    c = make_cluster(tmp_path / "pki", masters=1, workers=0, pki_key_algorithm="rsa-2048")
    init_pki(c, now=NOW)
    text = openssl("x509", "-noout", "-text", "-in", str(c.pki_dir / "apiserver.crt")).stdout
    assert "Public-Key: (2048 bit)" in text and "Key Encipherment" in text


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "metalseed.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)


def test_cli_init_show_and_check(tmp_path: Path) -> None:
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "prod.py").write_text(
        'masters = [("m1", {"ssh_hostname": "10.1.0.11"})]\n'
        'all = (["m1"], {"cluster_name": "prod", "node_network": "10.1.0.0/24",'
        ' "vip": "10.1.0.10", "pki_leaf_lifetime": "20s", "pki_renew_before": "1s"})\n')
    import time

    # Long enough that init and show finish before the leaves expire on a loaded machine (6 s
    # was not, at a load average of 200).
    issued = time.monotonic()
    r = run_cli(tmp_path, "pki", "init", "inv/prod.py")
    assert r.returncode == 0, r.stderr
    assert "change(s)" in r.stdout and "created CA etcd/ca" in r.stderr
    r = run_cli(tmp_path, "pki", "show", "inv/prod.py")
    assert r.returncode == 0, r.stdout
    assert "etcd/m1/server" in r.stdout and "all " in r.stdout
    # The 20-second leaves expire: certs check says so and exits 1 (asked until they have: init
    # itself may take seconds on a loaded machine).
    time.sleep(max(0.0, issued + 20.5 - time.monotonic()))
    for _ in range(30):
        r = run_cli(tmp_path, "certs", "check", "--store-only", "inv/prod.py")
        if "expired" in r.stdout:
            break
        time.sleep(1)
    assert r.returncode == 1
    assert "expired" in r.stdout and "need attention" in r.stdout
    r = run_cli(tmp_path, "pki", "init", "inv/prod.py")
    assert r.returncode == 0 and "re-issued etcd/m1/server: expired" in r.stderr
    assert run_cli(tmp_path, "certs", "check", "--store-only", "inv/prod.py").returncode == 0


def test_cli_reports_model_errors(tmp_path: Path) -> None:
    (tmp_path / "prod.py").write_text(
        'masters = [("m1", {"ssh_hostname": "10.1.0.11"}), ("m2", {"ssh_hostname": "10.1.0.12"})]\n'
        'all = (["m1", "m2"], {"cluster_name": "prod", "node_network": "10.1.0.0/24",'
        ' "vip": "10.1.0.10"})\n')
    r = run_cli(tmp_path, "pki", "init", "prod.py")
    assert r.returncode == 2
    assert "masters: found 2" in r.stderr and "odd number" in r.stderr
    assert not (tmp_path / "pki").exists()


def test_cli_data_overrides_like_pyinfra(tmp_path: Path) -> None:
    (tmp_path / "prod.py").write_text(
        'masters = [("m1", {"ssh_hostname": "10.1.0.11"})]\n'
        'all = (["m1"], {"cluster_name": "prod", "node_network": "10.1.0.0/24",'
        ' "vip": "10.1.0.10"})\n')
    r = run_cli(tmp_path, "pki", "init", "prod.py", "--data", "pki_leaf_lifetime=2h",
                "--data", "etcd_heartbeat_ms=100", "--data", "pki_renew_before=1h")
    assert r.returncode == 0, r.stderr
    cert = px.load_cert((tmp_path / "pki/prod/apiserver.crt").read_bytes())
    assert px.describe(cert).lifetime == dt.timedelta(hours=2, minutes=5)
    r = run_cli(tmp_path, "pki", "show", "prod.py", "--data", "nonsense")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr


def test_tables_never_cut_what_names_a_row() -> None:
    from metalseed.pki.cli import _table

    path = "/etc/kubernetes/kubelet/kubeconfig#client-certificate-data"
    text = _table([("HOST", "PATH", "SUBJECT", "STATUS"), ("w1", path, "CN=" + "x" * 80, "ok")],
                  ["ok"], keep=(0, 1))
    row = text.splitlines()[1]
    assert row.split()[:2] == ["w1", path]
    assert "…" in row  # the subject is still cut at 48 characters
