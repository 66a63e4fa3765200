"""Every benchmark's ``--quick`` mode runs to the end and prints its figures beside its anchor.

Quick modes check that a bench still runs and that both of its sides did the same work; they never
judge a speed (a loaded CI machine must not fail here). Each lab bench boots a lab of its own
(``bq-<bench>``) and tears it down; this test boots nothing itself and never touches the shared
``test`` lab.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.conftest import lab_unavailable

REPO = Path(__file__).resolve().parents[2]

# bench -> (seconds it may take, figure lines its output must hold). Timeouts are generous
# against the runs seen on a 2-core machine shared with other labs (pki 6 s, lab 8 s, etcd 31 s,
# edge 38 s, rotation 45-60 s): a hung bench fails, a slow one does not.
BENCHES: dict[str, tuple[float, list[str]]] = {
    "pki": (60, [r"^\s+3\+2\s+\d+\s+\d+\.\d{3}\s+\d+\.\d{3}\s+\d+\.\dx"]),
    "lab": (120, [r"up \(all 2 machines: SSH \+ systemd running\)\s+\d+\.\d+ s",
                  r"memory per machine \(PSS\)\s+\d+\.\d MiB",
                  r"ip netns add \+ del\s+\d+\.\d ms"]),
    "etcd": (240, [r"bare lab machines -> healthy cluster\s+\d+\.\d s",
                   r"no-change rerun\s+\d+\.\d s .* 0 changed",
                   r"writes resume after leader crash \(median of 1\)\s+\d+ ms",
                   r"acknowledged writes lost\s+0 ",
                   r"anchor: client put from here \(median\)\s+\d+ ms"]),
    "edge": (300, [r"^fast\s+0\.1s\s+\d+\.\d{3}s\s+\d+\.\d{3}s",
                   r"through the edge \(HTTPS VIP -> 2 workers\):\s+\d+ req/s",
                   r"straight to w1 \(HTTP NodePort\):\s+\d+ req/s"]),
    "tenants": (120, [r"metalseed \(heap of seeds by load\):\s+\d+\.\d ms",
                      r"anchor \(scan every seed per tenant\):\s+\d+\.\d ms\s+ratio \d+\.\dx"]),
}
# bench/mirror.py's --quick is a warm rebuild: on a mirror that is not complete it builds (Go,
# many minutes), so it runs where the mirror is built (.ci/mirror), not here.
NOT_HERE = {"mirror"}
# bench/kubernetes.py --quick takes a bare lab to Kubernetes and an app behind the edge, crashes
# and restores the VIP holder (about 5 minutes here): over the 60 s a quick mode may add to CI.
NOT_HERE |= {"kubernetes"}
# bench/rotation.py --quick (about 100 s here) is the full leaf rotation under load that
# tests/lab/test_rotation.py already runs and checks in CI; it runs by hand.
NOT_HERE |= {"rotation"}
# bench/isolation.py measures on a seed lab that cluster.py and seed.py have deployed (about 4
# minutes from bare machines); tests/lab/test_seed.py checks its probe matrix and that a policy
# change is enforced within 5 s in CI.
NOT_HERE |= {"isolation"}

pytestmark = pytest.mark.lab


def run_bench(name: str, timeout: float) -> tuple[int, str, float]:
    """Run ``bench/<name>.py --quick``. On a timeout the bench gets a SIGTERM first (it then tears
    its lab down), then its own process group (a session of its own: nothing else) is killed, so
    no child it started (pyinfra, ssh) outlives it."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, f"bench/{name}.py", "--quick"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            out = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if out is None:
            out, _ = proc.communicate()
        pytest.fail(f"bench/{name}.py --quick took over {timeout:.0f} s:\n{out[-4000:]}")
    return proc.returncode, out, time.monotonic() - start


@pytest.mark.parametrize("name", list(BENCHES))
def test_quick_mode_runs_and_prints_its_figures(name: str) -> None:
    reason = lab_unavailable()
    if reason and name != "pki":  # the PKI bench needs no lab
        pytest.skip(reason)
    timeout, figures = BENCHES[name]
    code, out, took = run_bench(name, timeout)
    print(f"bench/{name}.py --quick: {took:.1f} s")
    assert code == 0, f"bench/{name}.py --quick exited {code}:\n{out[-4000:]}"
    missing = [f for f in figures if not re.search(f, out, re.MULTILINE)]
    assert not missing, f"bench/{name}.py --quick printed no {missing}:\n{out[-4000:]}"


def test_every_bench_has_a_quick_mode_and_a_quick_test() -> None:
    benches = {p.stem for p in (REPO / "bench").glob("*.py") if p.stem != "benchlab"}
    assert benches == set(BENCHES) | NOT_HERE
    for name in sorted(benches):
        res = subprocess.run([sys.executable, f"bench/{name}.py", "--help"], cwd=REPO,
                             capture_output=True, text=True, timeout=60, check=True)
        assert "--quick" in res.stdout, name
