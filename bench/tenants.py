"""Benchmark: tenants on seeds. Today: placement of 10,000 tenants over 100 seeds.

The anchor, run in the same process on the same input, is the obvious placer: for each tenant,
scan every seed for the least loaded one that fits (O(tenants x seeds)); both must produce the
same assignment (asserted). Prints medians and the ratio. The seed deploy and memory figures come
with the seed deploy (issue 12).

    .venv/bin/python bench/tenants.py [--runs 5] [--tenants 10000] [--seeds 100] [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from metalseed.tenants.placement import Seed, Tenant, place
from metalseed.tenants.profiles import PROFILES


def fleet(seeds: int, tenants: int, seed: int = 1) -> tuple[list[Seed], list[Tenant]]:
    rng = random.Random(seed)
    gi = 2**30
    fleet_seeds = [Seed(f"seed-{i:03d}", rng.choice([128, 192, 256]) * 1000,
                        rng.choice([512, 768, 1024]) * gi) for i in range(seeds)]
    # Mostly small control planes, as on real fleets; a fifth already placed.
    weights = {"small": 0.75, "medium": 0.2, "large": 0.05}
    names = list(weights)
    out = []
    for i in range(tenants):
        profile = rng.choices(names, [weights[n] for n in names])[0]
        placed = fleet_seeds[i % seeds].name if i % 5 == 0 else None
        out.append(Tenant(f"t{i:05d}", profile, placed))
    return fleet_seeds, out


def naive(seeds: list[Seed], tenants: list[Tenant], headroom: float = 0.2) -> dict[str, str]:
    used = {s.name: [0, 0, 0] for s in seeds}
    requests = {name: p.requests for name, p in PROFILES.items()}
    result = {}
    for t in tenants:
        if t.seed:
            cpu, mem = requests[t.profile]
            u = used[t.seed]
            u[0], u[1], u[2] = u[0] + cpu, u[1] + mem, u[2] + 1
            result[t.name] = t.seed
    todo = sorted((t for t in tenants if not t.seed),
                  key=lambda t: (-requests[t.profile][0], -requests[t.profile][1], t.name))
    for t in todo:
        cpu, mem = requests[t.profile]
        best = None
        for s in seeds:
            u = used[s.name]
            if u[0] + cpu <= s.cpu_m * (1 - headroom) and u[1] + mem <= s.memory * (1 - headroom):
                key = (max(u[0] / s.cpu_m, u[1] / s.memory), u[2], s.name)
                if best is None or key < best[0]:
                    best = (key, s.name)
        assert best is not None, f"{t.name} fits nowhere"
        u = used[best[1]]
        u[0], u[1], u[2] = u[0] + cpu, u[1] + mem, u[2] + 1
        result[t.name] = best[1]
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tenants", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--quick", action="store_true",
                    help="one run over a fifth of the fleet (checks the bench runs)")
    args = ap.parse_args()
    runs = 1 if args.quick else args.runs
    if args.quick:  # a check that the bench runs: a fifth of the fleet
        args.tenants, args.seeds = args.tenants // 5, args.seeds // 5
    seeds, tenants = fleet(args.seeds, args.tenants)
    ours: list[float] = []
    anchor: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        got = place(seeds, tenants)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        expected = naive(seeds, tenants)
        anchor.append(time.perf_counter() - start)
        assert got == expected, "the placer and the anchor disagree"
    a, b = statistics.median(ours), statistics.median(anchor)
    print(f"placement of {args.tenants} tenants over {args.seeds} seeds, median of {runs}:")
    print(f"  metalseed (heap of seeds by load): {a * 1000:8.1f} ms")
    print(f"  anchor (scan every seed per tenant): {b * 1000:6.1f} ms   ratio {b / a:.1f}x")


if __name__ == "__main__":
    main()
