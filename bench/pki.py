"""Benchmark: the full PKI for 3+2 and 3+100 nodes, metalseed against an openssl-CLI script.

The anchor is a shell script, generated from the same profiles, that issues the same CAs and leaves
(same subjects, SANs, usages, key type) with the openssl command line, run in the same process
tree right after ours. Prints medians and the ratio.

    .venv/bin/python bench/pki.py [--runs 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from metalseed.model import Cluster, _HostInput, build_cluster
from metalseed.pki.issue import init_pki
from metalseed.pki.profiles import CLIENT, SERVER, ca_specs, leaf_specs


def cluster(store: Path, workers: int) -> Cluster:
    data = {"cluster_name": "bench", "node_network": "10.50.0.0/16", "vip": "10.50.0.10",
            "pki_store": str(store)}
    hosts = [_HostInput(f"m{i}", ("masters",), {**data, "ssh_hostname": f"10.50.0.{10 + i}"})
             for i in range(1, 4)]
    hosts += [_HostInput(f"w{i}", ("workers",),
                         {**data, "ssh_hostname": f"10.50.{1 + i // 250}.{i % 250 + 1}"})
              for i in range(1, workers + 1)]
    return build_cluster(hosts)


def openssl_script(c: Cluster, root: Path) -> str:
    days = c.pki.leaf_lifetime.days
    lines = ["set -euo pipefail", f"cd {shlex.quote(str(root))}"]
    for ca in ca_specs(c):
        lines.append(f"mkdir -p $(dirname {ca.id})")
        lines.append(
            f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 "
            f"-keyout {ca.id}.key -out {ca.id}.crt -days {c.pki.ca_lifetime.days} "
            f"-subj /CN={ca.common_name} -addext basicConstraints=critical,CA:TRUE,pathlen:0 "
            f"-addext keyUsage=critical,digitalSignature,keyCertSign,cRLSign 2>/dev/null")
    for leaf in leaf_specs(c):
        subj = "".join(f"/O={o}" for o in leaf.organizations) + f"/CN={leaf.common_name}"
        ekus = ",".join(e for u, e in ((SERVER, "serverAuth"), (CLIENT, "clientAuth"))
                        if u in leaf.usages)
        sans = [f"DNS:{d}" for d in leaf.dns_names] + [f"IP:{a}" for a in leaf.ip_addresses]
        ext = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
               f"extendedKeyUsage={ekus}"]
        if sans:
            ext.append("subjectAltName=" + ",".join(sans))
        lines.append(f"mkdir -p $(dirname {leaf.id})")
        lines.append(f"printf '%s\\n' {' '.join(shlex.quote(e) for e in ext)} > {leaf.id}.ext")
        lines.append(
            f"openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
            f"-keyout {leaf.id}.key -subj {shlex.quote(subj)} 2>/dev/null | "
            f"openssl x509 -req -sha256 -days {days} -CA {leaf.ca}.crt -CAkey {leaf.ca}.key "
            f"-CAcreateserial -extfile {leaf.id}.ext -out {leaf.id}.crt 2>/dev/null")
        lines.append(f"chmod 600 {leaf.id}.key")
    lines.append("openssl ecparam -name prime256v1 -genkey -noout -out sa.key")
    lines.append("openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null")
    return "\n".join(lines) + "\n"


def time_metalseed(workers: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        c = cluster(Path(tmp) / "pki", workers)
        t = time.perf_counter()
        init_pki(c, now=dt.datetime.now(dt.UTC))
        elapsed = time.perf_counter() - t
        return elapsed, sum(1 for p in Path(tmp).rglob("*.crt"))


def time_openssl(workers: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pki"
        root.mkdir()
        c = cluster(Path(tmp) / "unused", workers)
        script = openssl_script(c, root)
        t = time.perf_counter()
        subprocess.run(["bash", "-c", script], check=True)
        elapsed = time.perf_counter() - t
        return elapsed, sum(1 for p in root.rglob("*.crt"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(f"{'nodes':>8} {'certs':>6} {'metalseed s':>12} {'openssl-cli s':>14} {'ratio':>7}")
    for workers in (2, 100):
        ours, theirs = [], []
        for _ in range(args.runs):
            t, n_ours = time_metalseed(workers)
            ours.append(t)
            t, n_theirs = time_openssl(workers)
            theirs.append(t)
        assert n_ours == n_theirs, (n_ours, n_theirs)
        m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
        print(f"{'3+' + str(workers):>8} {n_ours:>6} {m_ours:>12.3f} {m_theirs:>14.3f} "
              f"{m_theirs / m_ours:>6.1f}x   (medians of {args.runs}; "
              f"metalseed min/max {min(ours):.3f}/{max(ours):.3f})")


if __name__ == "__main__":
    main()
