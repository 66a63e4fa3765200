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


class _Response:
    def __init__(self, status: int, text: str) -> None:
        self.status, self.data = status, text.encode()

    def read(self) -> None:
        pass


class _Api:
    """What readyz asks of an ApiClient: a request built, then sent."""

    def __init__(self, status: int, text: str) -> None:
        self.response = _Response(status, text)

    def param_serialize(self, *args: object, **kwargs: object) -> tuple[()]:
        return ()

    def call_api(self, *args: object, **kwargs: object) -> _Response:
        return self.response


def test_readyz_names_the_failing_checks_of_a_long_answer() -> None:
    from metalseed.kube.client import readyz

    assert readyz(_Api(200, "ok")) is None
    checks = "\n".join(f"[+]poststarthook/check-{i} ok" for i in range(40))
    said = readyz(_Api(500, f"[+]ping ok\n{checks}\n[-]shutdown failed: reason withheld\n"
                            "readyz check failed"))
    assert said == "500 [-]shutdown failed: reason withheld"
    assert readyz(_Api(503, "x" * 500)) == "503 " + "x" * 200
