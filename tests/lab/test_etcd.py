"""etcd on real lab machines: mutual TLS, faults under a continuous writer, backup and restore,
member replacement, idempotence. Every fault is undone; etcd is left running on m1-m3."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec as ecc
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from metalseed import etcdclient, etcdprobe
from metalseed.deploys import etcd as d
from metalseed.errors import EtcdError, HealthCheckError
from metalseed.lab import Lab
from metalseed.model import Cluster
from metalseed.render import etcd as r

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def cluster(lab: Lab) -> Iterator[Cluster]:
    inv = etcdprobe.lab_inventory(lab)
    etcdprobe.run_deploy(inv, d.etcd)
    yield etcdprobe.cluster_of(inv)


@pytest.fixture
def client(cluster: Cluster) -> Iterator[etcdclient.EtcdClient]:
    with etcdprobe.client(cluster) as c:
        yield c


def url(cluster: Cluster, name: str) -> str:
    return r.member_client_url(cluster, cluster.node(name))


def wait_for(check: Any, timeout: float = 20, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except EtcdError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        time.sleep(interval)


def main_pids(lab: Lab, names: list[str]) -> dict[str, str]:
    return {n: lab.ssh(n, f"systemctl show -p MainPID --value {r.UNIT_NAME}").stdout.strip()
            for n in names}


# ---------------------------------------------------------------------------------------------


def test_cluster_forms_and_writes_are_read_back_from_every_member(
        cluster: Cluster, client: etcdclient.EtcdClient) -> None:
    health = client.wait_healthy(timeout=30)
    assert len(health) == 3 and all(h.healthy for h in health)
    assert {m.name for m in client.members()} == {"m1", "m2", "m3"}
    client.put_at(url(cluster, "m1"), "/t/forms", "through m1")
    for name in ("m2", "m3"):
        assert client.get("/t/forms", endpoint=url(cluster, name)) == b"through m1"


def test_second_run_changes_nothing_and_restarts_nothing(lab: Lab, cluster: Cluster) -> None:
    before = main_pids(lab, ["m1", "m2", "m3"])
    result = etcdprobe.run_deploy(etcdprobe.lab_inventory(lab), d.etcd)
    assert result.changed == {}
    assert main_pids(lab, ["m1", "m2", "m3"]) == before


def test_changed_settings_restart_members_one_at_a_time_under_writes(
        lab: Lab, cluster: Cluster) -> None:
    before = main_pids(lab, ["m1", "m2", "m3"])
    try:
        with etcdprobe.Writer(cluster, prefix="/t/rolling/") as writer:
            writer.wait_acks(20)
            result = etcdprobe.run_deploy(etcdprobe.lab_inventory(lab, etcd_election_ms=600),
                                          d.etcd)
            writer.wait_acks(20)
        restarted = main_pids(lab, ["m1", "m2", "m3"])
        assert all(restarted[n] != before[n] for n in before)
        assert all("etcd | Rolling restart of etcd (health-gated)" in ops
                   for ops in result.changed.values()) and len(result.changed) == 3
        assert "ETCD_ELECTION_TIMEOUT=600" in lab.ssh("m1", f"cat {r.ENV_FILE}").stdout
        # Quorum held throughout: writes never stopped for longer than a leader change.
        assert writer.longest_gap() < 2.0
    finally:
        etcdprobe.run_deploy(etcdprobe.lab_inventory(lab), d.etcd)


def test_files_on_a_master(lab: Lab, cluster: Cluster) -> None:
    out = lab.ssh("m2", f"stat -c '%a %U %n' {r.PKI_DIR}/* {cluster.etcd.data_dir}; "
                        f"systemctl is-enabled {r.PACKAGED_UNIT}; ps -o user= -C etcd").stdout
    lines = out.splitlines()
    assert f"700 etcd {cluster.etcd.data_dir}" in lines
    for f in r.pki_files(cluster.node("m2")):
        assert f"{f.mode:o} etcd {f.path}" in lines
    assert "masked" in lines and "etcd" in lines
    # The CA key and other members' keys are nowhere on the machine.
    found = lab.ssh("m2", "grep -rl 'PRIVATE KEY' /etc/metalseed").stdout.split()
    assert sorted(found) == sorted([r.PKI.key, r.PKI.peer_key, r.PKI.client_key])


def _other_ca_client(tmp_path: Path) -> etcdclient.TLSFiles:
    now = dt.datetime.now(dt.UTC)
    ca_key = ecc.generate_private_key(ecc.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some-other-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ecc.generate_private_key(ecc.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intruder")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "other-ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "intruder.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "intruder.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return etcdclient.TLSFiles(tmp_path / "other-ca.crt", tmp_path / "intruder.crt",
                               tmp_path / "intruder.key")


def test_access_is_refused_without_the_right_client_certificate(
        cluster: Cluster, tmp_path: Path) -> None:
    ep = url(cluster, "m1")
    good = d.tls_files(cluster)
    intruder = _other_ca_client(tmp_path)
    cases = {
        "no client certificate": (etcdclient.TLSFiles(good.ca), ep,
                                  "requires a client certificate"),
        # Trusting the server but presenting a certificate of another CA.
        "certificate of another CA": (etcdclient.TLSFiles(good.ca, intruder.cert, intruder.key),
                                      ep, "rejected the client certificate"),
        "plain HTTP": (None, ep.replace("https://", "http://"), "plain HTTP"),
    }
    for label, (tls, endpoint, why) in cases.items():
        with etcdclient.EtcdClient([endpoint], tls, timeout=3) as c:
            with pytest.raises(EtcdError) as e:
                c.put_at(endpoint, "/t/intrusion", label)
            assert why in str(e.value), (label, str(e.value))
    with etcdclient.EtcdClient([ep], good, timeout=3) as c:
        assert c.get("/t/intrusion") is None


def test_tls_is_1_2_or_newer_with_aead_ciphers_only(cluster: Cluster) -> None:
    addr = str(cluster.node("m1").address)
    tls = d.tls_files(cluster)

    def handshake(configure: Any) -> str:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(str(tls.ca))
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
        configure(ctx)
        with socket.create_connection((addr, cluster.etcd.client_port), timeout=3) as sock, \
                ctx.wrap_socket(sock, server_hostname=addr) as s:
            return f"{s.version()} {s.cipher()[0]}"

    def tls11(ctx: ssl.SSLContext) -> None:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1

    def cbc(ctx: ssl.SSLContext) -> None:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA")

    def tls12(ctx: ssl.SSLContext) -> None:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    for weak in (tls11, cbc):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(weak)
    version, cipher = handshake(tls12).split()
    assert version == "TLSv1.2" and ("GCM" in cipher or "CHACHA20" in cipher)
    assert handshake(lambda ctx: None).startswith("TLSv1.3")


def test_metrics_and_health_are_served_on_loopback_only(lab: Lab, cluster: Cluster) -> None:
    assert '"health":"true"' in lab.ssh(
        "m1", f"curl -s http://127.0.0.1:{cluster.etcd.metrics_port}/health").stdout
    with pytest.raises(OSError):
        socket.create_connection((str(cluster.node("m1").address), cluster.etcd.metrics_port),
                                 timeout=2).close()


def test_leader_crash_under_a_continuous_writer_loses_no_acknowledged_write(
        lab: Lab, cluster: Cluster, client: etcdclient.EtcdClient) -> None:
    victim = etcdprobe.leader(cluster, client)
    writer = etcdprobe.Writer(cluster, prefix="/t/crash/")
    try:
        with writer:
            writer.wait_acks(50)
            t_crash = time.monotonic()
            lab.crash(victim.name)
            writer.wait_acks(50, timeout=15)
        gap = writer.longest_gap(since=t_crash)
        assert gap < 3.0, f"writes stopped for {gap:.2f}s after the leader crashed"
        new_leader = etcdprobe.leader(cluster, client)
        assert new_leader.name != victim.name
    finally:
        lab.restart(victim.name)
    client.wait_healthy(timeout=60)
    present = set(client.get_prefix("/t/crash/"))
    assert writer.lost(present) == []
    # The crashed member caught up: its own copy has the writes made while it was down.
    last_key = f"/t/crash/{writer.acked[-1][0]:08d}"
    wait_for(lambda: client.get(last_key, endpoint=url(cluster, victim.name), serializable=True))


@pytest.mark.parametrize("fault", ["freeze", "cut"])
def test_a_hung_or_cut_off_member_does_not_stop_the_others_and_catches_up(
        lab: Lab, cluster: Cluster, client: etcdclient.EtcdClient, fault: str) -> None:
    victim = next(m for m in cluster.masters if m.name != etcdprobe.leader(cluster, client).name)
    undo = {"freeze": lab.thaw, "cut": lab.restore}[fault]
    getattr(lab, fault)(victim.name)
    try:
        others = [m for m in cluster.masters if m.name != victim.name]
        for i in range(20):
            client.put_at(url(cluster, others[i % 2].name), f"/t/{fault}/{i}", str(i))
        assert client.get(f"/t/{fault}/19", endpoint=url(cluster, others[0].name)) == b"19"
        with pytest.raises(HealthCheckError, match=victim.name):
            d.wait_cluster_healthy(cluster, timeout=1)
    finally:
        undo(victim.name)
    client.wait_healthy(timeout=60)
    wait_for(lambda: client.get(f"/t/{fault}/19", endpoint=url(cluster, victim.name),
                                serializable=True) == b"19")


def test_backup_then_restore_after_two_members_lost_their_data(
        lab: Lab, cluster: Cluster, client: etcdclient.EtcdClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    inv = etcdprobe.lab_inventory(lab, etcd_backup_dir=str(tmp_path))
    for i in range(200):
        client.put(f"/t/backup/{i:04d}", f"value-{i}")
    for _ in range(3):  # three snapshots, retention two
        etcdprobe.run_deploy(etcdprobe.lab_inventory(lab, etcd_backup_dir=str(tmp_path),
                                                     etcd_backup_retention=2), d.etcd_backup)
    snaps = d.list_snapshots(etcdprobe.cluster_of(inv))
    assert len(snaps) == 2
    manifest = json.loads(snaps[-1].path.with_suffix(".json").read_text())
    assert manifest["revision"] > 200 and manifest["hash"] and manifest["total_keys"] >= 200
    assert (snaps[-1].path.stat().st_mode & 0o777) == 0o600
    client.put("/t/backup/after-snapshot", "gone after restore")

    for name in ("m2", "m3"):
        lab.ssh(name, f"systemctl stop {r.UNIT_NAME} && rm -rf {cluster.etcd.data_dir}",
                check=True)
    with pytest.raises(HealthCheckError):
        d.wait_cluster_healthy(cluster, timeout=3)  # quorum is gone

    etcdprobe.run_deploy(inv, d.etcd_restore)  # the newest snapshot
    client.wait_healthy(timeout=60)
    restored = client.get_prefix("/t/backup/")
    assert {f"/t/backup/{i:04d}" for i in range(200)} <= set(restored)
    assert "/t/backup/after-snapshot" not in restored
    for name in ("m1", "m2", "m3"):
        assert client.get("/t/backup/0199", endpoint=url(cluster, name)) == b"value-199"
    assert len(client.members()) == 3
    # A rerun of the normal deploy finds nothing to do.
    assert etcdprobe.run_deploy(etcdprobe.lab_inventory(lab), d.etcd).changed == {}


def test_restore_is_refused_while_a_quorum_is_healthy(
        lab: Lab, cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etcdprobe.run_deploy(etcdprobe.lab_inventory(lab, etcd_backup_dir=str(tmp_path)), d.etcd_backup)
    before = main_pids(lab, ["m1", "m2", "m3"])
    with pytest.raises(Exception, match="failed"):
        etcdprobe.run_deploy(etcdprobe.lab_inventory(lab, etcd_backup_dir=str(tmp_path)),
                             d.etcd_restore)
    assert main_pids(lab, ["m1", "m2", "m3"]) == before


def _replace(lab: Lab, masters: list[str], name: str) -> tuple[float, int]:
    """Replace member ``name`` under a continuous writer; (longest write gap, members)."""
    inv = etcdprobe.lab_inventory(lab, masters=masters, etcd_replace=name)
    cluster = etcdprobe.cluster_of(inv)
    with etcdprobe.Writer(cluster, prefix=f"/t/replace-{name}/") as writer:
        writer.wait_acks(20)
        etcdprobe.run_deploy(inv, d.etcd_replace_member)
        writer.wait_acks(20)
    gap = writer.longest_gap()
    with etcdprobe.client(cluster) as c:
        health = c.wait_healthy(timeout=60)
        members = c.members()
        assert {m.name for m in members} == set(masters)
        assert not any(m.is_learner for m in members)
        assert writer.lost(set(c.get_prefix(f"/t/replace-{name}/"))) == []
    return gap, len(health)


def test_replace_a_dead_member_on_a_fresh_machine_without_losing_quorum(
        lab: Lab, cluster: Cluster) -> None:
    # m3 dies; the worker machine w2, bare of etcd, takes its place as member w2 ...
    lab.crash("m3")
    try:
        gap, healthy = _replace(lab, ["m1", "m2", "w2"], "w2")
        assert healthy == 3
        # A learner does not count towards quorum and a dead member is removed first, so
        # writes never stop for longer than an ordinary request.
        assert gap < 2.0, f"writes stopped for {gap:.2f}s during the replacement"
    finally:
        lab.restart("m3")
    # ... and back: w2 is taken out of service, m3 (booted on its old disk, a removed member
    # now) is replaced by itself with fresh data. The lab ends as it began.
    lab.ssh("w2", f"systemctl disable --now {r.UNIT_NAME}", check=True)
    gap, healthy = _replace(lab, ["m1", "m2", "m3"], "m3")
    assert healthy == 3 and gap < 2.0
    lab.ssh("w2", f"rm -rf {r.UNIT_PATH} /etc/metalseed/etcd /var/lib/etcd/metalseed* && "
                  "systemctl daemon-reload", check=True)
    assert etcdprobe.run_deploy(etcdprobe.lab_inventory(lab), d.etcd).changed == {}
