"""Benchmark: the mirror build - warm no-op against the physical floor, artifact sizes, cold build.

Warm: ``metalseed mirror build`` on a complete mirror (every component's key matches, every artifact's
sha256 is rechecked) next to the anchor run in the same process: sha256 of every artifact file,
each real file once (the floor any verified reuse must pay), plus one ``go version`` (the driver
asks Go for its version to key the build). Both sides must cover the same files (asserted).

    .venv/bin/python bench/mirror.py [--runs 5] [--quick] [--root DIR]
    .venv/bin/python bench/mirror.py --from-log /tmp/mirror-cold.log   # per-component cold figures
    .venv/bin/python bench/mirror.py --cold [--only C]  # cold build in temporary Go caches (~1 h; not CI)

``--quick``: one warm run and one anchor run (a check that the bench runs, not a measurement); the
mirror must already be built (CI builds it first, with .ci/mirror).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from metalseed.mirror import default_root, load_manifest, sha256_file
from metalseed.mirror.build import Builder

STEP = re.compile(r"^\[\s*([\d.]+)s\] (\S+): (.+): done in ([\d.]+)s$")
BUILT = re.compile(r"^\[\s*([\d.]+)s\] (\S+): built (\S+) in ([\d.]+)s$")
TOTAL = re.compile(r"^\[\s*([\d.]+)s\] mirror: (\d+) built, (\d+) cached, total ([\d.]+)s$")


def warm(root: Path) -> tuple[float, set[str]]:
    """One no-op build; returns its time and the files its cache check hashed."""
    b = Builder(root, log=io.StringIO())
    t = time.perf_counter()
    report = b.build()
    elapsed = time.perf_counter() - t
    assert report.built == [], f"a warm build rebuilt {report.built}: the mirror was not complete"
    return elapsed, {a.path for a in load_manifest(root).artifacts}


def anchor(root: Path) -> tuple[float, set[str]]:
    t = time.perf_counter()
    paths, hashed = set(), set()
    for a in load_manifest(root).artifacts:
        real = (root / a.path).resolve()
        if real not in hashed:  # links to one multi-call binary: hashed once, as the build does
            sha256_file(real)
            hashed.add(real)
        paths.add(a.path)
    subprocess.run(["go", "version"], check=True, capture_output=True)
    return time.perf_counter() - t, paths


def sizes(root: Path) -> None:
    m = load_manifest(root)
    by: dict[str, dict[str, int]] = defaultdict(lambda: {"binary": 0, "image": 0, "data": 0})
    seen: set[str] = set()
    for a in m.artifacts:
        real = os.path.realpath(root / a.path)
        if real in seen:  # multi-call names are links to one file
            continue
        seen.add(real)
        by[a.component][a.kind] += a.size
    print(f"{'component':<20} {'binaries MB':>12} {'images MB':>10}")
    for comp, s in by.items():
        print(f"{comp:<20} {s['binary'] / 1e6:>12.1f} {s['image'] / 1e6:>10.1f}")
    blobs = sum(p.stat().st_size for p in (root / "blobs" / "sha256").iterdir())
    binaries = sum(s["binary"] for s in by.values())
    images = sum(s["image"] for s in by.values())
    print(
        f"{'total':<20} {binaries / 1e6:>12.1f} {images / 1e6:>10.1f}   registry blobs {blobs / 1e6:.1f} MB, "
        f"{len(m.artifacts)} artifacts"
    )


def from_log(path: Path) -> None:
    per: dict[str, float] = {}
    steps: dict[str, list[str]] = defaultdict(list)
    total = None
    for line in path.read_text().splitlines():
        if m := BUILT.match(line):
            per[m[2]] = float(m[4])
        elif m := STEP.match(line):
            steps[m[2]].append(f"{m[3]} {float(m[4]):.0f}s")
        elif m := TOTAL.match(line):
            total = float(m[4])
    print(f"cold build from {path}:")
    for comp, secs in per.items():
        detail = ", ".join(s for s in steps[comp] if not s.startswith("image"))
        print(f"  {comp:<20} {secs:>7.1f} s   ({detail})")
    if total is not None:
        print(f"  {'total':<20} {total:>7.1f} s   ({total / 60:.1f} min)")


def cold(only: list[str] | None) -> None:
    with tempfile.TemporaryDirectory(prefix="mirror-cold-") as tmp:
        env = {"GOMODCACHE": f"{tmp}/mod", "GOCACHE": f"{tmp}/build"}
        try:
            t = time.perf_counter()
            report = Builder(Path(tmp) / "mirror", env=env, log=sys.stdout).build(only=only)
            print(f"cold build in empty Go caches: {time.perf_counter() - t:.1f} s")
            for comp, secs in report.component_seconds().items():
                print(f"  {comp:<20} {secs:>7.1f} s")
        finally:
            subprocess.run(["chmod", "-R", "u+w", tmp], check=False)  # Go's module cache is read-only


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one run each: does the bench run")
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--from-log", type=Path, default=None, help="print cold figures from a build log")
    ap.add_argument("--cold", action="store_true", help="cold build in temporary Go caches (slow)")
    ap.add_argument("--only", action="append", default=None, metavar="COMPONENT", help="with --cold")
    args = ap.parse_args()
    if args.from_log:
        from_log(args.from_log)
        return
    if args.cold:
        cold(args.only)
        return
    root = args.root or default_root()
    runs = 1 if args.quick else args.runs
    ours, theirs = [], []
    for _ in range(runs):
        t, files_ours = warm(root)
        ours.append(t)
        t, files_theirs = anchor(root)
        theirs.append(t)
        # The same work on both sides: every artifact in the manifest hashed once.
        assert files_ours == files_theirs, sorted(files_ours ^ files_theirs)
    m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
    n = len(files_ours)
    print(f"warm no-op mirror build            {m_ours:.2f} s   (median of {runs}; {n} artifacts rechecked)")
    print(f"anchor: sha256 of all + go version {m_theirs:.2f} s   ratio {m_ours / m_theirs:.2f}x")
    sizes(root)


if __name__ == "__main__":
    main()
