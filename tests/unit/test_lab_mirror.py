"""The lab's mirror: recorded in the state, handed to the inventory, guarded against PID reuse."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

from metalseed.lab import inventory as inv
from metalseed.lab import mirror as mirrormod
from metalseed.lab import plan as planmod
from metalseed.lab import state as st
from metalseed.model import cluster_from_inventory


def sample(mirror: bool = True) -> st.LabState:
    p = planmod.plan_lab("lab", 1, 1, ipaddress.IPv4Network("10.213.7.0/24"))
    s = st.state_from_plan(p, Path("/var/lib/metalseed/lab/lab/id_ed25519"))
    if not mirror:
        return s
    return dataclasses.replace(s, mirror_root=Path("/srv/mirror"), mirror_pid=4321,
                               mirror_url=mirrormod.url(s.bridge_address))


def test_state_round_trip_keeps_the_mirror() -> None:
    s = sample()
    assert st.parse_state(st.dump_state(s)) == s
    assert s.mirror_url == f"http://10.213.7.1:{mirrormod.MIRROR_PORT}"
    assert st.parse_state(st.dump_state(sample(mirror=False))).mirror_pid is None


def test_inventory_points_the_model_at_the_lab_mirror() -> None:
    cluster = cluster_from_inventory(inv.pyinfra_inventory(sample()))
    assert cluster.mirror_url == "http://10.213.7.1:5080"
    assert cluster.mirror_dir == Path("/srv/mirror")
    assert "mirror_url" not in inv.cluster_data(sample(mirror=False))


def test_a_host_that_cannot_lower_oom_scores_makes_containerd_clamp_them() -> None:
    s = dataclasses.replace(sample(), oom_score_adj_restricted=True)
    assert st.parse_state(st.dump_state(s)).oom_score_adj_restricted
    assert cluster_from_inventory(inv.pyinfra_inventory(s)).containerd_restrict_oom_score_adj
    assert not cluster_from_inventory(inv.pyinfra_inventory(sample())).containerd_restrict_oom_score_adj


def test_the_server_listens_on_the_bridge_address_only() -> None:
    argv = mirrormod.argv(Path("/srv/mirror"), ipaddress.IPv4Address("10.213.7.1"))
    assert argv[-4:] == ["--root", "/srv/mirror", "--listen", "10.213.7.1:5080"]


def test_a_foreign_process_is_never_taken_for_the_server(tmp_path: Path) -> None:
    paths = st.LabPaths(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "mirror", "serve"])
    try:
        assert not mirrormod.is_ours(other.pid, paths), "same words, not our log: not ours"
        mirrormod.stop(paths, [other.pid])
        assert other.poll() is None, "stop() signals only the lab's own server"
    finally:
        other.kill()
        other.wait()
    assert not mirrormod.is_ours(os.getpid() + 10**6, paths)
