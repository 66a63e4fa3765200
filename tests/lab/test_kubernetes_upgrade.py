"""The shared Kubernetes lab is deployed at the previous patch release the pins hold and upgraded
to the current one by deploys/kubernetes-upgrade.py before any other Kubernetes test runs
(tests/lab/kube.py, ``upgrade_under_load``), under a client through the VIP and a workload with a
PodDisruptionBudget. Here: what that upgrade saw, every node and API server at the new version,
nothing left cordoned, a rerun at the target changes nothing, and a downgrade is refused before
any host is touched.
"""

from __future__ import annotations

import json

import pytest

from metalseed.kube import nodes as kn
from metalseed.lab import Lab
from metalseed.model import Cluster
from metalseed.probe import pyinfra_totals
from tests.lab.kube import (
    CURRENT,
    PREVIOUS,
    UPGRADE,
    UPGRADE_NAMESPACE,
    RunPyinfra,
    kubectl,
    kubelet_versions,
    wait_until,
)

pytestmark = [pytest.mark.lab, pytest.mark.kube]


def test_the_cluster_was_upgraded_under_load_without_a_failed_request(
        kube_lab: Lab, kube_cluster: Cluster) -> None:
    c = kube_cluster
    assert UPGRADE["before"] == {n.name: PREVIOUS for n in c.nodes}
    seen = UPGRADE["seen"]
    assert UPGRADE["totals"]["error"] == 0, UPGRADE["totals"]
    assert seen["ok"] > 100 and seen["failed"] == 0, seen["errors"][:5]
    assert seen["min_available"] >= 1  # the PodDisruptionBudget held through every drain

    assert kubelet_versions(c) == {n.name: CURRENT for n in c.nodes}
    assert {m.name: kn.apiserver_version(c, str(m.address)) for m in c.masters} == {
        m.name: CURRENT for m in c.masters}
    for m in c.masters:
        version = kube_lab.ssh(m.name, "/usr/local/bin/kube kube-apiserver --version",
                               check=True).stdout
        assert CURRENT in version, (m.name, version)
    nodes = json.loads(kubectl(c, "get", "nodes", "-o", "json").stdout)["items"]
    assert not any(n["spec"].get("unschedulable") for n in nodes)
    assert not any(kn.CORDONED in (n["metadata"].get("annotations") or {}) for n in nodes)

    def whole() -> str | None:
        out = kubectl(c, "-n", UPGRADE_NAMESPACE, "get", "deployment", "web", "-o",
                      "jsonpath={.status.readyReplicas}", check=False).stdout
        return None if out == "2" else f"ready replicas: {out!r}"

    wait_until("the workload has both replicas Ready", whole, timeout=120)
    assert kubectl(c, "-n", "kube-system", "get", "deployment", "coredns", "-o",
                   "jsonpath={.status.readyReplicas}").stdout == "2"


def test_a_rerun_at_the_target_changes_nothing_and_a_downgrade_is_refused(
        kube_cluster: Cluster, kube_run_pyinfra: RunPyinfra, kube_data: list[str]) -> None:
    c, run = kube_cluster, kube_run_pyinfra
    again = run("deploys/kubernetes-upgrade.py", *kube_data, "--data",
                f"kubernetes_version={CURRENT}", timeout=900)
    totals = pyinfra_totals(again.stdout + again.stderr)
    assert totals and totals["success"] == 0 and totals["error"] == 0, again.stdout[-3000:]

    back = run("deploys/kubernetes-upgrade.py", *kube_data, "--data",
               f"kubernetes_version={PREVIOUS}", check=False, timeout=300)
    out = back.stdout + back.stderr
    assert back.returncode != 0
    assert f"kubernetes_version: found '{PREVIOUS}'" in out and "no downgrade" in out, out[-2000:]
    assert "Beginning operation run" not in out, out[-2000:]
    assert kubelet_versions(c) == {n.name: CURRENT for n in c.nodes}
