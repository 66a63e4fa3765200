"""Benchmark: tenant isolation on a lab seed (deploys/cluster.py and deploys/seed.py have run, so
the seed's engine, each tenant's policies and probe pod are there: CiliumNetworkPolicies with the
Cilium agents, NetworkPolicies with kube-router).

1. apply -> enforced: per run, the first tenant's ``apiserver-egress`` policy is deleted
   and the time until a loop in its probe pod (``agnhost connect`` to the first datastore
   member's client port, 500 ms timeout, back to back) first fails is taken; then the policy is
   server-side applied again and the time until it first connects
   (:func:`metalseed.tenants.verify.time_to_enforce`: from the start of the API call, host wall
   clock, which the lab machines share). Medians and maxima.
2. the probe matrix (:func:`metalseed.tenants.verify.run`) for the seed's tenants: its duration
   and probe count, median of the runs; every run must have 0 unexpected results.

    .venv/bin/python bench/isolation.py --seed-lab NAME [--runs 5 | --quick] [--data KEY=VALUE ...]

``--data`` as for pyinfra (the tenants the seed was deployed with, kubernetes=True).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

# Run as a script, bench/ is first on the path and bench/kubernetes.py would hide the kubernetes
# client package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from metalseed.kube import apply as ka  # noqa: E402
from metalseed.kube import client as kc  # noqa: E402
from metalseed.model import load_cluster  # noqa: E402
from metalseed.tenants import enforce  # noqa: E402
from metalseed.tenants import verify as v  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed-lab", required=True, metavar="NAME")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true",
                    help="one run: checks that the bench still runs (on a deployed seed lab, so "
                         "CI does not run it: tests/lab/test_seed.py checks the same paths)")
    ap.add_argument("--data", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    if args.quick:
        args.runs = 1
    os.environ["METALSEED_LAB"] = args.seed_lab
    from metalseed.pki.cli import _overrides

    cluster = load_cluster(str(REPO / "inventory" / "lab.py"), _overrides(args))
    if not cluster.tenants or cluster.datastore is None:
        raise SystemExit("the seed needs tenants and a datastore (--data tenants=... )")
    tenant = cluster.tenants[0]
    target = f"{cluster.datastore.members[0].address}:{cluster.datastore.etcd.client_port}"
    kind = "CiliumNetworkPolicy" if enforce.cilium(cluster) else "NetworkPolicy"
    mine = [o for o in enforce.objects(cluster) if o["kind"] == kind
            and o["metadata"]["namespace"] == tenant.namespace]
    egress = next(o for o in mine if o["metadata"]["name"] == "apiserver-egress")
    dyn = kc.dynamic(kc.api_client(cluster))
    res = ka._resource(dyn, egress)
    denied, allowed, matrix, counts = [], [], [], []
    for _ in range(args.runs):
        denied.append(v.time_to_enforce(cluster, tenant.name, target, False, lambda: kc.translated(
            "deleting the egress policy", lambda: res.delete(name="apiserver-egress",
                                                             namespace=tenant.namespace))))
        allowed.append(v.time_to_enforce(cluster, tenant.name, target, True,
                                         lambda: ka.apply(cluster, [egress])))
        probes, seconds = v.run(cluster)
        bad = [p for p in probes if not p.as_expected]
        if bad:
            sys.stdout.write(v.format_table(probes))
            raise SystemExit(f"{len(bad)} unexpected probe results")
        matrix.append(seconds)
        counts.append(len(probes))
    print(f"lab {args.seed_lab}: {len(cluster.tenants)} tenants, {args.runs} runs, engine "
          f"{cluster.kubernetes.network_policy}")
    print(f"allowance deleted -> enforced (connect fails): median {statistics.median(denied):.2f} s,"
          f" max {max(denied):.2f} s")
    print(f"allowance applied -> enforced (connect works): median {statistics.median(allowed):.2f}"
          f" s, max {max(allowed):.2f} s")
    print(f"probe matrix: {counts[0]} probes, median {statistics.median(matrix):.2f} s, "
          f"max {max(matrix):.2f} s, 0 unexpected in every run")


if __name__ == "__main__":
    main()
