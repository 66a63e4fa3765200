"""Kubernetes conformance specs against a cluster: the mirror's ``e2e.test`` run by its ``ginkgo``.

Pure parts (the command line, reading ginkgo's JSON report into counts) are separate from
:func:`run`, which starts the processes. A spec is *selected* when its text says [Conformance];
selected specs end up passed, failed, skipped by us (a :class:`SkipClass`, each with the reason the
lab cannot run it) or skipped by e2e itself (``e2eskipper``: the message says why). Specs the focus
never selected (the suite's thousands of others) are not counted anywhere.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metalseed.errors import KubernetesError

CONFORMANCE = r"\[Conformance\]"
FAILED_STATES = {"failed", "panicked", "timedout", "interrupted", "aborted"}
SERIAL = r"\[Serial\]|\[Disruptive\]"


@dataclass(frozen=True)
class SkipClass:
    """Specs the lab cannot run, and why: ``patterns`` are regexes over the spec's full text."""

    reason: str
    patterns: tuple[str, ...]

    def matches(self, text: str) -> bool:
        return any(re.search(p, text) for p in self.patterns)


@dataclass
class Outcome:
    passed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (spec, first line of the failure)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> specs
    seconds: float = 0.0
    spec_seconds: dict[str, float] = field(default_factory=dict)  # spec -> its own run time

    @property
    def skipped_count(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def line(self) -> str:
        return (f"conformance: passed={len(self.passed)} failed={len(self.failed)} "
                f"skipped={self.skipped_count} in {self.seconds:.0f}s")

    def table(self) -> str:
        out = [self.line()]
        for spec, why in self.failed:
            out.append(f"  FAILED {spec}: {why}")
        for reason, specs in sorted(self.skipped.items(), key=lambda kv: -len(kv[1])):
            out.append(f"  skipped {len(specs):3d}: {reason}")
        return "\n".join(out)


# Conformance specs the lab cannot run, each with the reason (what the mirror lacks).
LAB_SKIPS: tuple[SkipClass, ...] = (
    SkipClass("needs the kitten and nautilus images (agnhost with upstream's pictures): not in the mirror",
              (r"Kubectl client Update Demo",)),
    SkipClass("needs sample-apiserver 1.29.2 and etcd 3.6.8-0 images: not in the mirror",
              (r"Sample API Server using the current Aggregator",)),
)


def alternation(patterns: list[str] | tuple[str, ...]) -> str:
    return "|".join(f"(?:{p})" for p in patterns)


def ginkgo_argv(mirror: Path, kubeconfig: Path, report_dir: Path, *, focus: str = CONFORMANCE,
                skips: tuple[SkipClass, ...] = (), extra_skip: tuple[str, ...] = (),
                procs: int = 4, timeout_s: int = 3600) -> list[str]:
    """ginkgo running the mirror's e2e.test on ``procs`` processes, a JSON report in report_dir."""
    # ginkgo runs e2e.test from the binary's directory: relative paths would point elsewhere.
    mirror, kubeconfig, report_dir = mirror.resolve(), kubeconfig.resolve(), report_dir.resolve()
    skip = alternation([p for s in skips for p in s.patterns] + list(extra_skip))
    argv = [str(mirror / "bin" / "ginkgo"), "run", f"--procs={procs}", "--no-color",
            f"--focus={focus}", f"--timeout={timeout_s}s", f"--output-dir={report_dir}",
            "--json-report=report.json", "--poll-progress-after=300s"]
    if skip:
        argv.append(f"--skip={skip}")
    argv += [
        str(mirror / "bin" / "e2e.test"), "--",
        f"--kubeconfig={kubeconfig}",
        f"--kubectl-path={mirror / 'bin' / 'kubectl'}",
        "--provider=skeleton",
        # The log dump runs upstream's cluster/log-dump.sh, which this machine does not have.
        "--disable-log-dump",
        "--dump-logs-on-failure=false",
        f"--report-dir={report_dir}",
    ]
    return argv


def spec_text(spec: dict[str, Any]) -> str:
    parts = [*(spec.get("ContainerHierarchyTexts") or []), spec.get("LeafNodeText", "")]
    return " ".join(p for p in parts if p)


def outcome(report: list[dict[str, Any]], skips: tuple[SkipClass, ...] = (),
            not_run: dict[str, str] | None = None, focus: str = CONFORMANCE) -> Outcome:
    """Counts of the selected specs in a ginkgo JSON report (one suite report per list entry).

    ``not_run``: regex -> reason for specs left out on purpose that no SkipClass names (such as
    [Serial] ones when the run is parallel-only).
    """
    out = Outcome()
    for suite in report:
        out.seconds = max(out.seconds, float(suite.get("RunTime", 0)) / 1e9)
        for spec in suite.get("SpecReports") or []:
            if spec.get("LeafNodeType") != "It":
                # A failed BeforeSuite fails every spec: say so rather than count nothing.
                if spec.get("State") in FAILED_STATES:
                    out.failed.append((spec.get("LeafNodeType", "?"), _first_line(spec)))
                continue
            text = spec_text(spec)
            if not re.search(focus, text):
                continue
            state = spec.get("State")
            out.spec_seconds[text] = float(spec.get("RunTime", 0)) / 1e9
            if state == "passed":
                out.passed.append(text)
            elif state in FAILED_STATES:
                out.failed.append((text, _first_line(spec)))
            elif state in ("skipped", "pending"):
                out.skipped.setdefault(_skip_reason(spec, text, skips, not_run or {}), []).append(text)
            else:
                out.failed.append((text, f"unknown state {state!r}"))
    return out


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(spec: dict[str, Any]) -> str:
    msg = ANSI.sub("", str((spec.get("Failure") or {}).get("Message", ""))).strip()
    return msg.splitlines()[0][:300] if msg else "(no message)"


def _skip_reason(spec: dict[str, Any], text: str, skips: tuple[SkipClass, ...],
                 not_run: dict[str, str]) -> str:
    for s in skips:
        if s.matches(text):
            return s.reason
    msg = str((spec.get("Failure") or {}).get("Message", "")).strip()
    if msg:  # e2eskipper.Skipf at run time: its message is the reason
        return "e2e skipped itself: " + re.sub(r"\s+", " ", msg)[:200]
    for pattern, reason in not_run.items():
        if re.search(pattern, text):
            return reason
    return "not run (filtered out)"


def load_report(path: Path) -> list[dict[str, Any]]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise KubernetesError(f"no readable ginkgo report at {path}: {e}") from e
    if not isinstance(doc, list):
        raise KubernetesError(f"{path}: a ginkgo JSON report is a list of suites, found {type(doc).__name__}")
    return doc


def run(argv: list[str], report_dir: Path, log: Path, timeout_s: float) -> tuple[int, float]:
    """Run ginkgo, its output into ``log``; the exit code (non-zero when a spec failed) and seconds."""
    report_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log.open("w") as f:
        try:
            proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired as e:
            raise KubernetesError(f"conformance run did not end within {timeout_s:.0f}s (log: {log})") from e
        except OSError as e:
            raise KubernetesError(f"cannot run {argv[0]}: {e}") from e
    return proc.returncode, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    """``python -m metalseed.kube.conformance``: a conformance run by hand, its table printed."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m metalseed.kube.conformance")
    p.add_argument("--mirror", type=Path, required=True, help="the mirror root (bin/e2e.test, bin/ginkgo)")
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="directory for the log and report.json")
    p.add_argument("--focus", default=CONFORMANCE)
    p.add_argument("--skip", action="append", default=[], help="a further regex to leave out")
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--timeout", type=int, default=3600, help="seconds for the whole run")
    p.add_argument("--no-lab-skips", action="store_true", help="run even what LAB_SKIPS leaves out")
    a = p.parse_args(argv)
    skips = () if a.no_lab_skips else LAB_SKIPS
    args = ginkgo_argv(a.mirror, a.kubeconfig, a.out, focus=a.focus, skips=skips,
                       extra_skip=tuple(a.skip), procs=a.procs, timeout_s=a.timeout)
    rc, seconds = run(args, a.out, a.out / "ginkgo.log", a.timeout + 300)
    result = outcome(load_report(a.out / "report.json"), skips,
                     not_run={s: f"left out by --skip {s}" for s in a.skip}, focus=a.focus)
    print(result.table())
    print(f"ginkgo exit {rc}, {seconds:.0f}s wall")
    return 0 if not result.failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
