"""kubernetes_version and the upgrade's step rule: a release the pins hold, one minor at a time,
never a downgrade; the messages name the key, what runs where and what would be accepted."""

from __future__ import annotations

import pytest

from metalseed.deploys import kubernetes as k
from metalseed.deploys.upgrade import Plan, check_step
from metalseed.errors import ModelError
from metalseed.mirror import load_pins
from metalseed.model import build_cluster, kubernetes_releases

from .test_model import hosts, rejects

CURRENT = load_pins().get("kubernetes").version
PREVIOUS = load_pins().get("kubernetes-previous").version


def test_the_pins_hold_two_patch_releases_of_one_minor() -> None:
    assert kubernetes_releases() == {CURRENT: "kubernetes", PREVIOUS: "kubernetes-previous"}
    assert CURRENT.rsplit(".", 1)[0] == PREVIOUS.rsplit(".", 1)[0] and PREVIOUS < CURRENT


def test_kubernetes_version_defaults_to_the_kubernetes_pin() -> None:
    c = build_cluster(hosts(common={"kubernetes": True}))
    assert c.kubernetes.version == CURRENT and k.release(c) == CURRENT
    assert k.kube_component(c) == "kubernetes"


def test_kubernetes_version_may_name_the_previous_release() -> None:
    c = build_cluster(hosts(common={"kubernetes": True, "kubernetes_version": PREVIOUS}))
    assert k.release(c) == PREVIOUS and k.kube_component(c) == "kubernetes-previous"


def test_a_version_the_pins_do_not_hold_is_refused() -> None:
    e = rejects("kubernetes_version", common={"kubernetes": True, "kubernetes_version": "v1.37.0"})
    assert e.found == "v1.37.0"
    assert e.accepted == (f"a Kubernetes release the pins hold (mirror/pins.toml): {CURRENT!r} "
                          f"(kubernetes), {PREVIOUS!r} (kubernetes-previous)")


def test_a_patch_step_and_a_minor_step_are_allowed() -> None:
    check_step("v1.36.3", {"kubelet on w1": "v1.36.1", "kube-apiserver on m1": "v1.36.3"})
    check_step("v1.37.0", {"kubelet on w1": "v1.36.3"})


def test_a_skipped_minor_is_refused_naming_what_runs_where() -> None:
    with pytest.raises(ModelError) as info:
        check_step("v1.38.1", {"kubelet on w1": "v1.36.3", "kube-apiserver on m1": "v1.37.2"})
    e = info.value
    assert e.field == "kubernetes_version" and e.found == "v1.38.1"
    assert e.accepted == ("kubelet on w1 runs v1.36.3: one minor version at a time (a release of "
                          "v1.36 or v1.37 first)")


def test_a_downgrade_is_refused() -> None:
    with pytest.raises(ModelError) as info:
        check_step("v1.36.1", {"kube-apiserver on m2": "v1.36.3", "kubelet on m2": "v1.36.1"})
    assert info.value.accepted == ("kube-apiserver on m2 runs v1.36.3: no downgrade (a release no "
                                   "older than v1.36.3)")
    assert str(info.value).startswith("kubernetes_version: found 'v1.36.1'; accepted: ")


def test_plan_drains_only_nodes_not_at_the_target() -> None:
    p = Plan("v1.36.3", {"m1": "v1.36.3", "w1": "v1.36.1", "w2": "v1.36.3"}, {},
             frozenset({"w2"}))
    assert [n for n in ("m1", "w1", "w2") if p.node_needs_drain(n)] == ["w1"]
    # w2 was cordoned by a run that failed after the kubelet came up: uncordoned now.
    assert [n for n in ("m1", "w1", "w2") if p.node_needs_uncordon(n)] == ["w1", "w2"]
