"""kube/client.py's waits: a timeout names what it saw last and, read once, why."""

from __future__ import annotations

import pytest


def test_a_wait_that_times_out_explains_once_why() -> None:
    from metalseed.errors import HealthCheckError
    from metalseed.kube.client import wait_for

    asked: list[int] = []

    def explain() -> str:
        asked.append(1)
        return "pod cp-1: kube-controller-manager: waiting CrashLoopBackOff, restarts=3"

    with pytest.raises(HealthCheckError, match=r"last: 0/1 ready; pod cp-1: .*restarts=3"):
        wait_for("Deployment t/cp", "condition Available=True", lambda: "0/1 ready", 0,
                 explain=explain)
    assert asked == [1]
