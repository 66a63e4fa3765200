"""Benchmark: Kubernetes on the lab, from bare machines to an app behind the edge, and its HA.

On a lab of its own (``kubeb``, 3 masters + 2 workers; ``bq-kubernetes`` with ``--quick``):

(a) bare lab machines -> an app serving through the edge: ``deploys/cluster.py --data
    kubernetes=True``, then an agnhost Deployment (2 replicas) behind a Service and an Ingress of
    class nginx, until ``https://<VIP>/hostname`` with the app's Host answers with a pod's name
    (nginx -> a worker's NodePort -> the ingress controller -> the pod). Each run boots the lab
    anew, with a new PKI store. Anchor: the lab's own boot (machines with SSH and systemd up).
(b) a no-change rerun of ``deploys/cluster.py``: seconds and changes (must be 0). Anchor: (a).
(c) API resume after a crash of the master holding the VIP and leading etcd (the worst case:
    etcd leadership is moved there first), under the continuous client of the
    fault tests (metalseed.kubeprobe: numbered ConfigMap writes, lists, a watch; the longest gap
    of the three), restored (machine restarted, cluster whole again) after each crash. Anchor: the
    VRRP formula for the master that takes over, and acknowledged writes lost (must be 0).
(d) requests/s with ``wrk`` (keep-alive, from this host) of ``/hostname`` through the whole edge
    path, next to a peer edge doing the same TLS termination (Debian's HAProxy on the VIP holder,
    same bundle, protocols, ciphers and headers, a fresh upstream connection per request, to the
    same NodePorts: metalseed.render.peer_edge) and next to straight-to-pod (plain HTTP to one
    pod's address, routed through its node for the run). Both ratios are printed.

    .venv/bin/python bench/kubernetes.py [--lab NAME | --name NAME] [--runs 3] [--crashes 5]
                                         [--seconds 5] [--quick]

``--quick``: one run of each, wrk for 1 s per path: it checks that every part runs and that each
path answered the same load without errors, never a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchlab import REPO, add_lab_arguments, lab_for
from tests.lab.app import APP as APP_YAML

from metalseed import edgeprobe, kubeprobe
from metalseed.lab import Lab
from metalseed.lab.inventory import pyinfra_inventory
from metalseed.model import Cluster, cluster_from_inventory
from metalseed.pki.issue import store_for
from metalseed.probe import pyinfra_totals
from metalseed.render import edge as r
from metalseed.render import peer_edge

KUBE_DATA = ("--data", "kubernetes=True")
APP_NS = "bench-app"
APP = "netexec"
PEER_PORT = 8443
CLIENT_NS = "bench-faults"



def say(msg: str) -> None:
    print(msg, flush=True)


def cluster_of(lab: Lab) -> Cluster:
    return cluster_from_inventory(pyinfra_inventory(lab.require_state(), kubernetes=True))


def pyinfra(lab: Lab, playbook: str, timeout: float = 1800) -> tuple[float, dict[str, int]]:
    """Seconds and the Grand total of ``pyinfra -y inventory/lab.py PLAYBOOK --data ...``."""
    argv = [str(Path(sys.executable).with_name("pyinfra")), "-y", "inventory/lab.py", playbook,
            *KUBE_DATA]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=dict(os.environ, METALSEED_LAB=lab.name),
                          capture_output=True, text=True, timeout=timeout, check=False)
    took = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-2000:]}")
    return took, pyinfra_totals(proc.stdout + proc.stderr)


def kubectl(c: Cluster, *args: str, input: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    argv = [str(c.mirror_dir / "bin" / "kubectl"), "--kubeconfig",
            str(c.pki_dir / "kubeconfig" / "admin.conf"), "--request-timeout=20s", *args]
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=120,
                          check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr[-2000:]}")
    return proc


def app_host(c: Cluster) -> str:
    return f"bench.{c.name}.test"


def agnhost_image(c: Cluster) -> str:
    manifest = json.loads((c.mirror_dir / "manifest.json").read_text())
    return next(a["image"] for a in manifest["artifacts"]
                if (a.get("component") or a["name"]) == "agnhost" and a.get("image"))


def deploy_app(c: Cluster, timeout: float = 300) -> str:
    """Apply the app and wait until it answers through the edge; returns the pod that did."""
    kubectl(c, "apply", "-f", "-", input=APP_YAML.format(ns=APP_NS, name=APP, replicas=2, host=app_host(c),
                                                         image=agnhost_image(c)))
    ctx = edgeprobe.tls_context(store_for(c).cert_path("edge/ca"))
    deadline = time.monotonic() + timeout
    seen = "nothing yet"
    while time.monotonic() < deadline:
        try:
            reply = edgeprobe.get(str(c.vip), c.edge.https_port, "/hostname", host=app_host(c),
                                  ctx=ctx, timeout=3)
            if reply.status == 200:
                return reply.body.strip()
            seen = f"HTTP {reply.status}"
        except OSError as e:
            seen = f"{type(e).__name__}: {e}"
        time.sleep(0.2)
    raise SystemExit(f"the app did not answer through the edge within {timeout:.0f}s ({seen})")


# ---------------------------------------------------------------------------------------------
# (a) and (b)


def bare_to_app(lab: Lab, owned: bool) -> tuple[float, float, float]:
    """(lab boot, cluster.py, app answering) seconds for one run from bare machines."""
    boot = float("nan")
    if owned:
        lab.down()
        shutil.rmtree(REPO / "pki" / lab.name, ignore_errors=True)
        start = time.monotonic()
        lab.up(masters=3, workers=2, timeout=300)
        boot = time.monotonic() - start
    c = cluster_of(lab)
    deploy, _ = pyinfra(lab, "deploys/cluster.py")
    start = time.monotonic()
    pod = deploy_app(c)
    app = time.monotonic() - start
    say(f"  run: lab boot {boot:.1f} s, cluster.py {deploy:.1f} s, app answering "
        f"{app:.1f} s later ({pod})")
    return boot, deploy, app


# ---------------------------------------------------------------------------------------------
# (c)


def crash_holder(lab: Lab, c: Cluster) -> tuple[float, dict[str, float], int, str, float]:
    """(resume, gaps, acknowledged writes lost, new holder, seconds until whole again)."""
    victim = kubeprobe.wait_holder(lab, c, expected=r.expected_holder(c).name, timeout=60)
    kubeprobe.lead_etcd(lab, c, victim)  # the worst case, as in the fault test
    try:
        with kubeprobe.ApiClient(c, CLIENT_NS, max_seconds=180) as client:
            client.wait_steady(20, timeout=60)
            t0 = time.monotonic()
            lab.crash(victim)
            new = kubeprobe.wait_holder(lab, c, names=[m.name for m in c.masters
                                                       if m.name != victim], timeout=30)
            client.wait_resumed(t0, count=20, timeout=60)
            time.sleep(2)
            client.finish()
            gaps = client.gaps(t0)
            lost = len(client.lost()) + len(client.unwatched())
            failed = client.failed(t0)
            if failed:
                say(f"  failed requests: {failed[:3]}")
    finally:
        lab.restart(victim, timeout=300)
        whole = kubeprobe.wait_whole(lab, c, 600)
    return max(gaps.values()), gaps, lost, new, whole


# ---------------------------------------------------------------------------------------------
# (d)


def start_peer_edge(lab: Lab, c: Cluster, on: str) -> str:
    """HAProxy on master ``on``'s own address, with the bundle its nginx serves; returns the URL."""
    node = c.node(on)
    bundles = lab.ssh(on, f"ls {r.NGINX_DIR}/edge-*.pem", check=True).stdout.split()
    served = lab.ssh(on, f"grep -o '{r.NGINX_DIR}/edge-[0-9a-f]*.pem' {r.NGINX_CONF} | head -1",
                     check=True).stdout.strip()
    assert served in bundles, (served, bundles)
    conf = peer_edge.haproxy_conf(c, served, node.address, PEER_PORT)
    lab.ssh(on, f"mkdir -p {Path(peer_edge.CONF).parent} && cat > {peer_edge.CONF} && "
            f"haproxy -c -q -f {peer_edge.CONF}", input=conf, check=True)
    lab.ssh(on, ["systemd-run", f"--unit={peer_edge.UNIT}", "--collect", "/usr/sbin/haproxy",
                 "-db", "-f", peer_edge.CONF], check=True)
    edgeprobe.wait_port(str(node.address), PEER_PORT, timeout=20)
    return f"https://{node.address}:{PEER_PORT}/hostname"


def stop_peer_edge(lab: Lab, on: str) -> None:
    lab.ssh(on, ["systemctl", "stop", peer_edge.UNIT])


def pod_url(c: Cluster) -> tuple[str, str, str]:
    """(URL, pod address, its node's address) of one app pod, straight to its port."""
    pods = json.loads(kubectl(c, "-n", APP_NS, "get", "pods", "-l", f"app={APP}", "-o",
                              "json").stdout)["items"]
    ready = [p for p in pods if any(x["type"] == "Ready" and x["status"] == "True"
                                    for x in p["status"].get("conditions", []))]
    p = ready[0]
    node = c.node(p["spec"]["nodeName"])
    ip = p["status"]["podIP"]
    return f"http://{ip}:8080/hostname", ip, str(node.address)


def wrk(url: str, seconds: int, host: str) -> tuple[float, int, str]:
    """Requests/s, requests completed, errors wrk reports ("none")."""
    import re

    cmd = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--timeout", "2s", "-H", f"Host: {host}", url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", res.stdout)
    n = re.search(r"(\d+) requests in ", res.stdout)
    errors = "; ".join(m.group(0) for m in re.finditer(
        r"Non-2xx or 3xx responses: \d+|Socket errors: .*", res.stdout)) or "none"
    return (float(rps.group(1)) if rps else float("nan")), int(n.group(1)) if n else 0, errors


def throughput(lab: Lab, c: Cluster, seconds: int, rounds: int) -> None:
    holder = kubeprobe.wait_holder(lab, c, expected=r.expected_holder(c).name, timeout=60)
    host = app_host(c)
    paths = {"edge": f"https://{c.vip}:{c.edge.https_port}/hostname"}
    direct, pod_ip, via = pod_url(c)
    subprocess.run(["ip", "route", "replace", f"{pod_ip}/32", "via", via], check=True)
    try:
        paths["haproxy"] = start_peer_edge(lab, c, holder)
        paths["pod"] = direct
        rps: dict[str, list[float]] = {k: [] for k in paths}
        errors: dict[str, str] = {}
        for _ in range(rounds):
            for name, url in paths.items():
                got, n, err = wrk(url, seconds, host)
                # Each path answered the load: requests completed, no error answers.
                assert n > 0 and "Non-2xx" not in err, (name, n, err)
                rps[name].append(got)
                errors[name] = err
    finally:
        stop_peer_edge(lab, holder)
        subprocess.run(["ip", "route", "del", f"{pod_ip}/32", "via", via], check=False)
    med = {k: edgeprobe.median(v) for k, v in rps.items()}
    say(f"\n(d) requests/s, wrk -t2 -c32 -d{seconds}s of /hostname, keep-alive, from this host "
        f"(median of {rounds}; wrk shares the 2 cores)")
    say(f"  through the edge (nginx on {holder} -> NodePort -> Traefik -> pod) "
        f"{med['edge']:>9.0f} req/s   errors: {errors['edge']}")
    say(f"  peer edge (HAProxy on {holder} -> NodePort -> Traefik -> pod)  "
        f"{med['haproxy']:>9.0f} req/s   errors: {errors['haproxy']}")
    say(f"  straight to the pod (HTTP {pod_ip}:8080)                      "
        f"{med['pod']:>9.0f} req/s   errors: {errors['pod']}")
    say(f"  edge / peer edge: {med['edge'] / med['haproxy']:.0%}   "
        f"edge / straight to pod: {med['edge'] / med['pod']:.0%}")


# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_lab_arguments(ap, "kubernetes", "kubeb", "3 masters + 2 workers")
    ap.add_argument("--runs", type=int, default=3, help="bare-machine runs (a) and reruns (b)")
    ap.add_argument("--crashes", type=int, default=5, help="VIP holder crashes (c)")
    ap.add_argument("--seconds", type=int, default=5, help="wrk duration per path and round")
    ap.add_argument("--rounds", type=int, default=3, help="wrk rounds over the three paths")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.crashes, args.seconds, args.rounds = 1, 1, 1, 1
    if shutil.which("wrk") is None or shutil.which("haproxy") is None:
        raise SystemExit("bench/kubernetes.py needs wrk and haproxy (bash .ci/setup)")
    with lab_for(args, masters=3, workers=2) as lab:
        measure(lab, args, owned=not args.lab)


def measure(lab: Lab, args: argparse.Namespace, owned: bool) -> None:
    med = edgeprobe.median
    runs = [bare_to_app(lab, owned and i > 0) for i in range(args.runs)]
    c = cluster_of(lab)
    reruns: list[tuple[float, dict[str, int]]] = [pyinfra(lab, "deploys/cluster.py")
                                                  for _ in range(args.runs)]
    changes = [t.get("success", -1) for _, t in reruns]
    say(f"\n(a) bare lab machines -> app serving through the edge (median of {len(runs)})")
    say(f"  cluster.py + app                     {med([d + a for _, d, a in runs]):>7.1f} s   "
        f"(target < 120 s)")
    say(f"    of which deploys/cluster.py        {med([d for _, d, _ in runs]):>7.1f} s")
    say(f"    of which the app until it answers  {med([a for _, _, a in runs]):>7.1f} s")
    boots = [b for b, _, _ in runs if b == b]
    say(f"  anchor: lab boot (SSH + systemd)     {med(boots):>7.1f} s" if boots else
        "  anchor: lab boot: not measured (the first run's lab was booted by lab_for, or --lab)")
    say(f"\n(b) no-change rerun of deploys/cluster.py (median of {len(reruns)})")
    say(f"  rerun                                {med([t for t, _ in reruns]):>7.1f} s   "
        f"{max(changes)} changed (target < 15 s, 0 changes)")
    assert changes == [0] * len(reruns), f"a no-change rerun changed something: {reruns}"

    kubectl(c, "create", "namespace", CLIENT_NS, check=False)
    crashes = [crash_holder(lab, c) for _ in range(args.crashes)]
    formula = r.master_down_interval(c, c.masters[1])
    say(f"\n(c) API resume after a crash of the VIP holder (median of {len(crashes)}, "
        f"edge_failover={c.edge.failover})")
    say(f"  resume (longest gap of writes, lists, watch) {med([x[0] for x in crashes]):>6.2f} s"
        f"   (target < 2 s)")
    say("    runs: " + ", ".join(
        f"{x[0]:.2f} s (w {x[1]['writes']:.2f}/l {x[1]['lists']:.2f}/"
        f"watch {x[1]['watch']:.2f}) -> {x[3]}" for x in crashes))
    say(f"  anchor: VRRP formula for {c.masters[1].name}           {formula:>6.2f} s")
    say(f"  acknowledged writes lost or unwatched    {sum(x[2] for x in crashes):>6d}")
    say(f"  whole again after the restart (median)   {med([x[4] for x in crashes]):>6.1f} s")
    assert sum(x[2] for x in crashes) == 0

    throughput(lab, c, args.seconds, args.rounds)


if __name__ == "__main__":
    # Run as a script, bench/ is first on sys.path and this file's own name shadows the
    # kubernetes client, which metalseed imports lazily ("cannot import name 'client' from
    # 'kubernetes' (bench/kubernetes.py)"): look in bench/ last.
    sys.path.append(sys.path.pop(0))
    main()
