"""A tenant's control plane objects: shaped as the pinned Kubernetes accepts them (offline OpenAPI
validation), sized by the profile, rolling when its PKI changes, a PDB only where replicas > 1."""

from __future__ import annotations

import pytest

from metalseed.errors import PKIError
from metalseed.kube import openapi as oa
from metalseed.kube.tenant import PKI_FILES, TENANT_LABEL, ControlPlaneInputs, control_plane
from metalseed.mirror import default_root
from metalseed.tenants.spec import TenantSpec


def inputs(profile: str = "small", pki_extra: bytes = b"") -> ControlPlaneInputs:
    return ControlPlaneInputs(
        tenant=TenantSpec("acme", profile, "v1.36.3", (("team", "payments"),)),
        images={c: f"10.0.0.1:5080/registry.k8s.io/{c}:v1.36.3"
                for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")},
        datastore_urls=("https://10.0.0.21:2379", "https://10.0.0.22:2379"),
        service_network="10.112.0.0/16", pod_network="10.128.0.0/16",
        endpoint_name="acme.tenants.example.com",
        pki={f: f.encode() + pki_extra for f in PKI_FILES})


@pytest.fixture(scope="module")
def schemas() -> oa.Schemas:
    return oa.load(default_root())


@pytest.mark.parametrize("profile", ["small", "medium", "large"])
def test_tenant_objects_fit_the_pinned_schemas(profile: str, schemas: oa.Schemas) -> None:
    objs = control_plane(inputs(profile))
    oa.validate(objs, schemas)
    kinds = [o["kind"] for o in objs]
    assert kinds[:4] == ["Namespace", "Secret", "Deployment", "Service"]
    assert ("PodDisruptionBudget" in kinds) == (profile != "small")
    for o in objs:
        assert o["metadata"]["labels"][TENANT_LABEL] == "acme"
        assert o["metadata"].get("namespace", "tenant-acme") == "tenant-acme"


def test_the_api_server_is_confined_to_its_prefix_and_sized_by_its_profile() -> None:
    dep = next(o for o in control_plane(inputs("medium")) if o["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 2
    api = dep["spec"]["template"]["spec"]["initContainers"][0]
    assert "--etcd-prefix=/acme" in api["args"]
    assert "--max-requests-inflight=400" in api["args"]
    assert api["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_a_terminating_api_server_serves_until_the_edge_no_longer_sends_it_anything() -> None:
    dep = next(o for o in control_plane(inputs()) if o["kind"] == "Deployment")
    spec = dep["spec"]
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = spec["template"]["spec"]
    args = pod["initContainers"][0]["args"]
    delay = next(int(a.split("=")[1].rstrip("s")) for a in args
                 if a.startswith("--shutdown-delay-duration="))
    watches = next(int(a.split("=")[1].rstrip("s")) for a in args
                   if a.startswith("--shutdown-watch-termination-grace-period="))
    # The kubelet's SIGKILL comes after the delay and the watches' drain.
    assert pod["terminationGracePeriodSeconds"] > delay + watches


def test_pods_roll_when_the_pki_changes_and_only_then() -> None:
    def checksum(i: ControlPlaneInputs) -> str:
        dep = next(o for o in control_plane(i) if o["kind"] == "Deployment")
        return str(dep["spec"]["template"]["metadata"]["annotations"]["metalseed.io/pki-sha256"])

    assert checksum(inputs()) == checksum(inputs())
    assert checksum(inputs()) != checksum(inputs(pki_extra=b"renewed"))


def test_missing_pki_material_is_refused() -> None:
    i = inputs()
    pki = dict(i.pki)
    del pki["sa.key"]
    with pytest.raises(PKIError, match=r"lacks sa\.key"):
        control_plane(ControlPlaneInputs(**{**i.__dict__, "pki": pki}))


def test_the_controller_manager_and_scheduler_start_only_once_the_api_server_is_ready() -> None:
    # The API server is a sidecar with a startup probe on /readyz: the kubelet starts the main
    # containers after it passes, when the API server's bootstrap RBAC exists (started beside
    # it, the controller-manager was refused and crash-looped).
    dep = next(o for o in control_plane(inputs()) if o["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    [api] = pod["initContainers"]
    assert api["name"] == "kube-apiserver" and api["restartPolicy"] == "Always"
    assert api["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert api["startupProbe"]["periodSeconds"] * api["startupProbe"]["failureThreshold"] >= 300
    assert [c["name"] for c in pod["containers"]] == ["kube-controller-manager", "kube-scheduler"]

