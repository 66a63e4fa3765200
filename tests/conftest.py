"""The run's summary of the lab tests, and where pytest-xdist runs them.

Loaded by pytest-xdist's controller too (it collects nothing itself, so tests/lab/conftest.py is
never loaded there): the scheduler and the summary hooks live here.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.lab.kube import TIMINGS, UPGRADE
from tests.lab.labs import FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `pytest -n 2` (the README's command), every test under tests/lab/ runs in one
    worker, in collection order (they share session labs, and this machine has room for one lab
    test at a time), and the unit and @fake tests run beside them in the other worker, a module
    at a time (tests of one module may share host paths: test_artifacts.py's /var/tmp)."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LabsTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return "tests/lab/" if nodeid.startswith("tests/lab/") else nodeid.split("::")[0]

    return LabsTogether(config, log)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker: hand what the summary reports to the controller."""
    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        out["metalseed_lab"] = {"failed": FAILED, "timings": TIMINGS, "seen": UPGRADE.get("seen")}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    got = getattr(node, "workeroutput", {}).get("metalseed_lab")
    if got:
        FAILED.extend(got["failed"])
        TIMINGS.update(got["timings"])
        if got["seen"]:
            UPGRADE["seen"] = got["seen"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Why lab tests failed, and the shared Kubernetes lab's timings (deploy, upgrade), in the
    run's summary: CI keeps only its end, and the fixtures' own prints are captured."""
    if FAILED:
        terminalreporter.section("why lab tests failed")
        for line in FAILED:
            terminalreporter.write_line(line)
    if not TIMINGS:
        return
    terminalreporter.section("shared Kubernetes lab")
    for what, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{seconds:7.1f} s  {what}")
    seen = UPGRADE.get("seen")
    if seen:
        terminalreporter.write_line(
            f"upgrade under a client through the VIP: {seen['ok']} ok, {seen['failed']} failed; "
            f"fewest available replicas of the PDB workload: {seen['min_available']}")
