"""The isolation engine's objects and the probe matrix, offline: with Cilium (a seed's default)
the tenants' CiliumNetworkPolicies and probe pods, nothing of kube-router's; with kube-router its
DaemonSet, RBAC, NetworkPolicies and each tenant's probe pod fit the pinned Kubernetes; the plan
covers every ordered pair of tenants and every allowed path; agnhost's output is read back; an
unexpected result is flagged."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from metalseed.kube import netpol
from metalseed.kube import openapi as oa
from metalseed.mirror import default_root
from metalseed.tenants import enforce
from metalseed.tenants import verify as v

from .test_tenants_apply import seed

N = ipaddress.IPv4Network


def test_a_cilium_seed_gets_cilium_policies_and_probe_pods_only(tmp_path: Path) -> None:
    c = seed(tmp_path)
    assert enforce.cilium(c)
    objs = enforce.objects(c, cidrs=(N("10.244.0.0/24"),), bundle=b"")
    enforce.validate(c)
    kinds = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objs}
    assert ("CiliumClusterwideNetworkPolicy", "", "metalseed-tenants-off-seed-apiserver") in kinds
    assert ("CiliumNetworkPolicy", "tenant-globex", "default-deny") in kinds
    assert ("Deployment", "tenant-acme", enforce.PROBE_POD) in kinds
    assert not [k for k in kinds if k[0] in ("NetworkPolicy", "DaemonSet")]
    # flannel's addresses of the node's podCIDR are named by CIDR (Cilium knows no node by them).
    ingress = next(o for o in objs if o["kind"] == "CiliumNetworkPolicy"
                   and o["metadata"]["name"] == "apiserver-ingress")["spec"]["ingress"]
    cidrs = {c["cidr"] for rule in ingress for c in rule.get("fromCIDRSet", [])}
    assert {"10.244.0.0/32", "10.244.0.1/32"} <= cidrs


def test_engine_policies_and_probe_pods_fit_the_pinned_kubernetes(tmp_path: Path) -> None:
    c = seed(tmp_path, network_policy="kube-router")
    objs = enforce.objects(c, cidrs=(N("10.244.0.0/24"),), bundle=b"")
    oa.validate(objs, oa.load(default_root()))
    enforce.validate(c)
    kinds = [(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objs]
    assert ("DaemonSet", "kube-system", "kube-router") in kinds
    assert ("Deployment", "tenant-acme", enforce.PROBE_POD) in kinds
    assert ("NetworkPolicy", "tenant-globex", "default-deny") in kinds
    ds = next(o for o in objs if o["kind"] == "DaemonSet")
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    # The firewall alone: flannel routes, kube-proxy serves Services.
    assert {"--run-firewall=true", "--run-router=false", "--run-service-proxy=false"} <= set(args)
    assert ds["spec"]["template"]["spec"]["hostNetwork"] is True
    assert netpol.NAME in ds["spec"]["template"]["spec"]["containers"][0]["image"]


def test_the_plan_covers_every_ordered_pair_and_every_allowed_path(tmp_path: Path) -> None:
    c = seed(tmp_path)
    facts = v.SeedFacts(api_pods={"acme": ("10.244.1.5",), "globex": ("10.244.2.7", "10.244.1.9")},
                        api_services={"acme": "10.96.0.50", "globex": "10.96.0.60"})
    probes = v.plan(c, facts, enforce.inputs(c))
    by = {(p.source, p.address): p for p in probes}
    assert by[("acme", "10.244.2.7:6443")].allowed is False
    assert by[("acme", "10.244.1.9:6443")].allowed is False
    assert by[("acme", "10.96.0.60:6443")].allowed is False
    assert by[("globex", "10.244.1.5:6443")].allowed is False
    assert by[("globex", "10.96.0.50:6443")].allowed is False
    assert ("acme", "10.96.0.50:6443") not in by  # its own API is no cross-tenant path
    for t in ("acme", "globex"):
        assert by[(t, f"{c.cluster_dns_address}:53")].allowed
        assert by[(t, "10.20.0.31:2379")].allowed
        assert by[(t, "10.20.0.31:22")].allowed is False
        assert by[(t, f"{c.first_service_address}:443")].allowed is False
        for m in c.masters:
            assert by[(t, f"{m.address}:6443")].allowed is False
    assert [p.target for p in probes if p.source == v.EDGE] == ["acme /readyz by SNI",
                                                                "globex /readyz by SNI"]


def test_agnhost_output_is_read_back_and_unexpected_results_flagged(tmp_path: Path) -> None:
    c = seed(tmp_path)
    facts = v.SeedFacts({"acme": (), "globex": ("10.244.2.7",)}, {})
    probes = [p for p in v.plan(c, facts, enforce.inputs(c)) if p.source == "acme"]
    text = v.script(probes)
    assert text.count("/agnhost connect") == len(probes) and text.endswith("wait")
    output = "\n".join([f"{c.cluster_dns_address}:53 0", "10.20.0.31:2379 0",
                        "10.20.0.31:22 1 TIMEOUT", "10.244.2.7:6443 0",
                        f"{c.first_service_address}:443 1 OTHER: dial tcp: no route to host"])
    seen = {("acme", a): s for a, s in v.parse(output).items()}
    judged = v.judge(probes, seen)
    by = {p.address: p for p in judged}
    assert by["10.20.0.31:22"].seen == "TIMEOUT" and by["10.20.0.31:22"].as_expected
    assert by["10.244.2.7:6443"].connected and not by["10.244.2.7:6443"].as_expected
    assert by[f"{c.first_service_address}:443"].seen.startswith("OTHER")
    # Nothing seen for a probe is never a pass, for a forbidden path either.
    missing = by[f"{c.masters[0].address}:6443"]
    assert missing.seen == "not run" and not missing.allowed and not missing.as_expected
    table = v.format_table(judged)
    assert "UNEXPECTED" in table and "10.244.2.7:6443" in table
    assert table.strip().endswith(f"{len(judged)} probes, "
                                  f"{sum(not p.as_expected for p in judged)} unexpected")
