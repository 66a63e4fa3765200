"""Day-2 certificate rotation on real lab machines (issue 6).

- Short-lived certificates approach expiry: ``certs check`` (reading what is installed on the
  hosts) flags them, ``rotate-certs.py`` renews them.
- Under a continuous etcd writer and a continuous HTTPS client through the VIP: all leaves, then
  the etcd CA and the edge CA through all three phases. No request fails, no acknowledged write is
  lost.
- A rotation interrupted by a crashed master is resumed and ends consistent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from metalseed import edgeprobe, etcdprobe
from metalseed.lab import Lab
from metalseed.model import Cluster, cluster_from_inventory
from metalseed.pki.issue import store_for
from metalseed.pki.rotation import bundle_path
from metalseed.probe import pyinfra_totals
from tests.lab import nodeport_backend

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
RunPyinfra = Callable[..., subprocess.CompletedProcess[str]]
SHORT = ("--data", "pki_leaf_lifetime=60s", "--data", "pki_renew_before=10s")


def metalseed(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, METALSEED_LAB=lab.name, NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "metalseed.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def rotate(run_pyinfra: RunPyinfra, *data: str, check: bool = True,
           **inputs: str) -> subprocess.CompletedProcess[str]:
    """deploys/rotate-certs.py with the playbook's inputs as pyinfra data (--data KEY=VALUE)."""
    args = [*data, *(a for k, v in inputs.items() for a in ("--data", f"{k}={v}"))]
    return run_pyinfra(*args, "deploys/rotate-certs.py", check=check)


def installed_rows(output: str) -> list[str]:
    return output.split("Installed on the hosts", 1)[1].splitlines()


@pytest.fixture(scope="module")
def cluster(lab: Lab, run_pyinfra: RunPyinfra) -> Iterator[Cluster]:
    run_pyinfra("deploys/cluster.py")
    cluster = cluster_from_inventory(edgeprobe.lab_inventory(lab))
    nodeport_backend.install(lab, cluster)  # what the HTTPS client reaches behind the edge
    yield cluster


def test_short_lived_certificates_are_flagged_then_renewed(
        cluster: Cluster, lab: Lab, run_pyinfra: RunPyinfra) -> None:
    issued = time.monotonic()
    rotate(run_pyinfra, *SHORT, rotate="all")
    fresh = metalseed(lab, "certs", "check", "inventory/lab.py", *SHORT)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    rows = installed_rows(fresh.stdout)
    assert sum("matches store" in r for r in rows) >= 5 * len(cluster.masters) - 1

    # Past 2/3 of 60 s the installed leaves are due: the check reads them on the hosts.
    time.sleep(max(0.0, issued + 42 - time.monotonic()))
    due = metalseed(lab, "certs", "check", "inventory/lab.py", *SHORT)
    assert due.returncode == 1, due.stdout
    due_rows = [r for r in installed_rows(due.stdout) if " due" in r]
    for m in cluster.masters:
        assert any(r.startswith(m.name) and "/etc/metalseed/etcd/pki/server.crt" in r
                   for r in due_rows), due.stdout
        assert any(r.startswith(m.name) and "/etc/nginx/metalseed/" in r for r in due_rows)
    assert not any("/ca.crt" in r for r in due_rows)  # the CA (10 years) is not due
    # The masters' own daily check (openssl on the host) flags them too, and fails its unit.
    on_host = lab.ssh("m1", "systemctl start metalseed-certcheck.service", timeout=60)
    assert on_host.returncode != 0
    journal = lab.ssh("m1", "journalctl -t metalseed-certcheck -n 50 --no-pager", check=True).stdout
    assert "/etc/metalseed/etcd/pki/server.crt" in journal and "due, expires" in journal

    # rotate-certs.py with default lifetimes renews exactly what is due, host by host.
    renewed = rotate(run_pyinfra)
    assert "re-issued" in renewed.stdout + renewed.stderr
    after = metalseed(lab, "certs", "check", "inventory/lab.py")
    assert after.returncode == 0, after.stdout
    assert "differ from the store" not in after.stdout
    assert lab.ssh("m1", "systemctl start metalseed-certcheck.service", timeout=60).returncode == 0


def test_the_daily_check_timer_can_be_switched_off_and_on(
        cluster: Cluster, lab: Lab, run_pyinfra: RunPyinfra) -> None:
    enabled = "systemctl is-enabled metalseed-certcheck.timer"
    assert lab.ssh("m2", enabled).stdout.strip() == "enabled"
    run_pyinfra("--data", "pki_check_timer=false", "deploys/cluster.py")
    assert lab.ssh("m2", enabled).returncode != 0
    assert lab.ssh("m2", "test -e /usr/local/sbin/metalseed-certcheck").returncode == 1
    run_pyinfra("deploys/cluster.py")
    assert lab.ssh("m2", enabled).stdout.strip() == "enabled"


def test_rotating_everything_under_load_fails_no_request_and_loses_no_write(
        cluster: Cluster, lab: Lab, run_pyinfra: RunPyinfra) -> None:
    store = store_for(cluster)
    vip = str(cluster.vip)
    lost: dict[str, list[int]] = {}
    failed: dict[str, list[Any]] = {}
    gaps: dict[str, float] = {}

    def under_load(label: str, **inputs: str) -> None:
        # Each stage starts clients with the credentials of the moment, as a real client that is
        # handed its renewed certificates between stages would.
        ctx = edgeprobe.tls_context(bundle_path(store, "edge/ca"))
        with etcdprobe.Writer(cluster) as writer, edgeprobe.Client(
                vip, cluster.edge.https_port, ctx, max_seconds=120) as client:
            writer.wait_acks(20, timeout=15)
            client.wait_ok(20, timeout=15)
            started = time.monotonic()
            rotate(run_pyinfra, **inputs)
            writer.wait_acks(20, timeout=15)
            client.wait_ok(5, timeout=15)
        with etcdprobe.client(cluster) as c:
            present = set(c.get_prefix(writer.prefix))
            c.delete_prefix(writer.prefix)
        lost[label] = writer.lost(present)
        failed[label] = client.failures()
        gaps[label] = writer.longest_gap(since=started)

    under_load("leaves", rotate="all")
    for ca in ("etcd/ca", "edge/ca"):
        for phase in ("trust", "reissue", "finish"):
            under_load(f"{ca} {phase}", rotate="none", rotate_ca=ca, rotate_phase=phase)

    print(f"\nlongest write gap per stage (s): { {k: round(v, 2) for k, v in gaps.items()} }")
    assert all(not v for v in lost.values()), f"acknowledged writes lost: {lost}"
    assert all(not v for v in failed.values()), f"failed HTTPS requests: {failed}"
    assert max(gaps.values()) < 5.0, gaps
    check = metalseed(lab, "certs", "check", "inventory/lab.py")
    assert check.returncode == 0, check.stdout
    assert not list(store.root.glob("**/ca.prev.crt")) and not list(store.root.glob("**/*.next.crt"))
    assert len(list((store.root / "retired").glob("*.crt"))) >= 2


def test_rotation_interrupted_by_a_crashed_master_resumes(
        cluster: Cluster, lab: Lab, run_pyinfra: RunPyinfra) -> None:
    pyinfra = Path(sys.executable).with_name("pyinfra")
    env = dict(os.environ, METALSEED_LAB=lab.name)
    victim = cluster.masters[-1].name
    out = ""
    run = subprocess.Popen([str(pyinfra), "-y", "inventory/lab.py", "--data", "rotate=all",
                            "deploys/rotate-certs.py"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    t0 = time.monotonic()
    took = {}
    try:
        time.sleep(3.0)  # the store is re-issued; hosts are being converged
        lab.crash(victim)
        out, _ = run.communicate(timeout=300)
        took["interrupted run"] = time.monotonic() - t0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    try:
        assert run.returncode != 0, f"the run should notice the crashed master:\n{out[-3000:]}"
    finally:
        lab.restart(victim)
    took["restart"] = time.monotonic() - t0 - sum(took.values())
    # Resume: the same command again, but nothing more to re-issue; it converges the hosts.
    resumed = rotate(run_pyinfra, rotate="due")
    took["resume"] = time.monotonic() - t0 - sum(took.values())
    print(f"\ncrash and resume (s): { {k: round(v, 1) for k, v in took.items()} }")
    totals = pyinfra_totals(resumed.stdout + resumed.stderr)
    assert totals["error"] == 0 and totals["hosts"] > 0, totals
    check = metalseed(lab, "certs", "check", "inventory/lab.py")
    assert check.returncode == 0, check.stdout
    assert "differ from the store" not in check.stdout
    with etcdprobe.client(cluster) as c:
        c.wait_healthy(timeout=30)
