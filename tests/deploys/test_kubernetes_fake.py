"""The Kubernetes deploy against ``@fake`` hosts: a rendered object that does not fit the pinned
schemas stops the run while it is prepared, before any command reaches a host."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy

from metalseed.deploys import kubernetes as d
from metalseed.errors import KubernetesObjectError
from metalseed.kube import objects as o
from metalseed.mirror import default_root


@pytest.fixture(autouse=True)
def _fake_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PYINFRA_FAKE_DELAY", "0")
    monkeypatch.setenv("PYINFRA_FAKE_DELAY_JITTER", "0")
    yield


def test_a_bad_object_stops_the_run_before_any_host_is_touched(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = o.coredns

    def broken(cluster: Any, image: str, ca_bundle: bytes) -> list[dict[str, Any]]:
        objects = copy.deepcopy(real(cluster, image, ca_bundle))
        service = next(x for x in objects if x["kind"] == "Service")
        service["spec"]["ports"][0]["port"] = "53"
        return objects

    monkeypatch.setattr(o, "coredns", broken)
    common = {"cluster_name": "fake", "node_network": "10.20.0.0/24", "vip": "10.20.0.10",
              "kubernetes": True, "mirror_url": "http://10.20.0.1:5080",
              "mirror_dir": str(default_root()), "fake_delay": 0, "fake_delay_jitter": 0}
    hosts = [("@fake/m1", {**common, "address": "10.20.0.11", "node_name": "m1"}),
             ("@fake/w1", {**common, "address": "10.20.0.21", "node_name": "w1"})]
    inventory = Inventory((hosts, {}), masters=(["@fake/m1"], {}), workers=(["@fake/w1"], {}))
    state = State(inventory, Config(), check_for_changes=False)
    connect_all(state)
    with pytest.raises(KubernetesObjectError) as info:
        add_deploy(state, d.kubernetes)
    assert info.value.problems == [
        "Service kube-system/kube-dns: spec.ports[0].port: found '53'; accepted: an integer"]
    for name in ("@fake/m1", "@fake/w1"):
        assert list(inventory.get_host(name).connector.executed_commands) == []
    assert not state.get_op_order()
