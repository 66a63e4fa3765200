"""The edge's pure parts: rendered keepalived/nginx configs (checked by the real binaries where they
are installed), the serving bundle, the VRRP timing formula, and the converge planner."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from metalseed.deploys import converge as cv
from metalseed.model import Cluster, _HostInput, build_cluster
from metalseed.render import edge as r

BASE = {"cluster_name": "t", "node_network": "10.20.0.0/24", "vip": "10.20.0.10",
        "vip_interface": "eth0"}


def fake_pem(kind: bytes, body: bytes) -> bytes:
    """A PEM-shaped placeholder (not a real key): built here so no key-like block is committed."""
    return b"-----BEGIN " + kind + b"-----\n" + body + b"\n-----END " + kind + b"-----\n"


def cluster(workers: int = 2, **data: Any) -> Cluster:
    common = {**BASE, **data}
    hosts = [_HostInput(f"m{i}", ("masters",), {**common, "ssh_hostname": f"10.20.0.{10 + i}"})
             for i in (1, 2, 3)]
    hosts += [_HostInput(f"w{i}", ("workers",), {**common, "ssh_hostname": f"10.20.0.{20 + i}"})
              for i in range(1, workers + 1)]
    return build_cluster(hosts)


# ---------------------------------------------------------------------------------------------
# keepalived


def test_priorities_are_spread_so_the_first_master_holds_the_vip() -> None:
    c = cluster()
    prios = [r.priority(c, m) for m in c.masters]
    assert prios == sorted(prios, reverse=True) and len(set(prios)) == 3
    assert max(prios) < 255  # 255 means "address owner" in VRRP
    assert r.expected_holder(c) == c.masters[0]
    for m, p in zip(c.masters, prios, strict=True):
        assert f"priority {p}\n" in r.keepalived_conf(c, m)


def test_keepalived_is_vrrp3_with_the_models_vip_and_interval() -> None:
    c = cluster()
    conf = r.keepalived_conf(c, c.masters[1])
    assert "vrrp_version 3" in conf
    assert "virtual_router_id 51" in conf
    assert "10.20.0.10/32 dev eth0" in conf
    assert "advert_int 1\n" in conf
    assert "state BACKUP" in conf and "unicast_peer" not in conf
    assert f'script "{r.health_check_command()}"' in conf
    assert re.search(r"track_script \{\s+metalseed_nginx\s+\}", conf)
    assert f"127.0.0.1:{r.HEALTH_PORT}{r.HEALTH_PATH}" in r.health_check_command()
    fast = r.keepalived_conf(cluster(edge_failover="fast"), c.masters[1])
    assert "advert_int 0.1\n" in fast


def test_unicast_lists_the_other_masters_from_the_own_address() -> None:
    c = cluster(edge_vrrp_unicast=True, edge_virtual_router_id=77)
    conf = r.keepalived_conf(c, c.masters[0])
    assert "unicast_src_ip 10.20.0.11" in conf
    peers = re.search(r"unicast_peer \{([^}]*)\}", conf)
    assert peers is not None and peers.group(1).split() == ["10.20.0.12", "10.20.0.13"]
    assert "virtual_router_id 77" in conf


def test_keepalived_only_on_masters() -> None:
    c = cluster()
    with pytest.raises(ValueError, match="not a master"):
        r.keepalived_conf(c, c.workers[0])


def test_master_down_interval_follows_rfc5798() -> None:
    c = cluster()
    m2 = c.masters[1]  # priority 140
    assert r.master_down_interval(c, m2) == pytest.approx(3 * 1.0 + (256 - 140) / 256)
    fast = cluster(edge_failover="fast")
    assert r.master_down_interval(fast, fast.masters[1]) == pytest.approx(0.3 + 0.1 * 116 / 256)
    assert r.master_down_interval(fast, fast.masters[1]) < 0.5


# ---------------------------------------------------------------------------------------------
# nginx


def test_nginx_listens_on_the_vip_only() -> None:
    conf = r.nginx_conf(cluster(), "/x.pem")
    listens = re.findall(r"^\s*listen ([^\s;]+)", conf, re.M)
    assert sorted(listens) == sorted(["10.20.0.10:80", "10.20.0.10:443", "10.20.0.10:6443",
                                      f"127.0.0.1:{r.HEALTH_PORT}"])


def test_nginx_tls_is_mozilla_intermediate_with_hsts() -> None:
    conf = r.nginx_conf(cluster(edge_hsts_max_age=31536000), "/etc/nginx/metalseed/edge-1.pem")
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in conf
    ciphers = re.search(r"ssl_ciphers (\S+);", conf)
    assert ciphers is not None
    suites = ciphers.group(1).split(":")
    assert all(s.startswith(("ECDHE-", "DHE-")) for s in suites)  # forward secrecy only
    assert all("GCM" in s or "CHACHA20" in s for s in suites)  # AEAD only
    assert "ssl_prefer_server_ciphers off;" in conf and "ssl_session_tickets off;" in conf
    assert 'add_header Strict-Transport-Security "max-age=31536000" always;' in conf
    for directive in ("ssl_certificate", "ssl_certificate_key", "ssl_dhparam"):
        assert f"{directive} /etc/nginx/metalseed/edge-1.pem;" in conf


def test_http_redirects_to_https_keeping_a_nonstandard_port() -> None:
    assert "return 308 https://$host$request_uri;" in r.nginx_conf(cluster(), "/x")
    odd = r.nginx_conf(cluster(edge_https_port=8443, edge_http_port=8080), "/x")
    assert "return 308 https://$host:8443$request_uri;" in odd
    assert "listen 10.20.0.10:8080 default_server;" in odd


def test_proxy_to_every_worker_keeps_host_and_retries_the_next() -> None:
    c = cluster(workers=3, ingress_http_nodeport=31080)
    conf = r.nginx_conf(c, "/x")
    for i in (1, 2, 3):
        assert f"server 10.20.0.2{i}:31080 max_fails=1" in conf
    # The client's own X-Forwarded-For is replaced, never extended: the edge is the first proxy.
    for header in ("Host $host", "X-Forwarded-For $remote_addr", "X-Forwarded-Proto $scheme",
                   "X-Forwarded-Host $host", "X-Real-IP $remote_addr"):
        assert f"proxy_set_header {header};" in conf
    assert "proxy_add_x_forwarded_for" not in conf
    assert f"proxy_connect_timeout {r.CONNECT_TIMEOUT};" in conf
    assert "proxy_next_upstream error timeout;" in conf
    assert "proxy_next_upstream_tries 3;" in conf
    assert "keepalive " not in conf.split("upstream metalseed_ingress_http")[1].split("}")[0]


def test_api_port_is_tcp_passthrough_to_every_master() -> None:
    conf = r.nginx_conf(cluster(apiserver_port=7443), "/x")
    stream = conf.split("\nstream {", 1)[1]
    assert "listen 10.20.0.10:7443;" in stream
    for i in (1, 2, 3):
        assert f"server 10.20.0.1{i}:7443" in stream
    assert "ssl" not in stream  # TLS passes through untouched
    assert f"load_module {r.STREAM_MODULE};" in conf


def _self_signed(tmp: Path) -> tuple[bytes, bytes]:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=edge", "-days", "1",
                    "-keyout", str(tmp / "k.pem"), "-out", str(tmp / "c.pem")],
                   check=True, capture_output=True)
    return (tmp / "c.pem").read_bytes(), (tmp / "k.pem").read_bytes()


def _nginx_t(conf: Path) -> subprocess.CompletedProcess[str]:
    # `nginx -t` binds its listeners: in a network namespace of its own, with ip_nonlocal_bind
    # as the deploy sets it on masters, so the VIP need not exist here.
    script = f"sysctl -qw net.ipv4.ip_nonlocal_bind=1 && nginx -t -q -c {conf}"
    res = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True)
    if "unshare failed" in res.stderr or "Operation not permitted" in res.stderr:
        pytest.skip(f"no network namespace for nginx -t: {res.stderr.strip()}")
    return res


@pytest.mark.skipif(shutil.which("nginx") is None or not Path(r.STREAM_MODULE).exists(),
                    reason="nginx with the stream module is not installed")
def test_rendered_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    b = r.bundle(*_self_signed(tmp_path))
    pem = tmp_path / "edge.pem"
    pem.write_bytes(b.content)
    conf = tmp_path / "nginx.conf"
    conf.write_text(r.nginx_conf(cluster(edge_vrrp_unicast=True), str(pem)))
    res = _nginx_t(conf)
    assert res.returncode == 0, res.stderr


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_the_lab_tests_nodeport_backend_passes_nginx_t(tmp_path: Path) -> None:
    from tests.lab import nodeport_backend as backend

    conf = tmp_path / "backend.conf"
    conf.write_text(backend.nginx_conf(30123))
    assert "listen 30123 default_server;" in conf.read_text()
    assert "node=$hostname" in conf.read_text() and "TEST BACKEND" in backend.unit()
    res = _nginx_t(conf)
    assert res.returncode == 0, res.stderr


@pytest.mark.skipif(shutil.which("keepalived") is None or not Path("/sys/class/net/eth0").exists(),
                    reason="keepalived (and an eth0) needed")
@pytest.mark.parametrize("data", [{}, {"edge_failover": "fast", "edge_vrrp_unicast": True}])
def test_rendered_keepalived_conf_passes_keepalived_t(tmp_path: Path, data: dict[str, Any]) -> None:
    c = cluster(**data)
    conf = tmp_path / "keepalived.conf"
    conf.write_text(r.keepalived_conf(c, c.masters[2]))
    res = subprocess.run(["keepalived", "-t", "-f", str(conf)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_bundle_holds_chain_key_and_dh_group_and_is_named_by_content() -> None:
    b = r.bundle(b"-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----",
                 fake_pem(b"PRIVATE KEY", b"K"))
    text = b.content.decode()
    assert text.index("CERTIFICATE") < text.index("PRIVATE KEY") < text.index("DH PARAMETERS")
    other = r.bundle(b"-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----", b"k")
    assert b.path != other.path and b.path.startswith(r.NGINX_DIR + "/edge-")
    assert b.path == r.bundle(b"-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----",
                              fake_pem(b"PRIVATE KEY", b"K")).path


# ---------------------------------------------------------------------------------------------
# The planner behind the one-operation converge


def _spec() -> cv.HostSpec:
    return cv.HostSpec(
        packages=("nginx",),
        sysctls=(("net.ipv4.ip_nonlocal_bind", "1"),),
        files=(cv.ManagedFile("/etc/a.conf", b"A", check="check {path}", unit="a.service"),
               cv.ManagedFile("/etc/s/key.pem", b"K", mode=0o600, dir_mode=0o700, unit="a.service")),
        units=("a.service",),
        health={"a.service": "healthy"},
        cleanup="cleanup",
    )


def _converged() -> cv.HostState:
    # The host the snapshot describes when it already looks like the spec.
    return cv.parse_snapshot(cv.converged_snapshot(_spec()))


def _text(steps: list[cv.Step]) -> list[str]:
    return [s if isinstance(s, str) else f"UPLOAD {s.dest}" for s in steps]


def test_converged_host_needs_nothing() -> None:
    assert cv.plan(_spec(), _converged()) == []


def test_bare_host_gets_everything_in_a_safe_order() -> None:
    bare = cv.HostState(units={"a.service": {"LoadState": "masked", "UnitFileState": "masked",
                                            "ActiveState": "inactive"}})
    steps = _text(cv.plan(_spec(), bare))
    assert steps[0].startswith("DEBIAN_FRONTEND=noninteractive apt-get install") and "nginx" in steps[0]
    assert steps[1].startswith("sysctl -q -w net.ipv4.ip_nonlocal_bind=1 || {")
    assert "UPLOAD /etc/a.conf.metalseed-new" in steps
    assert steps.index("install -m 0600 /dev/null /etc/s/key.pem.metalseed-new") < steps.index(
        "UPLOAD /etc/s/key.pem.metalseed-new")
    assert "install -d -m 0700 /etc/s" in steps
    check = next(s for s in steps if s.startswith("check "))
    assert check.startswith("check /etc/a.conf.metalseed-new ||")
    assert steps.index(check) < steps.index("mv -f /etc/a.conf.metalseed-new /etc/a.conf")
    tail = steps[steps.index("systemctl unmask a.service"):]
    assert tail == ["systemctl unmask a.service", "systemctl enable a.service",
                    "systemctl start a.service", "healthy", "cleanup"]


def test_changed_config_reloads_its_unit_only() -> None:
    st = _converged()
    st.files["/etc/a.conf"] = ("0" * 64, 0o644)
    steps = _text(cv.plan(_spec(), st))
    assert "systemctl reload a.service" in steps and "healthy" in steps
    assert not any(s.startswith(("systemctl start", "systemctl restart", "systemctl enable")) for s in steps)
    assert "UPLOAD /etc/s/key.pem.metalseed-new" not in steps


def test_mode_drift_is_a_chmod_without_reload() -> None:
    st = _converged()
    st.files["/etc/s/key.pem"] = (hashlib.sha256(b"K").hexdigest(), 0o644)
    assert _text(cv.plan(_spec(), st)) == ["chown root:root /etc/s/key.pem && chmod 0600 /etc/s/key.pem"]


def test_owner_drift_is_a_chown_and_owned_secrets_are_staged_owned() -> None:
    f = cv.ManagedFile("/etc/e/k.pem", b"K", mode=0o600, owner="etcd", group="etcd")
    d = cv.ManagedDir("/etc/e", 0o750, "root", "etcd")
    spec = cv.HostSpec(dirs=(d,), files=(f,))
    st = cv.parse_snapshot(cv.converged_snapshot(spec))
    assert cv.plan(spec, st) == []
    st.stats["/etc/e/k.pem"] = (0o600, "root", "root")
    st.stats["/etc/e"] = (0o755, "root", "root")
    assert _text(cv.plan(spec, st)) == ["install -d -m 0750 -o root -g etcd /etc/e",
                                        "chown etcd:etcd /etc/e/k.pem && chmod 0600 /etc/e/k.pem"]
    steps = _text(cv.plan(spec, cv.HostState()))
    assert "install -m 0600 -o etcd -g etcd /dev/null /etc/e/k.pem.metalseed-new" in steps
    assert steps.index("install -m 0600 -o etcd -g etcd /dev/null /etc/e/k.pem.metalseed-new") < \
        steps.index("UPLOAD /etc/e/k.pem.metalseed-new")


def test_stopped_unit_is_started_not_reloaded() -> None:
    st = _converged()
    st.units["a.service"]["ActiveState"] = "failed"
    assert _text(cv.plan(_spec(), st)) == ["systemctl start a.service", "healthy"]


def test_a_failing_check_leaves_the_live_file_alone(tmp_path: Path) -> None:
    live = tmp_path / "live.conf"
    live.write_text("good\n")
    f = cv.ManagedFile(str(live), b"bad\n", check="grep -q good {path}")
    steps = cv.plan(cv.HostSpec(files=(f,)), cv.HostState())
    script = []
    for s in steps:
        if isinstance(s, cv.Upload):
            Path(s.dest).write_bytes(s.content)
        else:
            script.append(s)
    res = subprocess.run(["sh", "-ec", "\n".join(script)], capture_output=True, text=True)
    assert res.returncode != 0 and "failed its check" in res.stderr
    assert live.read_text() == "good\n"
    assert not Path(str(live) + cv.STAGED_SUFFIX).exists()


def test_snapshot_parsing() -> None:
    out = [
        "[sha]", f"{'a' * 64}  /etc/a.conf",
        "[mode]", "644 root root /etc/a.conf", "750 root etcd /etc/d",
        "[units]", "Id=a.service", "LoadState=masked", "UnitFileState=masked", "ActiveState=inactive",
        "", "Id=b.service", "LoadState=loaded", "UnitFileState=enabled", "ActiveState=active",
        "[sysctl]", "net.ipv4.ip_nonlocal_bind = 0",
        "[packages]", "nginx ii ", "keepalived rc ",
    ]
    st = cv.parse_snapshot(out)
    assert st.files == {"/etc/a.conf": ("a" * 64, 0o644)}
    assert st.stats["/etc/d"] == (0o750, "root", "etcd")
    assert st.units["a.service"]["LoadState"] == "masked"
    assert st.units["b.service"]["ActiveState"] == "active"
    assert st.sysctls == {"net.ipv4.ip_nonlocal_bind": "0"}
    assert st.packages == {"nginx"}


def test_snapshot_command_runs_with_missing_things(tmp_path: Path) -> None:
    there = tmp_path / "x"
    there.write_bytes(b"x")
    cmd = cv.snapshot_command([str(there), str(tmp_path / "missing")], [], [], [])
    res = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True)
    st = cv.parse_snapshot(res.stdout.splitlines())
    assert st.files == {str(there): (hashlib.sha256(b"x").hexdigest(), there.stat().st_mode & 0o777)}


# ---------------------------------------------------------------------------------------------
# A seed: each tenant's API by SNI on the VIP's API port

SEED = {"kubernetes": True, "tenants": {"acme": {}, "globex": {}}, "etcd_source": "tarball",
        "etcd_tarball_url": "https://e.example/e.tgz", "etcd_tarball_sha256": "0" * 64}


def test_a_seed_routes_each_tenant_by_sni_and_the_rest_to_its_own_api() -> None:
    c = cluster(**SEED)
    stream = r.nginx_conf(c, "/x").split("\nstream {", 1)[1]
    assert "ssl_preread on;" in stream and "proxy_pass $metalseed_api_upstream;" in stream
    routes = re.search(r"map \$ssl_preread_server_name \$metalseed_api_upstream \{(.*?)\}",
                       stream, re.S)
    assert routes is not None
    lines = [ln.strip() for ln in routes.group(1).strip().splitlines()]
    # Any other name, and no name at all (a client of the VIP's address), goes to the seed's API.
    assert lines == [
        "default metalseed_apiserver;",
        "acme.t.tenants.cluster.local kube-apiserver.tenant-acme.svc.cluster.local:6443;",
        "globex.t.tenants.cluster.local kube-apiserver.tenant-globex.svc.cluster.local:6443;"]
    # Service names are asked of CoreDNS (the 10th service address), never of the host's resolver.
    assert f"resolver {c.cluster_dns_address} valid=" in stream
    assert "ssl_certificate" not in stream  # TLS still passes through untouched


def test_without_tenants_the_api_stream_is_unchanged() -> None:
    plain = cluster(**{k: v for k, v in SEED.items() if k != "tenants"})
    stream = r.nginx_conf(plain, "/x").split("\nstream {", 1)[1]
    assert "ssl_preread" not in stream and "resolver" not in stream
    assert "proxy_pass metalseed_apiserver;" in stream


@pytest.mark.skipif(shutil.which("nginx") is None or not Path(r.STREAM_MODULE).exists(),
                    reason="nginx with the stream module is not installed")
def test_a_seeds_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    b = r.bundle(*_self_signed(tmp_path))
    pem = tmp_path / "edge.pem"
    pem.write_bytes(b.content)
    conf = tmp_path / "nginx.conf"
    conf.write_text(r.nginx_conf(cluster(**SEED), str(pem)))
    res = _nginx_t(conf)
    assert res.returncode == 0, res.stderr


def test_a_seeds_masters_route_the_service_network_for_nginx() -> None:
    from metalseed.deploys.edge import master_spec

    material = (fake_pem(b"CERTIFICATE", b"c"), fake_pem(b"EC PRIVATE KEY", b"k"))
    seed = cluster(**SEED)
    spec = master_spec(seed, seed.masters[1], material)
    assert spec.units[0] == r.SERVICE_ROUTE_UNIT  # before nginx starts passing to ClusterIPs
    unit = next(f for f in spec.files if f.path.endswith(r.SERVICE_ROUTE_UNIT)).content.decode()
    assert "ExecStart=/sbin/ip route replace 10.96.0.0/12 dev eth0 src 10.20.0.12" in unit
    plain = cluster(**{k: v for k, v in SEED.items() if k != "tenants"})
    spec = master_spec(plain, plain.masters[1], material)
    assert r.SERVICE_ROUTE_UNIT not in spec.units
    assert not any(f.path.endswith(r.SERVICE_ROUTE_UNIT) for f in spec.files)


def test_a_rolling_api_server_restart_waits_until_nginx_takes_the_last_one_back() -> None:
    from metalseed.deploys.kubernetes import apiserver_health

    c = cluster()
    conf = r.nginx_conf(c, "/x.pem")
    upstream = conf[conf.index("upstream metalseed_apiserver"):]
    upstream = upstream[:upstream.index("}")]
    out_for = {int(s) for s in re.findall(r"max_fails=1 fail_timeout=(\d+)s;", upstream)}
    assert len(out_for) == 1 and len(re.findall(r"\bserver ", upstream)) == 3
    health = apiserver_health(c, c.masters[0])
    assert "/readyz" in health.split(" && sleep ")[0]
    waits = int(health.rsplit(" && sleep ", 1)[1])
    # The next master goes down only once this one is back in nginx's rotation: never two
    # API servers out at once ("no live upstreams").
    assert waits > out_for.pop()
