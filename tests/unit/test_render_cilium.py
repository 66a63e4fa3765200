"""The Cilium agent on a seed's nodes, rendered from the model (no hosts): chained over flannel,
never taking an address or a route flannel owns, and only where the seed's engine is Cilium."""

from __future__ import annotations

import ipaddress
import json
import tarfile
from pathlib import Path

import pytest

from metalseed.errors import ModelError, ModelErrors
from metalseed.kube import cilium as kcil
from metalseed.kube.crd import CRDSchemas, bundle
from metalseed.mirror.build import write_tree_tar
from metalseed.pki.profiles import CILIUM_USER, leaf_specs
from metalseed.render import cilium as rc
from metalseed.render import kubernetes as r
from tests.unit.golden_render import inventories, lab_cluster
from tests.unit.test_render_kubernetes import flags

AGENT = r.Binary("v1.20.2", "a" * 64, rc.AGENT)


def seed():  # type: ignore[no-untyped-def]
    return inventories()["lab-seed"]()


def test_a_seed_runs_cilium_and_any_other_cluster_nothing_by_default() -> None:
    assert seed().kubernetes.network_policy == "cilium"
    assert inventories()["lab-kubernetes"]().kubernetes.network_policy == "none"
    assert lab_cluster(kubernetes=True, tenants={"acme": {}},
                       network_policy="kube-router").kubernetes.network_policy == "kube-router"


def test_an_engine_without_kubernetes_or_an_unknown_one_is_refused() -> None:
    with pytest.raises((ModelError, ModelErrors), match="network_policy"):
        lab_cluster(network_policy="cilium")
    with pytest.raises((ModelError, ModelErrors), match="network_policy"):
        lab_cluster(kubernetes=True, network_policy="calico")


def test_the_agent_is_chained_over_flannel_and_keeps_kube_proxy() -> None:
    c = seed()
    f = flags(rc.agent_unit(c, c.nodes[0], AGENT, "b" * 64))
    assert f["--cni-chaining-mode"] == "generic-veth"
    assert f["--cni-exclusive"] == "false"  # flannel's configuration stays
    assert f["--write-cni-conf-when-ready"] == ""
    assert f["--kube-proxy-replacement"] == "false" and f["--bpf-lb-sock"] == "false"
    assert f["--enable-l7-proxy"] == "false"  # no Envoy
    assert f["--ipv4-native-routing-cidr"] == str(c.pod_network)
    assert f["--enable-local-node-route"] == "false"  # flannel's cni0 route stays
    assert f["--k8s-kubeconfig-path"] == rc.KUBECONFIG


def test_each_node_has_its_own_router_address_outside_every_cluster_network() -> None:
    c = seed()
    addresses = [ipaddress.IPv4Address(rc.router_address(c, n)) for n in c.nodes]
    assert len(set(addresses)) == len(addresses)
    for a in addresses:
        assert a.is_link_local
        assert a not in c.pod_network and a not in c.service_network


def test_the_unit_unpacks_the_sources_it_names_and_finds_clang_19() -> None:
    c = seed()
    text = rc.agent_unit(c, c.nodes[0], AGENT, "b" * 64)
    assert f"tar -xf {rc.BPF_TAR} -C {rc.LIB_DIR}" in text and "b" * 64 in text
    # A new tarball is a new unit file, hence a restart onto it.
    assert text != rc.agent_unit(c, c.nodes[0], AGENT, "c" * 64)
    assert f"Environment=PATH={rc.LLVM_BIN}:" in text
    assert f"{rc.AGENT}" in text and "a" * 64 in text


def test_the_cni_chain_ends_with_cilium_only_when_asked() -> None:
    plain = json.loads(r.flannel_conflist())
    chained = json.loads(r.flannel_conflist((rc.cni_plugin_json(),)))
    assert [p["type"] for p in plain["plugins"]] == ["flannel", "portmap"]
    assert [p["type"] for p in chained["plugins"]] == ["flannel", "portmap", "cilium-cni"]
    assert chained["plugins"][-1]["chaining-mode"] == "generic-veth"


def test_the_agents_identity_is_issued_only_where_cilium_runs() -> None:
    def users(c):  # type: ignore[no-untyped-def]
        return {s.common_name for s in leaf_specs(c)}

    assert CILIUM_USER in users(seed())
    assert CILIUM_USER not in users(inventories()["lab-kubernetes"]())


def _crd(kind: str, plural: str) -> dict:  # type: ignore[type-arg]
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.cilium.io",
                         "annotations": {"controller-gen.kubebuilder.io/version": "v0"}},
            "spec": {"group": "cilium.io", "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural},
                     "versions": [{"name": "v2", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {
                                       "type": "object", "description": "long text"}}}]}}


def test_the_crds_applied_are_the_bundled_ones_under_metalseeds_label() -> None:
    b = bundle([_crd("CiliumNode", "ciliumnodes"), _crd("CiliumIdentity", "ciliumidentities")],
               "v1.20.2")
    objs = kcil.crds(CRDSchemas(b["version"], b["kinds"], tuple(b["objects"])))
    assert [o["metadata"]["name"] for o in objs] == ["ciliumnodes.cilium.io",
                                                    "ciliumidentities.cilium.io"]
    for o in objs:
        assert o["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "metalseed"}
        assert "description" not in json.dumps(o)
    rbac = {o["kind"]: o for o in kcil.rbac()}
    assert rbac["ClusterRoleBinding"]["subjects"][0]["name"] == CILIUM_USER
    # Never the Secrets (a seed's hold its tenants' keys); ConfigMaps only in kube-system.
    assert not [r for r in rbac["ClusterRole"]["rules"] if "secrets" in r["resources"]
                or "configmaps" in r["resources"]]
    assert rbac["Role"]["metadata"]["namespace"] == "kube-system"


def test_the_datapath_sources_pack_into_the_same_bytes_every_time(tmp_path: Path) -> None:
    src = tmp_path / "bpf"
    (src / "include").mkdir(parents=True)
    (src / "bpf_lxc.c").write_text("int x;\n")
    (src / "include" / "a.h").write_text("#pragma once\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    write_tree_tar(src, "bpf", tmp_path / "a.tar")
    (src / "bpf_lxc.c").touch()  # a new mtime only
    write_tree_tar(src, "bpf", tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["bpf", "bpf/bpf_lxc.c", "bpf/include", "bpf/include/a.h",
                               "bpf/run.sh"]
    assert members["bpf/run.sh"].mode == 0o755 and members["bpf/bpf_lxc.c"].mode == 0o644
    assert all(m.uid == 0 and m.mtime == 0 for m in members.values())
