"""Benchmark: tenants on seeds.

Placement of 10,000 tenants over 100 seeds. The anchor, run in the same process on the same
input, is the obvious placer: for each tenant, scan every seed for the least loaded one that fits
(O(tenants x seeds)); both must produce the same assignment (asserted). Prints medians and the
ratio.

    .venv/bin/python bench/tenants.py [--runs 5] [--tenants 10000] [--seeds 100] [--quick]

With ``--seed-lab NAME``, figures of a lab seed instead (a lab booted with `metalseed lab up
--seed` on which inventory/lab-seed.py's deploys/cluster.py has run): per run, both tenants are
removed (seed.py with no tenants), then deploys/seed.py is started with inventory/lab-seed.py's
tenants while a thread per tenant polls its /readyz through the edge with its admin.conf: the
time from seed.py's start to each tenant's first "ok", and where that time went: when seed.py's
output (unbuffered, read as it comes) reached each of its phases (PHASES), and when each tenant's
pod was created, scheduled, its API server container started and the pod Ready (the seed's
timestamps, whole seconds). Then the memory of each tenant's control
plane: the PSS of every process in its pod's cgroup on its worker (smaps_rollup), beside the
anchor read the same way in the same run, the seed's own kube-apiserver, kube-controller-manager
and kube-scheduler on m1. Medians.

    .venv/bin/python bench/tenants.py --seed-lab tm [--seed-runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Run as a script, bench/ is first on the path and bench/kubernetes.py would hide the kubernetes
# client package from the seed figures.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from metalseed.lab import Lab  # noqa: E402
from metalseed.tenants.placement import Seed, Tenant, place  # noqa: E402
from metalseed.tenants.profiles import PROFILES  # noqa: E402


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


REPO = Path(__file__).resolve().parents[1]
SEED_INVENTORY = "inventory/lab-seed.py"
# Each process of a cgroup (recursively): PID, command name, PSS in KiB.
PSS_SCRIPT = r"""
for f in $(find "$1" -name cgroup.procs); do
  for p in $(cat "$f"); do
    v=$(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup 2>/dev/null)
    [ -n "$v" ] && echo "$p $(cat /proc/$p/comm) $v"
  done
done
"""
SEED_UNITS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


# Lines of pyinfra's output that mark where a seed.py run is: (phase, text the line holds).
PHASES = (
    ("pyinfra loaded", "--> Loading inventory"),
    ("hosts connected", "--> Preparing operation files"),
    ("operations prepared", "--> Beginning operation run"),
    ("datastore users and roles", "datastore: authentication, tenant users and roles"),
    ("objects applied (start)", "seed: tenant control planes (server-side apply)"),
    ("wait for the APIs (start)", "seed: every tenant's API answers"),
)


def _seed_py(lab: str, log: Path, *data: str) -> tuple[float, dict[str, float]]:
    """seed.py's duration, and when (seconds from its start) its output reached each phase."""
    start = time.monotonic()
    marks: dict[str, float] = {}
    # Unbuffered, read line by line: the time a line appears is the time pyinfra got there.
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "pyinfra"), "-y", SEED_INVENTORY,
                             "deploys/seed.py", "--data", "kubernetes=true", *data],
                            cwd=REPO, env={**os.environ, "METALSEED_LAB": lab,
                                           "PYTHONUNBUFFERED": "1"},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def read() -> None:
        assert proc.stdout is not None
        with log.open("w") as out:
            for line in proc.stdout:
                now = time.monotonic() - start
                out.write(f"{now:7.2f} {line}")
                for phase, text in PHASES:
                    if phase not in marks and text in line:
                        marks[phase] = now

    # A thread reads, so whatever the run leaves holding the pipe cannot hold the bench up.
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    code = proc.wait(timeout=900)
    reader.join(timeout=10)
    if code != 0:
        raise SystemExit(f"seed.py failed ({code}): see {log}")
    return time.monotonic() - start, marks


def _control_plane(tenant: str) -> str:
    # The control plane's pods only: the namespace holds others (the isolation probe).
    return f"metalseed.io/tenant={tenant},app.kubernetes.io/component=control-plane"


def _pod_marks(cluster: Any, names: list[str], wall_start: float) -> dict[str, dict[str, float]]:
    """Per tenant, when (seconds from seed.py's start, by the seed's clock: the lab's machines
    share the host's) its pod was created, scheduled, its API server container started and the
    pod Ready. The API's timestamps have whole seconds."""
    from kubernetes.client import CoreV1Api

    from metalseed.kube import client as kc

    core = CoreV1Api(kc.api_client(cluster))
    out: dict[str, dict[str, float]] = {}
    for name in names:
        pods = core.list_namespaced_pod(f"tenant-{name}", label_selector=_control_plane(name)).items
        if not pods:
            continue
        p = min(pods, key=lambda x: x.metadata.creation_timestamp)
        marks = {"pod created": p.metadata.creation_timestamp.timestamp()}
        for cond in p.status.conditions or []:
            if cond.type in ("PodScheduled", "Ready") and cond.status == "True":
                marks[f"pod {cond.type}"] = cond.last_transition_time.timestamp()
        for st in p.status.init_container_statuses or []:  # the API server is a sidecar
            if st.name == "kube-apiserver" and st.state.running:
                marks["apiserver started"] = st.state.running.started_at.timestamp()
        out[name] = {k: v - wall_start for k, v in marks.items()}
    return out


def _pss(lab: Lab, machine: str, cgroup: str) -> dict[str, int]:
    """KiB of PSS per command name of the processes under ``cgroup`` on ``machine``."""
    proc = lab.ssh(machine, ["sh", "-c", PSS_SCRIPT, "pss", cgroup], timeout=60, check=True)
    out: dict[str, int] = {}
    for line in proc.stdout.splitlines():
        _, comm, kib = line.split()
        out[comm] = out.get(comm, 0) + int(kib)
    if not out:
        raise SystemExit(f"no process under {cgroup} on {machine}")
    return out


def _pod_cgroup(lab: Lab, machine: str, uid: str) -> str:
    # cgroupfs driver: .../kubepods/<qos>/pod<uid>; the systemd driver: ...pod<uid with _>.slice.
    find = (f"find /sys/fs/cgroup -type d \\( -name 'pod{uid}' -o -name "
            f"'*pod{uid.replace('-', '_')}.slice' \\) | head -1")
    path = lab.ssh(machine, find, timeout=60, check=True).stdout.strip()
    if not path:
        raise SystemExit(f"no cgroup of pod {uid} on {machine}")
    return path


def _unit_cgroup(lab: Lab, machine: str, unit: str) -> str:
    # Under the unified hierarchy where there is one beside the v1 controllers (the lab's).
    find = (f"cg=$(systemctl show -p ControlGroup --value {unit}.service); for d in "
            "/sys/fs/cgroup/unified$cg /sys/fs/cgroup$cg; do [ -f $d/cgroup.procs ] && "
            "echo $d && break; done")
    path = lab.ssh(machine, find, timeout=60, check=True).stdout.strip()
    if not path:
        raise SystemExit(f"no cgroup of {unit} on {machine}")
    return path


def seed_figures(lab_name: str, runs: int) -> None:
    from metalseed.kube import client as kc
    from metalseed.model import load_cluster
    from metalseed.tenants.apply import admin_kubeconfig, tenant_api

    os.environ["METALSEED_LAB"] = lab_name
    os.chdir(REPO)
    lab = Lab(lab_name)
    cluster = load_cluster(SEED_INVENTORY, {"kubernetes": True})
    names = [t.name for t in cluster.tenants]
    answered: dict[str, list[float]] = {n: [] for n in names}
    totals: list[float] = []
    removals: list[float] = []
    logs = Path("/tmp") / f"bench-tenants-{lab_name}"
    logs.mkdir(exist_ok=True)
    phases: dict[str, list[float]] = {}
    for run in range(runs):  # none with --seed-runs 0: the memory figures alone
        removals.append(_seed_py(lab_name, logs / f"remove-{run}.log", "--data", "tenants={}")[0])
        assert not any(admin_kubeconfig(cluster, n).exists() for n in names), "not removed"
        seen: dict[str, float] = {}
        start, wall_start = time.monotonic(), time.time()
        done = threading.Event()

        def poll(name: str, start: float, seen: dict[str, float],
                 done: threading.Event) -> None:
            said, last = "no admin.conf yet", 0.0
            while not done.is_set():
                if admin_kubeconfig(cluster, name).is_file():
                    try:
                        got = kc.readyz(tenant_api(cluster, name))
                    except Exception as e:  # a half-written admin.conf: read it again
                        got = f"{type(e).__name__}: {e}"
                    if got is None:
                        seen[name] = time.monotonic() - start
                        return
                    said = got
                if time.monotonic() - last > 15:
                    last = time.monotonic()
                    print(f"  {last - start:5.1f} s {name}: {said[:120]}", flush=True)
                time.sleep(0.25)

        threads = [threading.Thread(target=poll, args=(n, start, seen, done), daemon=True) for n in names]
        for t in threads:
            t.start()
        try:
            took, marks = _seed_py(lab_name, logs / f"seed-{run}.log")
            totals.append(took)
            print(f"  {time.monotonic() - start:5.1f} s seed.py ended", flush=True)
            for t in threads:
                t.join(timeout=60)
        finally:
            done.set()
        missing = set(names) - set(seen)
        assert not missing, f"run {run}: no /readyz ok from {sorted(missing)}"
        for n in names:
            answered[n].append(seen[n])
        pods = _pod_marks(cluster, names, wall_start)
        for n in names:
            marks[f"{n}: API answers through the edge"] = seen[n]
            marks.update({f"{n}: {k}": v for k, v in pods.get(n, {}).items()})
        for k, v in marks.items():
            phases.setdefault(k, []).append(v)
        print("  where the time went (s from seed.py's start): " + ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(marks.items(), key=lambda kv: kv[1])), flush=True)
        print(f"run {run + 1}: removal {removals[-1]:.1f} s, seed.py {totals[-1]:.1f} s, "
              + ", ".join(f"{n} answered at {seen[n]:.1f} s" for n in names), flush=True)
    if runs_deploy := len(totals):
        _print_deploy(names, answered, totals, removals, runs_deploy)
        print(f"  phases, median of {runs_deploy} (s from seed.py's start): " + ", ".join(
            f"{k} {statistics.median(v):.1f}" for k, v in sorted(
                phases.items(), key=lambda kv: statistics.median(kv[1]))))
    _print_memory(lab, cluster, names, max(runs, 3))


def _print_deploy(names: list[str], answered: dict[str, list[float]], totals: list[float],
                  removals: list[float], runs: int) -> None:
    print(f"seed.py from start to each tenant's API answering /readyz through the edge, "
          f"median of {runs}:")
    for n in names:
        print(f"  {n}: {statistics.median(answered[n]):.1f} s   (runs {answered[n]})")
    print(f"  seed.py to its end: {statistics.median(totals):.1f} s; removing both tenants: "
          f"{statistics.median(removals):.1f} s")



def _print_memory(lab: Lab, cluster: Any, names: list[str], runs: int) -> None:
    """PSS of each tenant's pod and of the seed's control plane on m1, read ``runs`` times."""
    from kubernetes.client import CoreV1Api

    from metalseed.kube import client as kc

    core = CoreV1Api(kc.api_client(cluster))
    mem: dict[str, list[int]] = {n: [] for n in names}
    anchor: list[int] = []
    detail: dict[str, dict[str, int]] = {}
    for _ in range(runs):
        for t in cluster.tenants:
            pods = core.list_namespaced_pod(t.namespace, label_selector=_control_plane(t.name)).items
            running = [p for p in pods if p.status.phase == "Running"]
            total = 0
            for p in running:
                by = _pss(lab, p.spec.node_name, _pod_cgroup(lab, p.spec.node_name, p.metadata.uid))
                detail[t.name] = by
                total += sum(by.values())
            mem[t.name].append(total)
        m1 = cluster.masters[0].name
        # Keyed by unit: the seed runs all three from one multi-call binary (command "kube").
        by = {unit: sum(_pss(lab, m1, _unit_cgroup(lab, m1, unit)).values())
              for unit in SEED_UNITS}
        detail["seed control plane on " + m1] = by
        anchor.append(sum(by.values()))
        time.sleep(2)
    print(f"PSS, median of {runs} reads (MiB):")
    for n in names:
        print(f"  tenant {n} (small), its pod's processes: {statistics.median(mem[n]) / 1024:.1f}")
    print(f"  anchor: the seed's own control plane on {cluster.masters[0].name}: "
          f"{statistics.median(anchor) / 1024:.1f}")
    print("  per process (KiB, last read): " + json.dumps(detail))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tenants", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--quick", action="store_true",
                    help="one run over a fifth of the fleet (checks the bench runs)")
    ap.add_argument("--seed-lab", metavar="NAME",
                    help="figures of this lab seed instead of placement (see above)")
    ap.add_argument("--seed-runs", type=int, default=3, help="runs of the seed figures")
    args = ap.parse_args()
    if args.seed_lab:
        seed_figures(args.seed_lab, 1 if args.quick else args.seed_runs)
        return
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
