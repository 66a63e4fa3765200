"""Fixtures for tests on real lab machines (marked ``lab``).

One lab, named ``test`` (3 masters m1-m3, 2 workers w1-w2), is booted once per session and shared
by every lab test (etcd, edge, ...); it is always removed at the end, also after failures. An
operator's own lab (``lab``) is never touched: it has another name, bridge, /24 and netns.
``METALSEED_TEST_LAB=name`` picks another name, so two pytest sessions can run side by side; a
second session on the same name fails at once instead of tearing down the first one's lab.

Tests that inject faults undo them before they return, so later tests find every machine up.

- ``lab``: the :class:`metalseed.lab.Lab`, up; ``$METALSEED_LAB`` is ``test`` while it lives,
  so ``inventory/lab.py`` (and ``pyinfra inventory/lab.py ...``) reads this lab.
- ``lab_inventory``: path of inventory/lab.py.
- ``run_pyinfra``: ``run_pyinfra("deploys/etcd.py")`` runs the pyinfra CLI on the lab from the
  repository root and returns the CompletedProcess (add ``check=False`` to inspect failures).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metalseed.lab import Lab
from tests.lab.kube import (  # noqa: F401
    kube_app,
    kube_cluster,
    kube_data,
    kube_lab,
    kube_run_pyinfra,
)
from tests.lab.labs import (  # noqa: F401  (re-exported: tests import them from here)
    FAILED,
    LAB_INVENTORY,
    MASTERS,
    REPO,
    TEST_LAB,
    WORKERS,
    booted_lab,
    lab_unavailable,
    pyinfra_runner,
    release,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember why a lab test failed, or failed as a known failure (xfail): the run's summary
    repeats it beside the lab timings, near the end of the output, the part CI keeps."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    xfailed = hasattr(report, "wasxfail") and report.skipped
    if item.get_closest_marker("lab") and (report.failed or xfailed):
        crash = getattr(report.longrepr, "reprcrash", None)
        why = crash.message if crash is not None else str(report.longrepr)
        FAILED.append(f"{'XFAIL' if xfailed else 'FAILED'} {item.nodeid} ({report.when}): "
                       f"{' '.join(why.split())[:600]}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``kube`` share one Kubernetes lab (tests/lab/kube.py): run them after every
    other test, so the session lab's tests do not run beside an idle Kubernetes cluster."""
    items.sort(key=lambda item: item.get_closest_marker("kube") is not None)


# The session-scoped labs, by fixture name: each is taken down right after the last test that
# uses it, not at the end of the session, so the labs that come later (the Kubernetes lab, the
# seed lab) do not share this 2-core machine with idle clusters nobody tests any more.
SESSION_LABS = ("lab", "kube_lab")
_LAST_USER: dict[str, str] = {}


def _uses(item: pytest.Item, fixture: str) -> bool:
    """Whether ``item`` uses the session fixture ``fixture`` (a module may override the name
    with a lab of its own, as test_seed.py does with ``lab``)."""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.get(fixture) if info is not None else None
    return bool(defs) and defs[-1].scope == "session"


def pytest_collection_finish(session: pytest.Session) -> None:
    _LAST_USER.clear()
    for item in session.items:  # the final selection and order
        for fixture in SESSION_LABS:
            if _uses(item, fixture):
                _LAST_USER[fixture] = item.nodeid


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    for fixture in SESSION_LABS:
        if nextitem is not None and _LAST_USER.get(fixture) == item.nodeid:
            release(fixture)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    with booted_lab(TEST_LAB, fixture="lab") as the_lab:
        yield the_lab


@pytest.fixture(scope="session")
def lab_inventory(lab: Lab) -> Path:
    return LAB_INVENTORY


@pytest.fixture(scope="session")
def run_pyinfra(lab: Lab) -> Callable[..., subprocess.CompletedProcess[str]]:
    return pyinfra_runner(lab)
