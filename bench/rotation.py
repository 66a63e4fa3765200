"""Benchmark: a full leaf rotation on 3 masters + 2 workers, under load.

    .venv/bin/python bench/rotation.py [--runs 5] [--lab NAME | --name NAME] [--keep] [--quick]

Boots its own lab (``rotb``) unless ``--lab`` names one that is up, deploys the cluster, then
``--runs`` times: ``pyinfra inventory/lab.py deploys/rotate-certs.py --data rotate=all`` (every
leaf re-issued, shipped host by host, each etcd member restarted behind its health gate, nginx
reloaded) while a continuous etcd writer and a continuous HTTPS client through the VIP run.
Prints the median wall time of the rotation, failed HTTPS requests, acknowledged writes lost and
the longest pause between acknowledged writes.

Anchor, in the same run: the no-change run of the same command (``--data rotate=none``), which
costs the same SSH round trips and health checks but re-issues, ships and restarts nothing. Checked
on the store after each: the anchor left every leaf as it was, the rotation replaced every one.

``--quick`` (lab ``bq-rotation``): one run with the same checks; no time is judged (a failed
request or a lost write still fails it, full run or quick: zero downtime is what the bench shows).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from benchlab import add_lab_arguments, lab_for  # noqa: E402
from tests.lab import nodeport_backend  # noqa: E402

from metalseed import edgeprobe, etcdprobe  # noqa: E402
from metalseed.model import Cluster, cluster_from_inventory  # noqa: E402
from metalseed.pki.issue import store_for  # noqa: E402
from metalseed.pki.profiles import leaf_specs  # noqa: E402
from metalseed.pki.rotation import bundle_path  # noqa: E402


def pyinfra(lab: str, deploy: str, *args: str) -> float:
    exe = Path(sys.executable).with_name("pyinfra")
    start = time.monotonic()
    proc = subprocess.run([str(exe), "-y", "inventory/lab.py", deploy, *args], cwd=REPO,
                          env=dict(os.environ, METALSEED_LAB=lab),
                          capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    if proc.returncode != 0:
        # The failing operation's own lines, then the end (which holds pyinfra's summary).
        errors = [line for line in proc.stderr.splitlines()
                  if "rror" in line and "known_hosts" not in line]
        sys.exit(f"pyinfra {deploy} failed:\n" + "\n".join(errors[:40]) + "\n...\n" + proc.stderr[-3000:])
    return took


def leaves(cluster: Cluster) -> dict[str, bytes | None]:
    """Every leaf certificate in the store, by id."""
    store = store_for(cluster)
    return {spec.id: store.read(store.cert_path(spec.id)) for spec in leaf_specs(cluster)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    add_lab_arguments(ap, "rotation", "rotb", "3 masters + 2 workers")
    args = ap.parse_args()
    if args.quick:
        args.runs = 1
    with lab_for(args, masters=3, workers=2) as lab:
        pyinfra(lab.name, "deploys/cluster.py")
        cluster = cluster_from_inventory(edgeprobe.lab_inventory(lab))
        nodeport_backend.install(lab, cluster)  # what the HTTPS client reaches behind the edge
        ctx = edgeprobe.tls_context(bundle_path(store_for(cluster), "edge/ca"))
        times, anchors, failed, lost, gaps, requests, writes = [], [], [], [], [], [], []
        for _ in range(args.runs):
            before = leaves(cluster)
            assert all(before.values()), "the cluster deploy left leaves out of the store"
            anchors.append(pyinfra(lab.name, "deploys/rotate-certs.py", "--data", "rotate=none"))
            # The anchor is the same command doing none of the work: every leaf as it was.
            assert leaves(cluster) == before, "the no-change run changed the store"
            with etcdprobe.Writer(cluster) as writer, edgeprobe.Client(
                    str(cluster.vip), cluster.edge.https_port, ctx, max_seconds=120) as client:
                writer.wait_acks(20, timeout=15)
                client.wait_ok(20, timeout=15)
                start = time.monotonic()
                times.append(pyinfra(lab.name, "deploys/rotate-certs.py", "--data", "rotate=all"))
                writer.wait_acks(20, timeout=15)
                client.wait_ok(5, timeout=15)
            with etcdprobe.client(cluster) as c:
                present = set(c.get_prefix(writer.prefix))
                c.delete_prefix(writer.prefix)
            after = leaves(cluster)
            unchanged = sorted(i for i in before if after[i] == before[i])
            assert not unchanged, f"rotate=all left these leaves as they were: {unchanged}"
            assert writer.acked and client.samples, "no load ran during the rotation"
            failed.append(len(client.failures()))
            requests.append(len(client.samples))
            lost.append(len(writer.lost(present)))
            writes.append(len(writer.acked))
            gaps.append(writer.longest_gap(since=start))
        med = statistics.median
        print(f"full leaf rotation, 3 masters + 2 workers, {args.runs} runs under load")
        print(f"  rotation wall time        median {med(times):6.2f} s  (min {min(times):.2f}, "
              f"max {max(times):.2f})")
        print(f"  anchor: no-change run     median {med(anchors):6.2f} s  -> rotation costs "
              f"{med(times) - med(anchors):.2f} s more ({med(times) / med(anchors):.1f}x)")
        print(f"  failed HTTPS requests     {sum(failed)} of {sum(requests)}")
        print(f"  acknowledged writes lost  {sum(lost)} of {sum(writes)}")
        print(f"  longest write pause       median {med(gaps):.2f} s, max {max(gaps):.2f} s")
        return 0 if sum(failed) == 0 and sum(lost) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
