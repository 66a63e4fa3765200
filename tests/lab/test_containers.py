"""Containers on real lab machines: containerd and runc from the mirror, images pulled through the
mirror's registry, run with crictl in host-network pod sandboxes (no CNI config needed yet).

Needs a built mirror (``metalseed mirror build``); without one these tests are skipped with that
reason. Every pod a test starts is removed again; containerd stays installed on the session lab.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import deploy

from metalseed import etcdprobe
from metalseed.deploys import artifacts
from metalseed.deploys import containerd as d
from metalseed.lab import Lab
from metalseed.lab import mirror as mirrormod
from metalseed.lab.host import pid_alive
from metalseed.mirror import Manifest, load_manifest
from metalseed.render import containerd as r

from .conftest import TEST_LAB, lab_unavailable
from .test_lab import leftovers

pytestmark = pytest.mark.lab

CTR_LAB = f"{TEST_LAB}-ctr"  # beside the session lab, for the `down` test
WORK = "/var/lib/metalseed-test"  # on each machine: pod and container configs, and their output


@pytest.fixture(scope="module")
def manifest(lab: Lab) -> Manifest:
    s = lab.require_state()
    if not s.mirror_url or not s.mirror_root:
        pytest.skip("no mirror was served to the lab: run `metalseed mirror build` first")
    return load_manifest(s.mirror_root)


@pytest.fixture(scope="module")
def nodes(lab: Lab, manifest: Manifest) -> Iterator[list[str]]:
    result = etcdprobe.run_deploy(etcdprobe.lab_inventory(lab), d.containerd)
    names = [m.name for m in lab.machines]
    print(f"\ncontainerd: first deploy on {len(names)} machines took {result.seconds:.1f} s")
    try:
        yield names
    finally:
        for n in names:
            lab.ssh(n, f"{r.CRICTL} rmp -fa >/dev/null 2>&1; {r.CRICTL} rmi -a >/dev/null 2>&1; "
                       f"rm -rf {WORK}", timeout=60)


def image(manifest: Manifest, component: str) -> Any:
    found = [a for a in manifest.images() if (a.component or a.name) == component]
    if not found:
        pytest.skip(f"the mirror has no {component} image yet")
    return found[0]


def shell_image(manifest: Manifest) -> Any | None:
    """agnhost (with busybox) when the mirror has it: its containers can write files."""
    found = [a for a in manifest.images() if (a.component or a.name) == "agnhost"]
    return found[0] if found else None


def pod_config(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "metalseed-test", "uid": f"{name}-uid",
                     "attempt": 0},
        "log_directory": f"{WORK}/{name}/logs",
        # NODE (2): the machine's own network, so no CNI configuration is needed.
        "linux": {"security_context": {"namespace_options": {"network": 2}}},
    }


def container_config(name: str, ref: str, command: list[str] | None) -> dict[str, Any]:
    c: dict[str, Any] = {"metadata": {"name": name}, "image": {"image": ref},
                         "log_path": f"{name}.log",
                         "mounts": [{"container_path": "/out", "host_path": f"{WORK}/{name}/out"}],
                         "linux": {}}
    if command:
        c["command"] = command
    return c


def run_pod(lab: Lab, machine: str, name: str, ref: str,
            command: list[str] | None = None) -> tuple[str, float]:
    """``crictl run`` a host-network pod with one container; (container id, seconds taken)."""
    pod = json.dumps(pod_config(name))
    ctr = json.dumps(container_config(name, ref, command))
    lab.ssh(machine, f"mkdir -p {WORK}/{name}/out && cd {WORK}/{name} && "
                     f"echo {shlex.quote(pod)} > pod.json && echo {shlex.quote(ctr)} > ctr.json",
            check=True)
    t0 = time.monotonic()
    out = lab.ssh(machine, f"cd {WORK}/{name} && {r.CRICTL} run ctr.json pod.json", timeout=120,
                  check=True).stdout.strip()
    return out.splitlines()[-1], time.monotonic() - t0


def inspect(lab: Lab, machine: str, container: str) -> dict[str, Any]:
    out = lab.ssh(machine, f"{r.CRICTL} inspect -o json {container}", check=True).stdout
    doc: dict[str, Any] = json.loads(out)
    return doc


def remove_pod(lab: Lab, machine: str, name: str) -> None:
    lab.ssh(machine, f"{r.CRICTL} pods -q --name {name} | xargs -r {r.CRICTL} rmp -f", timeout=60)


def host_pid_of(lab: Lab, machine: str, needle: str) -> int:
    """The host PID of the machine's process whose command line contains ``needle``."""
    for pid in sorted(lab.pids(machine)):
        try:
            if needle.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    raise AssertionError(f"no process with {needle!r} on {machine}")


def v1_cgroups(pid: int) -> dict[str, str]:
    """controller -> cgroup path of a host PID, as the host sees it (its root cgroup namespace)."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        out[controllers or "unified"] = path
    return out


# ---- the deploy --------------------------------------------------------------------------


def test_second_run_changes_nothing_and_restarts_nothing(lab: Lab, nodes: list[str]) -> None:
    pid = {n: lab.ssh(n, "systemctl show -p MainPID --value containerd").stdout.strip()
           for n in nodes}
    result = etcdprobe.run_deploy(etcdprobe.lab_inventory(lab), d.containerd)
    assert result.changed == {}
    assert {n: lab.ssh(n, "systemctl show -p MainPID --value containerd").stdout.strip()
            for n in nodes} == pid
    print(f"\ncontainerd: no-change run on {len(nodes)} machines took {result.seconds:.2f} s")


def test_binaries_are_the_mirror_s(lab: Lab, nodes: list[str], manifest: Manifest) -> None:
    expected = {a.path.rsplit("/", 1)[-1]: a.sha256 for a in manifest.artifacts
                if a.kind == "binary" and a.component in ("containerd", "runc", "crictl")}
    paths = [f"{r.SBIN_DIR}/runc" if n == "runc" else f"{r.BIN_DIR}/{n}" for n in expected]
    for n in nodes:
        out = lab.ssh(n, "sha256sum " + " ".join(paths), check=True).stdout
        got = {line.split()[1].rsplit("/", 1)[-1]: line.split()[0] for line in out.splitlines()}
        assert got == expected, n
        version = lab.ssh(n, f"{r.CONTAINERD} --version; {r.RUNC} --version | head -1; "
                             f"{r.CRICTL} --version", check=True).stdout
        assert manifest.get("containerd").version.lstrip("v") in version


# ---- containers --------------------------------------------------------------------------


def test_every_machine_pulls_through_the_mirror_and_runs_a_container(
        lab: Lab, nodes: list[str], manifest: Manifest) -> None:
    pause = image(manifest, "pause")
    repo = pause.image.rsplit(":", 1)[0]

    def one(machine: str) -> tuple[str, float, float]:
        t0 = time.monotonic()
        lab.ssh(machine, f"{r.CRICTL} rmi {pause.image} >/dev/null 2>&1; "
                         f"{r.CRICTL} pull {pause.image}", timeout=120, check=True)
        pulled = time.monotonic() - t0
        info = json.loads(lab.ssh(machine, f"{r.CRICTL} inspecti -o json {pause.image}",
                                  check=True).stdout)
        digests = info["status"]["repoDigests"]
        assert f"{repo}@{pause.digest}" in digests, (machine, digests, pause.digest)
        cid, took = run_pod(lab, machine, f"probe-{machine}", pause.image)
        doc = inspect(lab, machine, cid)
        assert doc["status"]["state"] == "CONTAINER_RUNNING", (machine, doc["status"])
        # Through containerd's runc shim, with the mirror's runc, on the overlayfs snapshotter.
        assert doc["info"]["runtimeType"] == "io.containerd.runc.v2"
        assert doc["info"]["runtimeOptions"]["binary_name"] == r.RUNC
        assert doc["info"]["snapshotter"] == "overlayfs"
        remove_pod(lab, machine, f"probe-{machine}")
        return machine, pulled, took

    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        results = list(pool.map(one, nodes))
    # The mirror's registry served each machine the image, asked for as registry.k8s.io's (and
    # the machines have no route off the lab /24: there is nowhere else it could come from).
    log = mirrormod.log_file(lab.paths).read_text()
    name = repo.split("/", 1)[1]
    for m in lab.machines:
        assert (f'{m.address} "GET /v2/{name}/manifests/{pause.digest}?ns={repo.split("/")[0]} '
                in log), m.name
        routes = lab.ssh(m.name, "ip -4 route show table all type unicast").stdout
        assert "default" not in routes
    print("\ncontainers (pull via mirror / crictl run): " + ", ".join(
        f"{m} {p:.2f}/{t:.2f} s" for m, p, t in results))


def test_docker_io_images_come_through_the_mirror_too(lab: Lab, nodes: list[str],
                                                    manifest: Manifest) -> None:
    found = [a for a in manifest.images() if a.image and a.image.startswith("docker.io/")]
    if not found:
        pytest.skip("the mirror has no docker.io image yet")
    a, machine = found[0], nodes[0]
    lab.ssh(machine, f"{r.CRICTL} pull {a.image}", timeout=300, check=True)
    repo = a.image.removeprefix("docker.io/").rsplit(":", 1)[0]
    log = mirrormod.log_file(lab.paths).read_text()
    address = lab.address(machine)
    assert f'{address} "GET /v2/{repo}/manifests/{a.digest}?ns=docker.io ' in log
    lab.ssh(machine, f"{r.CRICTL} rmi {a.image}")


def test_two_machines_at_once_do_not_interfere(lab: Lab, nodes: list[str],
                                               manifest: Manifest) -> None:
    a, b = nodes[0], nodes[-1]
    shell = shell_image(manifest)
    ref = shell.image if shell else image(manifest, "pause").image
    # With a shell each container writes the name of the machine it runs on, then sleeps.
    command = (["/bin/sh", "-c", "hostname > /out/name; exec sleep 3600"] if shell else None)

    with ThreadPoolExecutor(max_workers=2) as pool:
        started = list(pool.map(lambda m: run_pod(lab, m, "twin", ref, command), (a, b)))
    try:
        for machine, (cid, _took) in zip((a, b), started, strict=True):
            listed = lab.ssh(machine, f"{r.CRICTL} ps -q", check=True).stdout.split()
            assert listed == [cid], (machine, listed)
            if shell:
                name = lab.ssh(machine, f"cat {WORK}/twin/out/name", check=True).stdout.strip()
                assert name == machine
            # On the host: the container's cgroups lie inside its own machine's cgroup in every
            # hierarchy (its runtime made them inside the machine's cgroup namespace).
            pid = host_pid_of(lab, machine, "sleep" if shell else "/pause")
            cgroups = v1_cgroups(pid)
            assert len(cgroups) >= 2
            for controller, path in cgroups.items():
                assert path.startswith(f"/metalseed/{lab.name}/{machine}/"), (controller, path)
        print(f"\ntwo machines at once: {ref} on {a} and {b} "
              f"({'each wrote its own machine name' if shell else 'no shell in the image'})")
        # Ending one machine's pod leaves the other's running.
        remove_pod(lab, a, "twin")
        assert lab.ssh(a, f"{r.CRICTL} ps -q").stdout.split() == []
        assert lab.ssh(b, f"{r.CRICTL} ps -q").stdout.split() == [started[1][0]]
    finally:
        remove_pod(lab, a, "twin")
        remove_pod(lab, b, "twin")


# ---- a wrong sha256 --------------------------------------------------------------------------


WRONG = "0" * 64
PROBE_DIR = "/usr/local/lib/metalseed-probe"


@deploy("install with a wrong sha256")
def install_wrong(download: artifacts.Download) -> None:
    artifacts.install(name="artifact with a wrong sha256", downloads=(download,))


def test_a_download_with_a_wrong_sha256_is_refused_and_installs_nothing(
        lab: Lab, nodes: list[str], manifest: Manifest) -> None:
    crictl = next(a for a in manifest.artifacts if a.component == "crictl" and a.kind == "binary")
    url = f"{lab.require_state().mirror_url}/files/{crictl.path}"
    download = artifacts.Download(name="crictl-probe", url=url, sha256=WRONG, dest_dir=PROBE_DIR,
                                  filename="crictl")
    machine = nodes[0]
    inventory = etcdprobe.lab_inventory(lab, masters=[machine], workers=[])
    failed, stderr = run_keeping_stderr(inventory, download)
    assert failed == [machine], "the run stops on the host with the bad download"
    assert (f"sha256 mismatch for crictl-probe ({url}): expected sha256:{WRONG}, "
            f"actual sha256:{crictl.sha256}; nothing installed") in stderr, stderr
    out = lab.ssh(machine, f"ls -A {PROBE_DIR} 2>&1; ls {download.stamp} 2>&1; "
                           "ls -d /var/tmp/metalseed-artifact.* 2>&1").stdout
    assert out.count("No such file or directory") == 3, out


def run_keeping_stderr(inventory: Any, download: artifacts.Download) -> tuple[list[str], str]:
    """(hosts that failed, the failed commands' stderr), through pyinfra's API."""
    from pyinfra.api import Config, State
    from pyinfra.api.connect import connect_all
    from pyinfra.api.deploy import add_deploy
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.operations import run_ops

    state = State(inventory, Config())
    connect_all(state)
    add_deploy(state, install_wrong, download=download)
    with contextlib.suppress(PyinfraError):  # "No hosts remaining!": every host failed
        run_ops(state)
    failed = sorted({h.name for h in state.failed_hosts}
                    | {h.name for h in state.inventory if state.get_results_for_host(h).error_ops})
    lines: list[str] = []
    for h in state.inventory:
        for op in state.get_op_order():
            data = state.ops[h].get(op)
            if data is not None and data.operation_meta._combined_output is not None:
                lines += data.operation_meta.stderr_lines
    return failed, "\n".join(lines)


# ---- down ------------------------------------------------------------------------------------


@pytest.mark.skipif(lab_unavailable() is not None, reason=str(lab_unavailable()))
def test_down_after_containers_leaves_nothing(lab: Lab, manifest: Manifest) -> None:
    other = Lab(CTR_LAB, progress=None)
    other.down()
    try:
        other.up(masters=1, workers=1, timeout=180)  # a loaded build host boots slowly
        try:
            etcdprobe.run_deploy(etcdprobe.lab_inventory(other), d.containerd)
        except Exception:
            for m in other.machines:
                print(other.ssh(m.name, "systemctl status containerd --no-pager; journalctl -u "
                                        "containerd --no-pager | tail -20").stdout)
            raise
        pause = image(manifest, "pause").image
        shims: dict[str, int] = {}
        for m in other.machines:
            run_pod(other, m.name, "left", pause)
            shims[m.name] = host_pid_of(other, m.name, "containerd-shim")
        nested = [c for c in leftovers(CTR_LAB) if c.startswith("cgroup") and "k8s.io" in c]
        assert nested, "the runtime made cgroups of its own inside the machines' cgroups"
        other.down()
        assert leftovers(CTR_LAB) == []
        assert not [p for p in shims.values() if pid_alive(p)], shims
    finally:
        other.down()
