"""Benchmark: the lab itself.

    .venv/bin/python bench/lab.py [--runs 5] [--masters 3] [--workers 2] [--name bench] [--quick]

Boots and removes its own lab (``bench``) ``--runs`` times and prints, as medians over the runs:

- up: from `Lab.up()` to every machine answering SSH with systemd running;
- down: `Lab.down()` until nothing of the lab is left;
- memory per machine: proportional set size (PSS) of all of a machine's processes (nspawn and the
  container's systemd, journald, logind, dbus, sshd), 2 s after up; PSS shares the pages of the
  host's binaries fairly among the machines that map them;
- one `ssh true` round trip into a machine.

Anchors, measured in the same process so that figures from a loaded machine can be compared:
`ip netns add` + `ip netns del` (a netns is what every machine starts with), and an
`unshare --pid --fork --mount-proc true` (the kernel side of starting a container).

``--quick``: one run of 1 master + 1 worker (lab ``bq-lab``), 3 anchor runs; it checks that every
machine came up and was measured and that ``down`` left nothing, not how fast.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from benchlab import claimed

from metalseed.lab import Lab

BENCH_LAB = "bench"
QUICK_LAB = "bq-lab"


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def anchor(argvs: list[list[str]], runs: int = 20) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        for argv in argvs:
            subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--masters", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", help=f"the lab this bench boots (default {BENCH_LAB}; "
                                   f"{QUICK_LAB} with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="one run of 1 master + 1 worker: does the bench run, not how fast")
    args = ap.parse_args()
    anchor_runs = 20
    if args.quick:
        args.runs, args.masters, args.workers, anchor_runs = 1, 1, 1, 3

    lab = Lab(args.name or (QUICK_LAB if args.quick else BENCH_LAB), progress=None)
    with claimed(lab):
        return measure(lab, args, anchor_runs)


def measure(lab: Lab, args: argparse.Namespace, anchor_runs: int) -> int:
    lab.down()  # leftovers of an interrupted benchmark
    ups: list[float] = []
    downs: list[float] = []
    pss: list[float] = []
    ssh: list[float] = []
    try:
        for i in range(args.runs):
            ups.append(timed(lambda: lab.up(args.masters, args.workers)))
            assert lab.is_up() and len(lab.machines) == args.masters + args.workers
            time.sleep(2)  # let boot-time work settle before counting memory
            pss += [lab.memory(m.name) / 2**20 for m in lab.machines]
            ssh += [timed(lambda: lab.ssh("m1", "true", check=True)) for _ in range(5)]
            downs.append(timed(lab.down))
            assert not lab._leftovers(), "down left parts of the lab behind"
            print(f"run {i + 1}: up {ups[-1]:.2f} s, down {downs[-1]:.2f} s", file=sys.stderr)
    finally:
        lab.down()

    netns = anchor([["ip", "netns", "add", f"ms-{lab.name}-anchor"],
                    ["ip", "netns", "del", f"ms-{lab.name}-anchor"]], anchor_runs)
    unshare = anchor([["unshare", "--pid", "--fork", "--mount-proc", "true"]], anchor_runs)
    n = args.masters + args.workers
    # Every machine of every run was measured (a machine that did not come up has no PSS).
    assert len(pss) == n * args.runs and all(p > 0 for p in pss), pss
    print(f"lab: {args.masters} masters + {args.workers} workers, {args.runs} runs (medians)")
    print(f"  up (all {n} machines: SSH + systemd running)  {statistics.median(ups):6.2f} s"
          f"   (min {min(ups):.2f}, max {max(ups):.2f})")
    print(f"  down (nothing left)                          {statistics.median(downs):6.2f} s"
          f"   (min {min(downs):.2f}, max {max(downs):.2f})")
    print(f"  memory per machine (PSS)                     {statistics.median(pss):6.1f} MiB"
          f" (min {min(pss):.1f}, max {max(pss):.1f})")
    print(f"  ssh true round trip                          {statistics.median(ssh) * 1000:6.0f} ms")
    print("anchors (same process):")
    print(f"  ip netns add + del                           {netns * 1000:6.1f} ms")
    print(f"  unshare --pid --fork --mount-proc true       {unshare * 1000:6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
