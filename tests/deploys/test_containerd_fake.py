"""The containerd deploy through pyinfra's API against ``@fake`` hosts: a bare node downloads and
checks every binary, then gets its files; a converged node costs two commands (the two facts)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops
from pyinfra.connectors.fake import FakeConnector

from metalseed.deploys import artifacts as art
from metalseed.deploys import containerd as d
from metalseed.deploys import converge as cv
from metalseed.model import cluster_from_inventory
from metalseed.render import containerd as r

NODES = ("m1", "w1")
MIRROR = "http://10.20.0.1:5080"
PAUSE = "registry.k8s.io/pause:3.10.2"
CHECK = "echo \"[/var/lib/metalseed/artifacts/"  # how the artifacts fact starts
SNAPSHOT = "echo '[sha]'"  # how the converge fact starts


@pytest.fixture(autouse=True)
def _fake_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PYINFRA_FAKE_DELAY", "0")
    monkeypatch.setenv("PYINFRA_FAKE_DELAY_JITTER", "0")
    yield


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    def binary(component: str, name: str) -> dict[str, Any]:
        sha = hashlib.sha256(name.encode()).hexdigest()
        return {"name": name, "version": "v1", "kind": "binary", "path": f"bin/{name}",
                "sha256": sha, "size": 1, "source": "built", "image": None, "digest": None,
                "component": component}

    arts = [binary("containerd", n) for n in ("containerd", "containerd-shim-runc-v2", "ctr")]
    arts += [binary("runc", "runc"), binary("cni-plugins", "bridge"), binary("crictl", "crictl")]
    arts.append({"name": "pause-image", "version": "3.10.2", "kind": "image",
                 "path": "images/pause-3.10.2.oci.tar", "sha256": "c" * 64, "size": 1,
                 "source": "built", "image": PAUSE, "digest": "sha256:" + "d" * 64,
                 "component": "pause"})
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": 1, "artifacts": arts}))
    return tmp_path


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, bytes]]:
    seen: dict[str, dict[str, bytes]] = {}

    def put_file(self: FakeConnector, src: Any, remote: str, *args: Any, **kwargs: Any) -> bool:
        seen.setdefault(self.host.name, {})[remote] = src.getvalue() if isinstance(
            src, io.BytesIO) else Path(src).read_bytes()
        return True

    monkeypatch.setattr(FakeConnector, "put_file", put_file)
    return seen


def make_state(mirror: Path, responses: dict[str, Any] | None = None) -> State:
    common = {"cluster_name": "fake", "node_network": "10.20.0.0/24", "vip": "10.20.0.10",
              "mirror_url": MIRROR, "mirror_dir": str(mirror), "fake_responses": responses or {},
              "fake_delay": 0, "fake_delay_jitter": 0}
    hosts = [(f"@fake/{n}", {**common, "address": f"10.20.0.{11 + i}", "node_name": n})
             for i, n in enumerate(NODES)]
    inventory = Inventory((hosts, {}), masters=([hosts[0][0]], {}), workers=([hosts[1][0]], {}))
    state = State(inventory, Config(), check_for_changes=False)  # as `pyinfra -y` runs
    connect_all(state)
    return state


def run(state: State) -> State:
    add_deploy(state, d.containerd)
    run_ops(state)
    return state


def commands(state: State, name: str) -> list[str]:
    return [str(c) for c in state.inventory.get_host(f"@fake/{name}").connector.executed_commands]


def test_a_bare_node_downloads_checks_and_installs_everything(
        mirror: Path, uploads: dict[str, dict[str, bytes]]) -> None:
    state = run(make_state(mirror))
    cmds = commands(state, "m1")
    downloads = [c for c in cmds if "curl -fsS" in c]
    urls = sorted(c.split(" -o \"$tmp/download\" ")[1].split()[0] for c in downloads)
    assert urls == sorted(f"{MIRROR}/files/bin/{n}" for n in (
        "containerd", "containerd-shim-runc-v2", "ctr", "runc", "bridge", "crictl"))
    assert all("sha256 mismatch" in c for c in downloads)
    assert "systemctl start containerd.service" in cmds
    config = uploads["@fake/m1"][r.CONFIG + cv.STAGED_SUFFIX].decode()
    assert f'sandbox = "{PAUSE}"' in config
    hosts_toml = uploads["@fake/m1"][r.hosts_toml_path("registry.k8s.io") + cv.STAGED_SUFFIX]
    assert f'[host."{MIRROR}"]' in hosts_toml.decode()


def test_a_converged_node_costs_two_commands(mirror: Path,
                                              uploads: dict[str, dict[str, bytes]]) -> None:
    cluster = cluster_from_inventory(make_state(mirror).inventory)
    downloads = d.downloads(cluster)
    spec = d.node_spec(cluster, PAUSE, d.containerd_version())
    responses = {
        CHECK: [f"[{x.stamp}] {x.sha256} ok" for x in downloads],
        SNAPSHOT: cv.converged_snapshot(spec),
    }
    state = run(make_state(mirror, responses))
    for n in NODES:
        cmds = commands(state, n)
        assert len(cmds) == 2, cmds
        assert cmds[0].startswith(CHECK) and cmds[1].startswith(SNAPSHOT)
    assert uploads == {}
    assert art.plan(downloads, {x.stamp: x.sha256 for x in downloads}) == []
