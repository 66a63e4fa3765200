"""Benchmark: the full PKI for 3+2 and 3+100 nodes, metalseed against an openssl-CLI script.

The anchor is a shell script, generated from the same profiles, that issues the same CAs and leaves
(same subjects, SANs, usages, key type) with the openssl command line, and writes the same trust
bundles and kubeconfigs, run in the same process tree right after ours. Both sides must leave the
same set of files (asserted); prints medians and the ratio.

    .venv/bin/python bench/pki.py [--runs 5] [--quick]

``--quick``: 3+2 nodes only, one run (a check that the bench runs, not a measurement).
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
        # Outside a rotation a trust bundle is the CA certificate alone.
        lines.append(f"cp {ca.id}.crt {ca.id}-bundle.crt")
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
        if leaf.kubeconfig:
            lines.append(kubeconfig_lines(c, leaf.kubeconfig, leaf.kubeconfig_server or "",
                                          leaf.common_name, leaf.ca, leaf.id))
    lines.append("openssl ecparam -name prime256v1 -genkey -noout -out sa.key")
    lines.append("openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null")
    return "\n".join(lines) + "\n"


def kubeconfig_lines(c: Cluster, name: str, server: str, user: str, ca: str, leaf: str) -> str:
    """The same kubeconfig YAML as metalseed's (certificates and key inlined as base64)."""
    ctx = f"{user}@{c.name}"
    yaml = (f"apiVersion: v1\nkind: Config\nclusters:\n- name: {c.name}\n  cluster:\n"
            f"    server: {server}\n    certificate-authority-data: %s\nusers:\n- name: {user}\n"
            f"  user:\n    client-certificate-data: %s\n    client-key-data: %s\ncontexts:\n"
            f"- name: {ctx}\n  context:\n    cluster: {c.name}\n    user: {user}\n"
            f"current-context: {ctx}\npreferences: {{}}\n")
    return (f"mkdir -p kubeconfig && (umask 077; printf {shlex.quote(yaml)} "
            f"\"$(base64 -w0 {ca}.crt)\" \"$(base64 -w0 {leaf}.crt)\" \"$(base64 -w0 {leaf}.key)\" "
            f"> kubeconfig/{name}.conf)")


# What both sides leave behind (openssl's own by-products, *.ext and *.srl, are not compared).
OUTPUTS = (".crt", ".key", ".pub", ".conf")


def outputs(root: Path) -> frozenset[str]:
    return frozenset(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in OUTPUTS)


def time_metalseed(workers: int) -> tuple[float, frozenset[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        c = cluster(Path(tmp) / "pki", workers)
        t = time.perf_counter()
        init_pki(c, now=dt.datetime.now(dt.UTC))
        elapsed = time.perf_counter() - t
        return elapsed, outputs(c.pki_dir)


def time_openssl(workers: int) -> tuple[float, frozenset[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pki"
        root.mkdir()
        c = cluster(Path(tmp) / "unused", workers)
        script = openssl_script(c, root)
        t = time.perf_counter()
        subprocess.run(["bash", "-c", script], check=True)
        elapsed = time.perf_counter() - t
        return elapsed, outputs(root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3+2 nodes, one run: does the bench run")
    args = ap.parse_args()
    runs, sizes = (1, (2,)) if args.quick else (args.runs, (2, 100))
    print(f"{'nodes':>8} {'certs':>6} {'metalseed s':>12} {'openssl-cli s':>14} {'ratio':>7}")
    for workers in sizes:
        ours, theirs = [], []
        for _ in range(runs):
            t, files_ours = time_metalseed(workers)
            ours.append(t)
            t, files_theirs = time_openssl(workers)
            theirs.append(t)
            # The same work on both sides: every certificate, key, trust bundle and kubeconfig.
            assert files_ours == files_theirs, sorted(files_ours ^ files_theirs)
        n_ours = sum(1 for f in files_ours if f.endswith(".crt") and not f.endswith("-bundle.crt"))
        m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
        print(f"{'3+' + str(workers):>8} {n_ours:>6} {m_ours:>12.3f} {m_theirs:>14.3f} "
              f"{m_theirs / m_ours:>6.1f}x   (medians of {runs}; "
              f"metalseed min/max {min(ours):.3f}/{max(ours):.3f})")


if __name__ == "__main__":
    main()
