"""etcd rendering: the files a master runs from, as pure functions of the model."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from metalseed.model import Cluster, _HostInput, build_cluster
from metalseed.render import etcd as r

BASE = {"cluster_name": "prod", "node_network": "10.20.0.0/24", "vip": "10.20.0.10"}


def cluster(**data: Any) -> Cluster:
    hosts = [
        _HostInput(f"m{i}", ("masters",), {**BASE, **data, "ssh_hostname": f"10.20.0.{10 + i}"})
        for i in (1, 2, 3)
    ]
    hosts.append(_HostInput("w1", ("workers",), {**BASE, **data, "ssh_hostname": "10.20.0.21"}))
    return build_cluster(hosts)


def env(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_env_requires_mutual_tls_everywhere() -> None:
    c = cluster()
    e = env(r.render_env(c, c.masters[1]))
    assert e["ETCD_NAME"] == "m2"
    assert e["ETCD_CLIENT_CERT_AUTH"] == "true"
    assert e["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert e["ETCD_AUTO_TLS"] == e["ETCD_PEER_AUTO_TLS"] == "false"
    assert e["ETCD_TRUSTED_CA_FILE"] == e["ETCD_PEER_TRUSTED_CA_FILE"] == r.PKI.ca
    assert e["ETCD_LISTEN_PEER_URLS"] == "https://10.20.0.12:2380"
    assert e["ETCD_LISTEN_CLIENT_URLS"] == "https://10.20.0.12:2379,https://127.0.0.1:2379"
    assert e["ETCD_ADVERTISE_CLIENT_URLS"] == "https://10.20.0.12:2379"
    # Every client and peer URL is https; the only plain one is loopback metrics/health.
    urls = [u for k, v in e.items() if k.endswith("_URLS") for u in v.split(",")]
    plain = [u for u in urls if not u.startswith("https://")]
    assert plain == ["http://127.0.0.1:2381"]
    assert e["ETCD_LISTEN_METRICS_URLS"] == "http://127.0.0.1:2381"
    # The mirror's etcd 3.6: no v2 API left to switch off, a TLS floor of its own, feature gates.
    assert "ETCD_ENABLE_V2" not in e
    assert e["ETCD_TLS_MIN_VERSION"] == "TLS1.2"
    assert e["ETCD_FEATURE_GATES"] == "InitialCorruptCheck=true"


def test_debians_etcd_34_gets_its_own_switches() -> None:
    c = cluster(etcd_source="debian")
    e = env(r.render_env(c, c.masters[0]))
    assert e["ETCD_ENABLE_V2"] == "false" and e["ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK"] == "true"
    assert "ETCD_TLS_MIN_VERSION" not in e  # etcd 3.4 has no such flag (and refuses < 1.2 itself)
    assert "ExecStart=/usr/bin/etcd\n" in r.render_unit(c, c.masters[0])
    restore = r.snapshot_restore_command(c, c.masters[0], "/root/s.db", "t")
    assert "ETCDCTL_API=3 /usr/bin/etcdctl snapshot restore /root/s.db" in restore
    assert "/usr/bin/etcdctl -w json snapshot status" in r.snapshot_save_command(c, "/root/s.db")


def test_cipher_suites_are_tls12_ecdhe_aead_only() -> None:
    c = cluster()
    suites = env(r.render_env(c, c.masters[0]))["ETCD_CIPHER_SUITES"].split(",")
    assert suites
    for s in suites:
        assert s.startswith("TLS_ECDHE_"), s
        assert s.endswith(("_GCM_SHA256", "_GCM_SHA384", "_CHACHA20_POLY1305")), s
        assert "CBC" not in s and "RC4" not in s and "3DES" not in s


def test_timing_ports_and_data_dir_come_from_the_model() -> None:
    c = cluster(etcd_heartbeat_ms=100, etcd_election_ms=1000, etcd_client_port=12379,
                etcd_peer_port=12380, etcd_metrics_port=12381, etcd_data_dir="/srv/etcd")
    e = env(r.render_env(c, c.masters[0]))
    assert e["ETCD_HEARTBEAT_INTERVAL"] == "100"
    assert e["ETCD_ELECTION_TIMEOUT"] == "1000"
    assert e["ETCD_LISTEN_PEER_URLS"] == "https://10.20.0.11:12380"
    assert e["ETCD_LISTEN_METRICS_URLS"] == "http://127.0.0.1:12381"
    assert e["ETCD_DATA_DIR"] == "/srv/etcd"


def test_bootstrap_settings_live_apart_from_the_member_settings() -> None:
    c = cluster()
    e = env(r.render_env(c, c.masters[0]))
    assert not any(k.startswith("ETCD_INITIAL_CLUSTER") for k in e)
    b = env(r.render_bootstrap(c.etcd_initial_cluster(), "new", r.cluster_token(c)))
    assert b == {
        "ETCD_INITIAL_CLUSTER": "m1=https://10.20.0.11:2380,m2=https://10.20.0.12:2380,"
                                "m3=https://10.20.0.13:2380",
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_INITIAL_CLUSTER_TOKEN": "prod-etcd",
    }
    with pytest.raises(ValueError, match="'new' or 'existing'"):
        r.render_bootstrap("a=https://x:2380", "maybe", "t")


def test_env_file_refuses_values_that_would_need_quoting() -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        r.render_bootstrap("a=https://x:2380", "new", "token with space")


def test_a_master_gets_only_its_own_keys_and_never_the_ca_key() -> None:
    c = cluster()
    files = r.pki_files(c.masters[0])
    ids = {(f.store_id, f.cert) for f in files}
    assert not any(store_id.startswith("etcd/ca") and not cert for store_id, cert in ids)
    assert ("etcd/ca-bundle", True) in ids
    assert {f.store_id for f in files} == {
        "etcd/ca-bundle", "etcd/m1/server", "etcd/m1/peer", "etcd/healthcheck-client"}
    for f in files:
        assert f.owner == f.group == "etcd"
        assert f.mode == (0o644 if f.cert else 0o600), f
        assert f.path.startswith(r.PKI_DIR + "/")


def test_unit_runs_our_binary_as_etcd_and_conflicts_with_the_packaged_unit() -> None:
    c = cluster()
    unit = r.render_unit(c, c.masters[0])
    assert "User=etcd" in unit and "Group=etcd" in unit
    assert "Type=notify" in unit
    assert f"ExecStart=/opt/metalseed/etcd/{r.mirror_version()}/etcd\n" in unit
    assert f"Conflicts={r.PACKAGED_UNIT}" in unit
    assert f"EnvironmentFile=-{r.BOOTSTRAP_FILE}" in unit
    sha = "ab" * 32
    t = cluster(etcd_source="tarball", etcd_tarball_url="https://mirror.internal/etcd.tgz",
                etcd_tarball_sha256=sha)
    assert f"ExecStart=/opt/metalseed/etcd/{sha[:16]}/etcd\n" in r.render_unit(t, t.masters[0])
    assert r.etcdctl(t) == f"/opt/metalseed/etcd/{sha[:16]}/etcdctl"
    assert r.tarball_path(t).endswith(f"etcd-{sha[:16]}.tar.gz")


def test_etcdctl_env_uses_the_healthcheck_client_on_loopback() -> None:
    e = env(r.render_etcdctl_env(cluster()))
    assert e == {"ETCDCTL_API": "3", "ETCDCTL_ENDPOINTS": "https://127.0.0.1:2379",
                 "ETCDCTL_CACERT": r.PKI.ca, "ETCDCTL_CERT": r.PKI.client_cert,
                 "ETCDCTL_KEY": r.PKI.client_key}


def test_restore_command_names_the_member_and_a_new_cluster() -> None:
    c = cluster()
    cmd = r.snapshot_restore_command(c, c.masters[2], "/root/snap.db", "prod-etcd-restore-1")
    restore = next(part for part in cmd.split("; ") if "snapshot restore" in part)
    argv = shlex.split(restore.split(" >&2")[0])
    assert argv[:3] == [f"/opt/metalseed/etcd/{r.mirror_version()}/etcdutl", "snapshot", "restore"]
    assert "--name=m3" in argv
    assert f"--initial-cluster={c.etcd_initial_cluster()}" in argv
    assert "--initial-cluster-token=prod-etcd-restore-1" in argv
    assert "--initial-advertise-peer-urls=https://10.20.0.13:2380" in argv
    assert "--data-dir=/var/lib/etcd/metalseed" in argv
    # The old data directory is set aside, never deleted.
    assert "rm -rf" not in cmd and "mv /var/lib/etcd/metalseed" in cmd


def test_snapshot_command_saves_then_prints_status_json() -> None:
    cmd = r.snapshot_save_command(cluster(), "/var/lib/etcd/s.db")
    assert "snapshot save /var/lib/etcd/s.db" in cmd
    assert cmd.endswith("-w json snapshot status /var/lib/etcd/s.db")
    assert "umask 077" in cmd
