"""The lab on real machines: boot, isolation, faults, inventory, and a clean `down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra

from metalseed.lab import Lab
from metalseed.lab import plan as planmod

from .conftest import LAB_INVENTORY, MASTERS, REPO, TEST_LAB, WORKERS, lab_unavailable

pytestmark = pytest.mark.lab

HOST_ETH0 = "192.0.2.2"  # the host's own uplink address: the only outside address probed
DOWN_LAB = f"{TEST_LAB}-down"  # beside the session lab, never colliding with it


def reach(lab: Lab, src: str, dst: str, port: int = 22) -> tuple[bool, bool]:
    """(ping works, TCP connect works) from machine ``src`` to ``dst`` (a name or address)."""
    out = lab.ssh(
        src,
        f"ping -c1 -W1 {dst} >/dev/null 2>&1; echo $?; "
        f"timeout 2 bash -c '</dev/tcp/{dst}/{port}' >/dev/null 2>&1; echo $?",
        check=True,
    ).stdout.split()
    return out[0] == "0", out[1] == "0"


def wait_for(check, timeout: float = 10, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False


# ---- boot --------------------------------------------------------------------------------


def test_every_machine_runs_systemd_with_its_own_identity(lab: Lab) -> None:
    names = [m.name for m in lab.machines]
    assert names == [f"m{i}" for i in range(1, MASTERS + 1)] + [
        f"w{i}" for i in range(1, WORKERS + 1)
    ]
    ids = set()
    for m in lab.machines:
        out = lab.ssh(
            m.name,
            "systemctl is-system-running; hostname; cat /etc/machine-id; "
            "ip -o -4 addr show dev eth0",
        ).stdout.split("\n")
        assert out[0] in ("running", "degraded"), (m.name, out)
        assert out[1] == m.name
        ids.add(out[2])
        assert f"inet {m.address}/24" in out[3]
    assert len(ids) == len(names), "every machine has its own machine-id"


def test_root_shell_is_plain(lab: Lab) -> None:
    out = lab.ssh("m1", "echo $PATH; cat ~/.bashrc; ls -A /root | xargs").stdout
    assert "pyenv" not in out
    assert sorted(out.split("\n")[-2].split()) == [".bashrc", ".profile", ".ssh"]


def test_machines_reach_each_other(lab: Lab) -> None:
    for src in lab.machines:
        for dst in lab.machines:
            if dst.name != src.name:
                assert reach(lab, src.name, str(dst.address)) == (True, True), (src, dst)
        # And by name: /etc/hosts lists the lab.
        assert reach(lab, src.name, "m1" if src.name != "m1" else "w1") == (True, True)


def test_machines_reach_nothing_outside(lab: Lab) -> None:
    s = lab.require_state()
    for m in lab.machines:
        routes = lab.ssh(m.name, "ip -4 route show table all type unicast").stdout
        assert "default" not in routes
        assert routes.strip() == f"{s.subnet} dev eth0 proto kernel scope link src {m.address}"
        out = lab.ssh(
            m.name, f"timeout 3 bash -c '</dev/tcp/{HOST_ETH0}/22' 2>&1; echo rc=$?"
        ).stdout
        assert "Network is unreachable" in out and "rc=0" not in out


def test_vip_is_reserved(lab: Lab) -> None:
    # The session lab is shared: keepalived (edge tests) may hold the VIP by now, so only the
    # plan is checked here; the fresh lab of the `down` test checks that nobody holds it at boot.
    s = lab.require_state()
    assert lab.vip in s.subnet
    assert lab.vip not in {m.address for m in lab.machines}
    assert lab.vip != s.bridge_address


def test_machines_live_in_their_own_cgroups(lab: Lab) -> None:
    pids = {m.name: lab.pids(m.name) for m in lab.machines}
    for name, mine in pids.items():
        assert mine, name
        for other, theirs in pids.items():
            if other != name:
                assert not mine & theirs
        assert lab.memory(name) > 1 << 20


def test_testinfra_sees_services_and_files(lab: Lab) -> None:
    m = lab.machines[0]
    host = testinfra.get_host(
        f"ssh://root@{m.address}",
        ssh_identity_file=str(lab.key),
        ssh_extra_args="-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
        " -o LogLevel=ERROR",
    )
    assert host.service("ssh").is_running
    assert host.file("/etc/hostname").content_string.strip() == m.name
    assert host.file("/root/.ssh/authorized_keys").mode == 0o600
    assert host.file("/root/.ssh/authorized_keys").contains("metalseed-lab-")
    assert host.socket("tcp://0.0.0.0:22").is_listening


# ---- inventory ---------------------------------------------------------------------------


INVENTORY_PROBE = """
import json, sys
from metalseed.model import load_cluster
c = load_cluster(sys.argv[1])
print(json.dumps({"name": c.name, "vip": str(c.vip), "vip_interface": c.vip_interface,
                  "node_network": str(c.node_network),
                  "nodes": [[n.name, str(n.address), n.role] for n in c.nodes]}))
"""


def test_inventory_matches_the_lab(lab: Lab, lab_inventory: Path) -> None:
    # In a fresh interpreter, as an operator's pyinfra run reads it (pyinfra's gevent patching
    # does not mix with the threads earlier tests started in this one).
    proc = subprocess.run(
        [sys.executable, "-c", INVENTORY_PROBE, str(lab_inventory)],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ, METALSEED_LAB=lab.name),
    )
    assert proc.returncode == 0, proc.stderr
    cluster = json.loads(proc.stdout)
    assert cluster == {
        "name": lab.name,
        "vip": str(lab.vip),
        "vip_interface": "eth0",
        "node_network": str(lab.subnet),
        "nodes": [[m.name, str(m.address), m.role] for m in lab.machines],
    }


def test_pyinfra_cli_runs_on_the_lab(run_pyinfra) -> None:
    proc = run_pyinfra("exec", "--", "cat /etc/hostname")
    for name in ("m1", "m2", "m3", "w1", "w2"):
        assert f"[{name}] {name}" in proc.stdout + proc.stderr


def test_cli_status_lists_machines(lab: Lab) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "metalseed.cli", "lab", "status", "--name", lab.name],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    rows = [line.split() for line in proc.stdout.splitlines()]
    for m in lab.machines:
        assert [m.name, m.role, str(m.address), "running"] in rows, proc.stdout


# ---- faults, seen from another machine ---------------------------------------------------


def test_cut_and_restore(lab: Lab) -> None:
    assert reach(lab, "m1", "w1") == (True, True)
    lab.cut("w1")
    try:
        assert reach(lab, "m1", "w1") == (False, False)
        assert [s.state for s in lab.status() if s.name == "w1"] == ["cut"]
    finally:
        lab.restore("w1")
    assert wait_for(lambda: reach(lab, "m1", "w1") == (True, True))


def test_freeze_and_thaw(lab: Lab) -> None:
    lab.ssh("w1", "systemd-run --unit=ms-ticker --property=Restart=no "
            "/bin/sh -c 'while :; do date +%s.%N > /run/tick; sleep 0.1; done'", check=True)
    try:
        lab.freeze("w1")
        try:
            assert reach(lab, "m1", "w1") == (False, False)
            assert [s.state for s in lab.status() if s.name == "w1"] == ["frozen"]
            tick = (Path(f"/proc/{lab.require_state().machine('w1').leader_pid}/root/run/tick")
                    .read_text())
            time.sleep(0.5)
            assert Path(
                f"/proc/{lab.require_state().machine('w1').leader_pid}/root/run/tick"
            ).read_text() == tick, "no process of a frozen machine runs"
        finally:
            lab.thaw("w1")
        assert wait_for(lambda: reach(lab, "m1", "w1") == (True, True))
    finally:
        lab.ssh("w1", "systemctl stop ms-ticker")


def test_crash_and_restart_keep_the_disk(lab: Lab) -> None:
    lab.ssh("w2", "mkdir -p /var/lib/etcd/probe && echo kept > /var/lib/etcd/probe/f && sync",
            check=True)
    lab.ssh("w2", "echo lost > /run/volatile", check=True)
    lab.crash("w2")
    try:
        assert not lab.pids("w2"), "the whole container is gone"
        assert reach(lab, "m1", str(lab.address("w2"))) == (False, False)
        assert [s.state for s in lab.status() if s.name == "w2"] == ["down"]
    finally:
        lab.restart("w2")
    assert reach(lab, "m1", "w2") == (True, True)
    out = lab.ssh("w2", "cat /var/lib/etcd/probe/f; cat /run/volatile 2>&1; "
                        "systemctl is-system-running").stdout.split("\n")
    assert out[0] == "kept"
    assert "No such file" in out[1]
    assert out[2] in ("running", "degraded")
    lab.ssh("w2", "rm -rf /var/lib/etcd/probe", check=True)


def test_restart_of_a_running_machine_reboots_it(lab: Lab) -> None:
    before = lab.require_state().machine("w2").leader_pid
    lab.restart("w2")
    assert lab.require_state().machine("w2").leader_pid != before
    assert reach(lab, "m1", "w2") == (True, True)


@pytest.mark.parametrize("fault", ["stop", "kill"])
def test_service_faults(lab: Lab, fault: str) -> None:
    unit = f"ms-probe-{fault}"
    lab.ssh("w2", f"systemd-run --unit={unit} --property=Restart=no "
            "/usr/bin/python3 -m http.server --bind 0.0.0.0 8099", check=True)
    try:
        assert wait_for(lambda: reach(lab, "m1", "w2", 8099)[1])
        if fault == "stop":
            lab.stop_service("w2", unit)
        else:
            lab.kill_service("w2", unit)
        assert reach(lab, "m1", "w2", 8099) == (True, False)
        state = lab.ssh("w2", f"systemctl show -p Result --value {unit}").stdout.strip()
        assert state in (("success", "") if fault == "stop" else ("signal", ""))
    finally:
        lab.ssh("w2", f"systemctl stop {unit}; systemctl reset-failed {unit}")


def test_fault_on_unknown_machine_is_a_clear_error(lab: Lab) -> None:
    from metalseed.errors import LabError

    with pytest.raises(LabError, match="has no machine 'x9'"):
        lab.cut("x9")


# ---- down leaves nothing (a lab of its own) ----------------------------------------------


def holds(pid: str, root: Path) -> bool:
    """Whether the process has a file under ``root`` open (the lab's mirror server: its log)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(f"{root}/"):
                return True
        except OSError:
            continue
    return False


def leftovers(name: str) -> list[str]:
    """Everything of lab ``name`` still on the host, as seen from the host.

    Independent of the lab's own bookkeeping: every mounted cgroup hierarchy is scanned (nested
    cgroups that containerd/runc created included), and every process whose command line names
    the lab's files, whose cgroup lies in the lab's trees, or that holds a lab file open counts.
    """
    lab = Lab(name, progress=None)
    root = lab.paths.root
    found: list[str] = []
    with open("/proc/self/mounts") as f:
        found += [f"mount {ln.split()[1]}" for ln in f
                  if str(root) in ln.split()[1] or str(root) in ln.split()[0]]
    found += [f"netns {n}" for n in os.listdir("/run/netns")
              if planmod.netns_pattern(name).match(n)] if os.path.isdir("/run/netns") else []
    found += [f"link {n}" for n in os.listdir("/sys/class/net")
              if n == planmod.bridge_name(name) or planmod.veth_pattern(name).match(n)]
    in_lab = f"/metalseed/{name}/"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            # Dead already: a machine's systemd outlives its nspawn by a moment, so the host's
            # PID 1 inherits it and reaps it shortly after.
            continue
        if any(str(root).encode() in a for a in argv) or in_lab in cgroups or holds(pid, root):
            found.append(f"process {pid} {argv[0]!r}")
    with open("/proc/self/mounts") as f:
        hierarchies = [ln.split()[1] for ln in f if ln.split()[2] in ("cgroup", "cgroup2")]
    for h in hierarchies:
        top = Path(h) / "metalseed" / name
        if top.exists():
            found += [f"cgroup {d}" for d, _, _ in os.walk(top)]
    if root.exists():
        found.append(f"dir {root}")
    return found


@pytest.mark.skipif(lab_unavailable() is not None, reason=str(lab_unavailable()))
def test_down_leaves_nothing_and_up_cleans_stale_state(lab: Lab) -> None:
    other = Lab(DOWN_LAB, progress=None)
    other.down()
    try:
        s = other.up(masters=1, workers=1)
        assert s.subnet != lab.subnet, "labs side by side get their own /24"
        for m in s.machines:
            out = other.ssh(m.name, "systemctl is-enabled nginx etcd keepalived postgresql; "
                                    "ip -4 -o addr").stdout
            assert out.split()[:4] == ["masked"] * 4, "deploys unmask what they manage"
            assert str(s.vip) not in out, "nobody holds the VIP at boot"
        # Labs do not see each other.
        assert reach(other, "m1", str(lab.address("m1"))) == (False, False)
        assert leftovers(DOWN_LAB), "the check itself finds a running lab"
        assert other.up(masters=1, workers=1) == other.require_state(), "up is idempotent"

        # A lab whose CLI died mid-way: state file lost, machines still running.
        other.paths.state.unlink()
        other.up(masters=1, workers=1)
        assert reach(other, "w1", "m1") == (True, True)

        other.down()
        assert leftovers(DOWN_LAB) == []
        other.down()  # idempotent
        assert leftovers(DOWN_LAB) == []
        # The session lab is untouched.
        assert reach(lab, "m1", "w1") == (True, True)
    finally:
        other.down()
    assert Path(LAB_INVENTORY).exists()
