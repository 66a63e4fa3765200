"""Benchmark: VIP failover on a crash of the holder, and throughput through the edge.

On a lab of its own (``edgeb``, 3 masters + 2 workers; or ``--lab NAME``, one that is up), for the
``default`` and the ``fast`` failover setting:

- crash the VIP holder (the whole machine) while a continuous HTTPS client runs against the VIP;
  failover time = from the crash to the new holder's keepalived entering MASTER (journal
  timestamps; lab machines share the host clock), printed next to the VRRP formula
  3 x advert_int + skew, skew = (256 - priority) / 256 x advert_int, of the master that takes over;
  failed requests of the client (fresh connection per request, 0.5 s timeout) and its outage;
- restore (restart the machine, re-converge) before the next run.

Then requests/s through the edge (HTTPS on the VIP, TLS terminated, proxied to both workers)
against straight to one worker's NodePort (plain HTTP), in the same process, with ``wrk``. No
Kubernetes runs here: the workers' NodePort is the lab tests' small nginx backend
(tests/lab/nodeport_backend.py).

    .venv/bin/python bench/edge.py [--lab NAME | --name NAME] [--runs 5] [--seconds 5] [--quick]

``--quick`` (lab ``bq-edge``): one crash with the ``fast`` setting, one 1 s wrk run per path; it
checks that the VIP moved to another master and that both paths answered the same wrk load without
errors, never a speed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from benchlab import add_lab_arguments, lab_for
from tests.lab import nodeport_backend

from metalseed import edgeprobe as probe
from metalseed.lab import Lab
from metalseed.model import FAILOVER_ADVERT_INT, Cluster, cluster_from_inventory
from metalseed.pki.issue import init_pki, store_for
from metalseed.render import edge as r


@dataclass
class Run:
    failover: float
    formula: float
    failed: int
    outage: float
    new_holder: str


def crash_holder(lab: Lab, cluster: Cluster, client: probe.Client) -> Run:
    old = probe.wait_holder(lab, cluster, expected=r.expected_holder(cluster).name)
    client.wait_ok(20, timeout=20)
    t0 = time.time()
    lab.crash(old)
    others = [m.name for m in cluster.masters if m.name != old]
    new = probe.wait_holder(lab, cluster, names=others, timeout=20)
    client.wait_ok(20, timeout=20)
    took = probe.became_master(lab, new, since=t0 - 1)
    node = cluster.node(new)
    return Run(
        failover=(took - t0) if took else float("nan"),
        formula=r.master_down_interval(cluster, node),
        failed=len(client.failures(t0)),
        outage=client.outage(t0),
        new_holder=new,
    )


def restore(lab: Lab, name: str, failover: str) -> None:
    lab.restart(name)
    probe.deploy_edge(lab, edge_failover=failover)


def failover_runs(lab: Lab, failover: str, runs: int) -> list[Run]:
    probe.deploy_edge(lab, edge_failover=failover)
    cluster = cluster_from_inventory(probe.lab_inventory(lab, edge_failover=failover))
    ctx = probe.tls_context(store_for(cluster).cert_path("edge/ca"))
    out = []
    for _ in range(runs):
        holder = r.expected_holder(cluster).name
        with probe.Client(str(cluster.vip), cluster.edge.https_port, ctx, max_seconds=120) as client:
            try:
                out.append(crash_holder(lab, cluster, client))
            finally:
                client.stop()
                restore(lab, holder, failover)
    return out


_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_ERRS = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)")


_REQUESTS = re.compile(r"(\d+) requests in ")


def wrk(url: str, seconds: int, host: str) -> tuple[float, str, int]:
    """Requests/s, the errors wrk reports ("none") and how many requests it completed."""
    cmd = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--timeout", "2s", "-H", f"Host: {host}", url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True)
    m = _RPS.search(res.stdout)
    n = _REQUESTS.search(res.stdout)
    errors = "; ".join(x.group(0) for x in _ERRS.finditer(res.stdout)) or "none"
    return (float(m.group(1)) if m else float("nan")), errors, int(n.group(1)) if n else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_lab_arguments(ap, "edge", "edgeb", "3 masters + 2 workers")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5, help="wrk duration per throughput run")
    ap.add_argument("--skip-failover", action="store_true")
    args = ap.parse_args()
    settings, rounds = ("default", "fast"), 3
    if args.quick:
        args.runs, args.seconds, settings, rounds = 1, 1, ("fast",), 1
    with lab_for(args, masters=3, workers=2) as lab:
        measure(lab, args, settings, rounds)


def measure(lab: Lab, args: argparse.Namespace, settings: tuple[str, ...], rounds: int) -> None:
    cluster = cluster_from_inventory(probe.lab_inventory(lab))
    init_pki(cluster)
    nodeport_backend.install(lab, cluster)

    if not args.skip_failover:
        print(f"VIP failover on a crash of the holder ({args.runs} runs each, medians)")
        print(f"{'setting':8} {'advert':>7} {'formula':>8} {'measured':>9} {'min':>6} {'max':>6} "
              f"{'failed req':>10} {'outage':>7}")
        for setting in settings:
            runs = failover_runs(lab, setting, args.runs)
            # Each run is a real failover: the VIP left the crashed holder for another master.
            holder = r.expected_holder(cluster).name
            assert len(runs) == args.runs and all(x.new_holder != holder for x in runs), runs
            fo = [x.failover for x in runs]
            formula = probe.median([x.formula for x in runs])
            failed = probe.median([x.failed for x in runs])
            outage = probe.median([x.outage for x in runs])
            print(f"{setting:8} {FAILOVER_ADVERT_INT[setting]:>6}s {formula:>7.3f}s "
                  f"{probe.median(fo):>8.3f}s {min(fo):>5.2f}s {max(fo):>5.2f}s "
                  f"{failed:>10.1f} {outage:>6.2f}s")
            print("         runs: " + ", ".join(f"{x.failover:.3f}s/{x.failed} failed->{x.new_holder}"
                                                for x in runs))
        # leave the lab on the default setting
        probe.deploy_edge(lab)

    if shutil.which("wrk") is None:
        print("throughput: skipped (wrk not installed: apt-get install wrk)")
        return
    host = "bench.edge.test"
    w1 = cluster.workers[0]
    edge_url = f"https://{cluster.vip}:{cluster.edge.https_port}/"
    direct_url = f"http://{w1.address}:{cluster.ingress_http_nodeport}/"
    print(f"\nthroughput, wrk -t2 -c32 -d{args.seconds}s, keep-alive clients, all on this host's cores")
    edge_rps, direct_rps = [], []
    for _ in range(rounds):
        e, e_err, e_n = wrk(edge_url, args.seconds, host)
        d, d_err, d_n = wrk(direct_url, args.seconds, host)
        # The same load on both paths, each answered: requests completed, no error responses.
        assert e_n > 0 and d_n > 0 and "Non-2xx" not in e_err + d_err, (e_err, d_err)
        edge_rps.append(e)
        direct_rps.append(d)
    me, md = probe.median(edge_rps), probe.median(direct_rps)
    print(f"  through the edge (HTTPS VIP -> 2 workers): {me:>9.0f} req/s   errors: {e_err}")
    print(f"  straight to {w1.name} (HTTP NodePort):        {md:>9.0f} req/s   errors: {d_err}")
    print(f"  edge / direct: {me / md:.0%}  (target >= 80%)")


if __name__ == "__main__":
    main()
