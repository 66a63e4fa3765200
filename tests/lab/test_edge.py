"""The HA edge on real lab machines: HTTPS on the VIP to the workers' NodePort (the tests' own
backend there, tests/lab/nodeport_backend.py: this lab runs no Kubernetes), TLS quality by a
real scanner, VIP failover under a continuous client, a dead worker, idempotence.

Traffic goes only to the VIP and lab machine addresses; every client loop is bounded. Every fault is
undone before its test returns: the lab ends with all machines up, the edge converged, m1 holding
the VIP.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metalseed import edgeprobe as probe
from metalseed.lab import Lab
from metalseed.lab.plan import bridge_name
from metalseed.model import Cluster, cluster_from_inventory
from metalseed.pki.issue import store_for
from metalseed.probe import pyinfra_totals
from metalseed.render import edge as r
from tests.lab import nodeport_backend

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
RunPyinfra = Callable[..., subprocess.CompletedProcess[str]]


def converge(lab: Lab, run_pyinfra: RunPyinfra) -> subprocess.CompletedProcess[str]:
    return run_pyinfra("deploys/edge.py")


@pytest.fixture(scope="module")
def edge(lab: Lab, run_pyinfra: RunPyinfra) -> Iterator[Cluster]:
    converge(lab, run_pyinfra)
    cluster = cluster_from_inventory(probe.lab_inventory(lab))
    nodeport_backend.install(lab, cluster)
    probe.wait_holder(lab, cluster, expected=r.expected_holder(cluster).name)
    yield cluster


@pytest.fixture(scope="module")
def ca(edge: Cluster) -> Path:
    path = store_for(edge).cert_path("edge/ca")
    return path if path.is_absolute() else REPO / path


def vip(c: Cluster) -> str:
    return str(c.vip)


# ---------------------------------------------------------------------------------------------


def test_https_on_the_vip_reaches_the_workers_with_host_intact(edge: Cluster, ca: Path) -> None:
    ctx = probe.tls_context(ca)
    nodes = set()
    for _ in range(12):
        reply = probe.get(vip(edge), edge.edge.https_port, host="app.example.test", ctx=ctx)
        assert reply.status == 200
        assert reply.fields["host"] == "app.example.test"
        assert reply.fields["proto"] == "https"
        assert reply.fields["xff"]  # the client's address, set by the edge
        assert reply.headers["strict-transport-security"] == f"max-age={edge.edge.hsts_max_age}"
        nodes.add(reply.fields["node"])
    assert nodes == {w.name for w in edge.workers}

    # A client's own X-Forwarded-For is replaced by the address the edge saw, never passed on.
    out = subprocess.run(["curl", "-sS", "--max-time", "5", "--cacert", str(ca), "-H",
                          "Host: shop.example.test", "-H", "X-Forwarded-For: 203.0.113.9",
                          f"https://{vip(edge)}/cart"],
                         capture_output=True, text=True, check=True).stdout
    assert "host=shop.example.test" in out and "proto=https" in out
    assert f"xff={reply.fields['xff']}\n" in out and "203.0.113.9" not in out


def test_http_redirects_to_https(edge: Cluster) -> None:
    reply = probe.get(vip(edge), edge.edge.http_port, path="/a/b?c=1", host="app.example.test")
    assert reply.status == 308
    assert reply.headers["location"] == "https://app.example.test/a/b?c=1"


def test_served_chain_verifies_against_the_edge_ca(edge: Cluster, ca: Path) -> None:
    res = subprocess.run(["openssl", "s_client", "-connect", f"{vip(edge)}:{edge.edge.https_port}",
                          "-CAfile", str(ca), "-verify_return_error", "-brief"],
                         input="", capture_output=True, text=True, timeout=15)
    assert res.returncode == 0, res.stderr
    assert "Verification: OK" in res.stderr


def test_api_port_is_forwarded_as_tcp(edge: Cluster, lab: Lab) -> None:
    # No API server in the lab: nginx accepts on VIP:6443 and has nowhere to pass the bytes, but
    # the listener and the stream config are live on every master (nginx -t passes there too).
    probe.wait_port(vip(edge), edge.apiserver_port, timeout=5)
    for m in edge.masters:
        res = lab.ssh(m.name, "nginx -T 2>/dev/null | grep -c 'proxy_pass metalseed_apiserver'",
                      timeout=10)
        assert res.stdout.strip() == "1"


def test_keepalived_sends_its_adverts_in_real_time_on_every_master(edge: Cluster,
                                                                    lab: Lab) -> None:
    # Its VRRP process (the child that sends and hears adverts) runs SCHED_RR, so a busy machine
    # cannot starve it into a false failover; its scripts are forked back to normal scheduling.
    for m in edge.masters:
        res = lab.ssh(m.name, "for p in $(pgrep keepalived); do chrt -p $p; done", timeout=10)
        policies = re.findall(r"policy: (\S+)", res.stdout)
        assert "SCHED_RR|SCHED_RESET_ON_FORK" in policies, (m.name, res.stdout, res.stderr)


def test_a_client_still_sending_to_another_masters_mac_is_corrected(edge: Cluster,
                                                                     lab: Lab) -> None:
    # What a holder that was frozen while a peer held the VIP leaves behind: clients with the
    # peer's MAC for the VIP. The holder's periodic gratuitous ARP corrects them.
    holder = probe.wait_holder(lab, edge, expected=r.expected_holder(edge).name)
    other = next(m.name for m in edge.masters if m.name != holder)
    right, wrong = probe.mac_address(lab, edge, holder), probe.mac_address(lab, edge, other)
    # keepalived's second set of gratuitous ARPs after it became MASTER (garp_master_delay, 5 s by
    # default) would correct the entry without any refresh: plant it only after that.
    since = probe.became_master(lab, holder, since=time.time() - 60, last=True)
    if since is not None:
        time.sleep(max(0.0, since + 6 - time.time()))
    bridge = bridge_name(lab.name)
    try:
        subprocess.run(["ip", "neigh", "replace", vip(edge), "lladdr", wrong, "dev", bridge,
                        "nud", "reachable"], check=True)
        t0 = time.monotonic()
        while wrong in probe.vip_neighbour(edge) and time.monotonic() - t0 < r.GARP_REFRESH + 3:
            time.sleep(0.1)
        took = time.monotonic() - t0
        entry = probe.vip_neighbour(edge)
        print(f"\nedge: a client's entry for the VIP pointing at {other} corrected to {holder} "
              f"in {took:.2f} s (refresh every {r.GARP_REFRESH} s)")
        assert right in entry, f"after {took:.1f} s the VIP still resolves to {entry!r}, " \
            f"not to {holder}'s {right}"
    finally:
        if wrong in probe.vip_neighbour(edge):
            subprocess.run(["ip", "neigh", "del", vip(edge), "dev", bridge], check=False)


@pytest.mark.skipif(shutil.which("testssl") is None, reason="testssl.sh is not installed")
def test_tls_quality_by_testssl(edge: Cluster, tmp_path: Path) -> None:
    report = tmp_path / "testssl.json"
    # Protocols, cipher categories, forward secrecy, headers; no DNS, no OCSP/CRL (no --phone-out):
    # it talks to the VIP only.
    subprocess.run(["testssl", "--quiet", "--color", "0", "--nodns", "none", "--warnings", "off",
                    "--connect-timeout", "3", "--openssl-timeout", "5", "--jsonfile", str(report),
                    "-p", "-s", "-f", "-h", f"https://{vip(edge)}:{edge.edge.https_port}/"],
                   capture_output=True, text=True, timeout=180, check=False)
    findings = {f["id"]: f for f in json.loads(report.read_text())}
    for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert findings[proto]["finding"] == "not offered", findings[proto]
    assert findings["TLS1_2"]["finding"] == "offered"
    assert findings["TLS1_3"]["finding"].startswith("offered")
    for weak in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
                 "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"):
        assert findings[weak]["finding"] == "not offered", findings[weak]
    assert findings["PFS"]["severity"] == "OK" and findings["PFS"]["finding"] == "offered"
    assert findings["HSTS_time"]["severity"] == "OK"
    bad = {k: f["finding"] for k, f in findings.items() if f["severity"] in ("HIGH", "CRITICAL")}
    assert bad == {}


def test_second_run_changes_nothing(edge: Cluster, lab: Lab, run_pyinfra: RunPyinfra) -> None:
    t0 = time.monotonic()
    proc = converge(lab, run_pyinfra)
    total = pyinfra_totals(proc.stdout + proc.stderr)
    took = time.monotonic() - t0
    assert total["success"] == 0 and total["error"] == 0
    # One operation (the edge's converge) on every host, and the VIP gate (run once, and asking
    # nothing when nothing changed); none changed anything.
    assert total["no_change"] == total["hosts"] == len(edge.nodes) + 1
    print(f"\nedge: no-change run on {len(edge.nodes)} machines took {took:.2f} s")


def test_crash_of_a_worker_costs_no_request(edge: Cluster, lab: Lab, ca: Path,
                                            run_pyinfra: RunPyinfra) -> None:
    victim = edge.workers[-1].name
    # A request that meets the dead worker waits out the edge's connect timeout, then is served
    # by the next worker: slower, not failed. The client's timeout allows for that.
    with probe.Client(vip(edge), edge.edge.https_port, probe.tls_context(ca), timeout=5,
                      pause=0.02, max_seconds=60) as client:
        try:
            client.wait_ok(20, timeout=20)
            t0 = time.time()
            lab.crash(victim)
            time.sleep(8)  # past the worker's fail_timeout: it is retried (and fails over) again
            client.stop()
            after = [s for s in client.samples if s.start >= t0]
            assert len(after) > 50
            assert client.failures(t0) == []
            assert {s.node for s in after[-20:]} == {w.name for w in edge.workers if w.name != victim}
            slowest = max(s.end - s.start for s in after)
            print(f"\nedge: worker {victim} crashed: {len(after)} requests, 0 failed, "
                  f"slowest {slowest:.2f} s")
        finally:
            lab.restart(victim)
            converge(lab, run_pyinfra)
    probe.wait_port(str(edge.node(victim).address), edge.ingress_http_nodeport, timeout=20)


def test_crash_of_the_vip_holder_moves_the_vip(edge: Cluster, lab: Lab, ca: Path,
                                               run_pyinfra: RunPyinfra) -> None:
    old = probe.wait_holder(lab, edge, expected=r.expected_holder(edge).name)
    with probe.Client(vip(edge), edge.edge.https_port, probe.tls_context(ca), timeout=0.5,
                      max_seconds=90) as client:
        try:
            client.wait_ok(20, timeout=20)
            t0 = time.time()
            lab.crash(old)
            others = [m.name for m in edge.masters if m.name != old]
            new = probe.wait_holder(lab, edge, names=others, timeout=20)
            client.wait_ok(20, timeout=20)
            client.stop()
            took = probe.became_master(lab, new, since=t0 - 1)
            assert took is not None
            failover = took - t0
            failed = len(client.failures(t0))
            outage = client.outage(t0)
            formula = r.master_down_interval(edge, edge.node(new))
            print(f"\nedge: holder {old} crashed -> {new} in {failover:.3f} s "
                  f"(VRRP formula {formula:.3f} s); {failed} requests failed, outage {outage:.2f} s")
            assert new == edge.masters[1].name  # the next priority, predictably
            assert failover < formula + 1.5
            # The client sends about every 10 ms with a 0.5 s timeout: failures are bounded by the
            # outage, not by the request rate.
            assert outage < formula + 2.5
            assert failed <= (formula + 2.5) / 0.5 + 5
        finally:
            lab.restart(old)
            converge(lab, run_pyinfra)
    probe.wait_holder(lab, edge, expected=old, timeout=30)  # preemption: m1 takes it back


def test_nginx_stopped_on_the_holder_moves_the_vip(edge: Cluster, lab: Lab,
                                                   run_pyinfra: RunPyinfra) -> None:
    old = probe.wait_holder(lab, edge, expected=r.expected_holder(edge).name)
    try:
        lab.stop_service(old, "nginx.service")
        others = [m.name for m in edge.masters if m.name != old]
        new = probe.wait_holder(lab, edge, names=others, timeout=20)
        assert new != old
        assert probe.holder(lab, edge, names=[old]) is None  # FAULT state: the VIP is gone from it
    finally:
        converge(lab, run_pyinfra)  # starts nginx again
    probe.wait_holder(lab, edge, expected=old, timeout=30)


def test_a_fresh_deploy_returns_only_once_the_vip_has_settled(
        edge: Cluster, lab: Lab, run_pyinfra: RunPyinfra) -> None:
    # keepalived stopped everywhere: the deploy starts it on every master, as on bare machines.
    for m in edge.masters:
        lab.ssh(m.name, "systemctl stop keepalived.service", check=True)
    assert probe.holder(lab, edge) is None
    converge(lab, run_pyinfra)
    expected = r.expected_holder(edge).name
    seen = set()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:  # the 10 s after the deploy returned
        seen.add(probe.holder(lab, edge))
        time.sleep(0.2)
    assert seen == {expected}, f"the VIP moved after the deploy returned: {seen}"


def dry_run(lab: Lab, *args: str) -> str:
    """`pyinfra --dry` as an operator types it (no -y: it shows its detected changes)."""
    pyinfra = Path(sys.executable).with_name("pyinfra")
    proc = subprocess.run([str(pyinfra), "inventory/lab.py", "--dry", *args, "deploys/cluster.py"],
                          cwd=REPO, env=dict(os.environ, METALSEED_LAB=lab.name, NO_COLOR="1"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def detected_changes(output: str) -> list[str]:
    """Rows of pyinfra's "Detected changes" table that change something on some host."""
    table = output.split("--> Detected changes:", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    return [row for row in table if re.search(r"\s\d+ \(", row)]


def test_dry_run_shows_nothing_when_converged_and_a_diff_for_a_changed_setting(
        edge: Cluster, lab: Lab, run_pyinfra: RunPyinfra) -> None:
    run_pyinfra("deploys/cluster.py")
    before = lab.ssh(edge.masters[0].name, f"sha256sum {r.KEEPALIVED_CONF}", check=True).stdout
    quiet = dry_run(lab)
    assert detected_changes(quiet) == []
    assert "would " not in quiet

    changed = dry_run(lab, "--data", "edge_failover=fast")
    for m in edge.masters:
        assert f"[{m.name}] would change {r.KEEPALIVED_CONF}:" in changed
        assert f"[{m.name}] would reload keepalived.service" in changed
    assert "-    advert_int 1" in changed and "+    advert_int 0.1" in changed
    assert [row.split("|")[-1].split()[0] for row in detected_changes(changed)] == ["edge:"]
    assert "PRIVATE KEY" not in changed
    # A dry run changed nothing.
    after = lab.ssh(edge.masters[0].name, f"sha256sum {r.KEEPALIVED_CONF}", check=True).stdout
    assert after == before
