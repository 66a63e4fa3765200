"""The lab's real-time budget in a cgroup v1 cpu hierarchy (a directory tree standing in for it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalseed.lab import cgroup
from metalseed.model import FAILOVER_ADVERT_INT


def tree(root: Path, *levels: str) -> Path:
    d = root
    for part in ("", *levels):
        d = d / part if part else d
        d.mkdir(exist_ok=True)
        (d / "cpu.rt_runtime_us").write_text("950000\n" if d == root else "0\n")
        (d / "cpu.rt_period_us").write_text("1000000\n")
    return d


def test_every_level_gets_its_budget_parents_first(tmp_path: Path) -> None:
    leaf = tree(tmp_path, "metalseed", "lab", "m1")
    cgroup._grant_rt(tmp_path, leaf)
    got = [tuple(int((tmp_path.joinpath(*p) / f"cpu.rt_{k}_us").read_text())
                 for k in ("runtime", "period"))
           for p in (("metalseed",), ("metalseed", "lab"), ("metalseed", "lab", "m1"))]
    assert got == list(cgroup.RT_BUDGET)


def test_the_budgets_fit_the_kernels_share_and_a_machines_period_is_shorter_than_a_failover(
        ) -> None:
    def share(level: int) -> float:
        runtime, period = cgroup.RT_BUDGET[level]
        return runtime / period

    assert share(0) <= 0.95  # the kernel's own (kernel.sched_rt_runtime_us)
    assert 6 * share(1) <= share(0) and 10 * share(2) <= share(1)  # 6 labs of 10 machines
    runtime, period = cgroup.RT_BUDGET[2]
    # A keepalived that overran its budget once waits out the rest of its period; that must be
    # well inside fast failover's master-down interval (3 adverts of 0.1 s), or a backup takes
    # the VIP from a holder that is only throttled.
    assert (period - runtime) / 1e6 <= FAILOVER_ADVERT_INT["fast"]


def test_a_budget_already_set_is_kept(tmp_path: Path) -> None:
    leaf = tree(tmp_path, "metalseed", "lab", "m1")
    (tmp_path / "metalseed" / "cpu.rt_runtime_us").write_text("700000")
    cgroup._grant_rt(tmp_path, leaf)
    assert (tmp_path / "metalseed" / "cpu.rt_runtime_us").read_text() == "700000"


def test_a_refused_write_leaves_the_machine_without_real_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    leaf = tree(tmp_path, "metalseed", "lab", "m1")
    refused = tmp_path / "metalseed" / "lab" / "cpu.rt_runtime_us"
    write = Path.write_text

    def kernel(self: Path, text: str) -> int:
        if self == refused:  # EINVAL: the parent cannot cover the budget (other labs hold it)
            raise OSError(22, "Invalid argument")
        return write(self, text)

    monkeypatch.setattr(Path, "write_text", kernel)
    cgroup._grant_rt(tmp_path, leaf)
    assert (leaf / "cpu.rt_runtime_us").read_text() == "0\n"
