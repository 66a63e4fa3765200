"""Reading ginkgo's JSON report into conformance counts, and the command line (pure parts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metalseed.errors import KubernetesError
from metalseed.kube.conformance import SkipClass, ginkgo_argv, load_report, outcome


def spec(text: str, state: str, message: str = "", node: str = "It",
         containers: tuple[str, ...] = ("[sig-node] Pods",)) -> dict[str, object]:
    s: dict[str, object] = {"ContainerHierarchyTexts": list(containers), "LeafNodeText": text,
                            "LeafNodeType": node, "State": state, "RunTime": 2_500_000_000}
    if message:
        s["Failure"] = {"Message": message}
    return s


NGINX = SkipClass("needs the nginx image", (r"should serve nginx",))


def test_counts_only_selected_specs_with_a_reason_for_every_skip() -> None:
    report = [{
        "RunTime": 90_000_000_000,
        "SpecReports": [
            spec("", "passed", node="SynchronizedBeforeSuite", containers=()),
            spec("should run [Conformance]", "passed"),
            spec("should fail [Conformance]", "failed", "timed out waiting for pod\nmore detail"),
            spec("should serve nginx [Conformance]", "skipped"),
            spec("needs two nodes [Conformance]", "skipped", "Requires at least 2 nodes (not 1)"),
            spec("is serial [Serial] [Conformance]", "skipped"),
            spec("is not conformance", "skipped"),
            spec("is not conformance either", "passed"),
        ],
    }]
    out = outcome(report, (NGINX,), not_run={r"\[Serial\]": "serial: left out of the parallel run"})
    assert out.passed == ["[sig-node] Pods should run [Conformance]"]
    assert out.failed == [("[sig-node] Pods should fail [Conformance]", "timed out waiting for pod")]
    assert out.skipped == {
        "needs the nginx image": ["[sig-node] Pods should serve nginx [Conformance]"],
        "e2e skipped itself: Requires at least 2 nodes (not 1)":
            ["[sig-node] Pods needs two nodes [Conformance]"],
        "serial: left out of the parallel run": ["[sig-node] Pods is serial [Serial] [Conformance]"],
    }
    assert out.skipped_count == 3 and out.seconds == 90.0
    assert out.line() == "conformance: passed=1 failed=1 skipped=3 in 90s"
    assert "FAILED [sig-node] Pods should fail [Conformance]" in out.table()


def test_a_failed_suite_setup_is_a_failure_even_with_no_spec_run() -> None:
    report = [{"SpecReports": [spec("", "failed", "nodes not ready", node="SynchronizedBeforeSuite"),
                               spec("x [Conformance]", "skipped")]}]
    out = outcome(report)
    assert out.failed == [("SynchronizedBeforeSuite", "nodes not ready")]
    assert not out.passed


def test_argv_runs_the_mirror_suite_with_every_skip_pattern(tmp_path: Path) -> None:
    argv = ginkgo_argv(Path("/m"), Path("/k/admin.conf"), tmp_path, skips=(NGINX,),
                       extra_skip=(r"\[Serial\]",), procs=3, timeout_s=300)
    assert argv[:3] == ["/m/bin/ginkgo", "run", "--procs=3"]
    assert r"--skip=(?:should serve nginx)|(?:\[Serial\])" in argv
    assert argv[argv.index("--") - 1] == "/m/bin/e2e.test"
    assert "--kubeconfig=/k/admin.conf" in argv and "--kubectl-path=/m/bin/kubectl" in argv
    assert "--timeout=300s" in argv


def test_report_must_be_a_ginkgo_report(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(KubernetesError, match="list of suites"):
        load_report(tmp_path / "r.json")
    with pytest.raises(KubernetesError, match="no readable"):
        load_report(tmp_path / "missing.json")
