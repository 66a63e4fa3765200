"""Kubernetes conformance on the shared lab cluster: a subset of the [Conformance] specs of the
pinned v1.36.3, run by the mirror's e2e.test (built from the k8s.io/kubernetes module) with the
mirror's ginkgo, kubectl and admin kubeconfig, pulling every image from the mirror.

The subset is chosen to fit the CI budget (about 6 minutes): specs that passed in the wide run by
hand and take seconds to a minute each: API objects' lifecycles, discovery, DNS through CoreDNS
(the mirror's dig images), pod-to-pod HTTP over flannel, a Service through kube-proxy. The test
fails on any failed spec and passes only when every listed spec passed (MIN_PASSED), so it cannot
pass by running nothing or by skipping. It leaves nothing on the cluster: each spec works in a
namespace of its own that e2e deletes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metalseed.kube.conformance import (
    LAB_SKIPS,
    SERIAL,
    alternation,
    ginkgo_argv,
    load_report,
    outcome,
    run,
)
from metalseed.model import Cluster
from tests.lab.kube import mirror_components

pytestmark = [pytest.mark.lab, pytest.mark.kube]

# Full spec texts (ginkgo's container texts and the It text, as the report writes them).
CI_SPECS: tuple[str, ...] = (
    ('[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] Simple '
     'CustomResourceDefinition creating/deleting custom resource definition objects works '
     '[Conformance]'),
    ('[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] Simple '
     'CustomResourceDefinition getting/updating/patching custom resource definition status sub-'
     'resource works [Conformance]'),
    ('[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] Simple '
     'CustomResourceDefinition listing custom resource definition objects works [Conformance]'),
    '[sig-api-machinery] Discovery should validate PreferredVersion for each APIGroup [Conformance]',
    ('[sig-api-machinery] FieldValidation should detect unknown and duplicate fields of a typed '
     'object [Conformance]'),
    '[sig-api-machinery] server version should find the server version [Conformance]',
    '[sig-auth] ServiceAccounts should run through the lifecycle of a ServiceAccount [Conformance]',
    ('[sig-instrumentation] Events API should ensure that an event can be fetched, patched, '
     'deleted, and listed [Conformance]'),
    '[sig-network] DNS should provide DNS for the cluster [Conformance]',
    '[sig-network] EndpointSlice should support creating EndpointSlice API operations [Conformance]',
    ('[sig-network] Networking Granular Checks: Pods should function for intra-pod '
     'communication: http [NodeConformance] [Conformance]'),
    '[sig-network] Services should delete a collection of services [Conformance]',
    '[sig-network] Services should find a service from listing all namespaces [Conformance]',
    '[sig-network] Services should serve a basic endpoint from pods [Conformance]',
    '[sig-node] ConfigMap should run through a ConfigMap lifecycle [Conformance]',
    ('[sig-node] Containers should use the image defaults if command and args are blank '
     '[NodeConformance] [Conformance]'),
    '[sig-node] Downward API should provide pod UID as env vars [NodeConformance] [Conformance]',
    '[sig-node] Lease lease API should be available [Conformance]',
    '[sig-node] PodTemplates should run the lifecycle of PodTemplates [Conformance]',
    '[sig-node] Pods should get a host IP [NodeConformance] [Conformance]',
    '[sig-node] RuntimeClass should support RuntimeClasses API operations [Conformance]',
    '[sig-node] Secrets should patch a secret [Conformance]',
    ('[sig-storage] Projected secret should be consumable from pods in volume [NodeConformance] '
     '[Conformance]'),
)
MIN_PASSED = len(CI_SPECS)
PROCS = 4
RUN_TIMEOUT = 330


def test_conformance_subset_passes(kube_cluster: Cluster, tmp_path: Path) -> None:
    mirror = kube_cluster.mirror_dir
    if "e2e" not in mirror_components(mirror):
        pytest.skip(f"the mirror at {mirror} has no e2e suite (run `metalseed mirror build`)")
    kubeconfig = kube_cluster.pki_dir / "kubeconfig" / "admin.conf"
    focus = alternation([re.escape(s) for s in CI_SPECS])
    argv = ginkgo_argv(mirror, kubeconfig, tmp_path, focus=focus, skips=LAB_SKIPS,
                       extra_skip=(SERIAL,), procs=PROCS, timeout_s=RUN_TIMEOUT)
    rc, seconds = run(argv, tmp_path, tmp_path / "ginkgo.log", RUN_TIMEOUT + 120)
    result = outcome(load_report(tmp_path / "report.json"), LAB_SKIPS, focus=focus)
    print(f"\n{result.table()}\nginkgo exit {rc} after {seconds:.0f}s")
    log_tail = (tmp_path / "ginkgo.log").read_text(errors="replace")[-6000:]
    assert not result.failed, f"{result.table()}\n--- ginkgo log (tail)\n{log_tail}"
    assert len(result.passed) >= MIN_PASSED, f"{result.table()}\n--- ginkgo log (tail)\n{log_tail}"
    assert rc == 0, f"ginkgo exit {rc}\n{log_tail}"
