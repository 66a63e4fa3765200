"""The on-host certificate check script, run for real with sh and openssl on generated certs."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from metalseed.pki.installed import KUBECONFIG_DIRS, SCAN_DIRS
from metalseed.pki.issue import init_pki
from metalseed.render.certcheck import render_script, render_service, render_timer
from tests.unit.test_pki import make_cluster


def test_script_flags_due_and_expired_certificates(tmp_path: Path) -> None:
    c = make_cluster(tmp_path / "pki", pki_leaf_lifetime="1h", pki_renew_before="10m")
    now = dt.datetime.now(dt.UTC)
    init_pki(c, now=now - dt.timedelta(minutes=50))  # leaves: past 2/3 of 1 h -> due
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "due.crt").write_bytes((c.pki_dir / "etcd/m1/server.crt").read_bytes())
    (etc / "ok.crt").write_bytes((c.pki_dir / "etcd/ca.crt").read_bytes())
    (etc / "bad.pem").write_text("junk\n")
    (etc / "server.key").write_bytes((c.pki_dir / "etcd/m1/server.key").read_bytes())
    script = render_script(c).replace(" ".join(SCAN_DIRS[:1]), str(etc), 1)
    assert str(etc) in script
    path = tmp_path / "check.sh"
    path.write_text(script)
    r = subprocess.run(["sh", str(path)], capture_output=True, text=True, check=False)
    lines = sorted(r.stdout.splitlines())
    assert r.returncode == 1
    assert [line.split()[0] for line in lines] == ["DUE", "INVALID", "OK"], r.stdout
    assert not any("server.key" in line for line in lines)

    (etc / "due.crt").unlink()
    (etc / "bad.pem").unlink()
    r = subprocess.run(["sh", str(path)], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and r.stdout.startswith("OK ")


def test_script_reads_the_certificates_embedded_in_kubeconfigs(tmp_path: Path) -> None:
    c = make_cluster(tmp_path / "pki", pki_leaf_lifetime="1h", pki_renew_before="10m",
                     kubernetes=True, etcd_source="mirror")
    now = dt.datetime.now(dt.UTC)
    init_pki(c, now=now - dt.timedelta(minutes=50))  # leaves: past 2/3 of 1 h -> due
    kube = tmp_path / "kube"
    (kube / "kubelet").mkdir(parents=True)
    (kube / "kubelet" / "kubeconfig").write_bytes(
        (c.pki_dir / "kubeconfig" / "kubelet" / "m1.conf").read_bytes())
    (kube / "scheduler.conf").write_bytes((c.pki_dir / "kubeconfig" / "scheduler.conf").read_bytes())
    script = render_script(c)
    for d in SCAN_DIRS:
        script = script.replace(f" {d}", f" {tmp_path}/none", 1)
    script = script.replace(f"for d in {KUBECONFIG_DIRS[0]};", f"for d in {kube};", 1)
    assert str(kube) in script
    path = tmp_path / "check.sh"
    path.write_text(script)
    r = subprocess.run(["sh", str(path)], capture_output=True, text=True, check=False)
    got = sorted((line.split()[1], line.split()[0]) for line in r.stdout.splitlines())
    assert got == [
        (f"{kube}/kubelet/kubeconfig#certificate-authority-data", "OK"),  # the CA: 10 years
        (f"{kube}/kubelet/kubeconfig#client-certificate-data", "DUE"),
        (f"{kube}/scheduler.conf#certificate-authority-data", "OK"),
        (f"{kube}/scheduler.conf#client-certificate-data", "DUE"),
    ], r.stdout + r.stderr
    assert r.returncode == 1
    assert "PRIVATE KEY" not in r.stdout + r.stderr


def test_units() -> None:
    assert "ExecStart=/usr/local/sbin/metalseed-certcheck" in render_service()
    timer = render_timer()
    assert "OnCalendar=daily" in timer and "WantedBy=timers.target" in timer


def test_switched_off_timer_is_stopped_and_removed() -> None:
    from metalseed.deploys import converge as cv
    from metalseed.deploys.certcheck import removed_spec
    from metalseed.render import certcheck as r

    installed = cv.HostState(
        files={r.TIMER_PATH: ("x", 0o644), r.SERVICE_PATH: ("y", 0o644), r.SCRIPT_PATH: ("z", 0o755)},
        units={r.TIMER_NAME: {"Id": r.TIMER_NAME, "ActiveState": "active",
                              "UnitFileState": "enabled"}})
    steps = cv.plan(removed_spec(), installed)
    assert steps[0] == f"systemctl disable --now {r.TIMER_NAME}"
    assert steps[1].startswith("rm -f ") and r.SCRIPT_PATH in steps[1]
    assert steps[2] == "systemctl daemon-reload"
    gone = cv.HostState(units={r.TIMER_NAME: {"Id": r.TIMER_NAME, "ActiveState": "inactive",
                                              "UnitFileState": "not-found"}})
    assert cv.plan(removed_spec(), gone) == []
