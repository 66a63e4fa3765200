"""Offline validation of cluster objects against the pinned Kubernetes' OpenAPI v3 schemas (the
mirror's ``kubernetes-openapi`` bundle): every object metalseed renders fits; an unknown apiVersion
or kind, an unknown field, a wrong type or a missing required field is refused, naming the object
and the field path."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from metalseed.errors import ArtifactError, KubernetesObjectError, MirrorIntegrityError
from metalseed.kube import apply as ka
from metalseed.kube import objects as o
from metalseed.kube import openapi as oa
from metalseed.mirror import default_root, load_manifest, load_pins
from metalseed.model import Cluster, build_cluster

from .test_model import hosts


@pytest.fixture(scope="module")
def schemas() -> oa.Schemas:
    return oa.load(default_root())


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return build_cluster(hosts(common={"kubernetes": True}))


def _deployment(cluster: Cluster) -> dict[str, Any]:
    return copy.deepcopy(next(x for x in ka.objects_of(cluster, ka.ADDONS)
                              if x["kind"] == "Deployment"))


def test_the_mirror_holds_the_schemas_of_the_pinned_kubernetes(schemas: oa.Schemas) -> None:
    assert schemas.version == load_pins().get("kubernetes").version
    assert load_pins().get(oa.COMPONENT).module_version == load_pins().get("kubernetes").version
    assert {"apps/v1/Deployment", "v1/Service", "v1/Node", "networking.k8s.io/v1/Ingress",
            "rbac.authorization.k8s.io/v1/ClusterRole"} <= set(schemas.kinds)


def test_every_object_the_deploy_applies_fits(cluster: Cluster, schemas: oa.Schemas) -> None:
    seen = []
    for which in ka.OBJECT_SETS:
        objects = ka.objects_of(cluster, which)  # validates
        for obj in objects:
            assert oa.problems(obj, schemas) == [], oa.describe(obj)
        seen += [oa.describe(x) for x in objects]
    ka.validate_all(cluster)
    assert {"Deployment kube-system/coredns", "Service kube-system/kube-dns",
            "ClusterRole metalseed:flannel", "ClusterRoleBinding system:coredns",
            "Node w1"} <= set(seen)


@pytest.mark.parametrize("objects", [
    pytest.param(lambda c: o.coredns(c, "registry.k8s.io/coredns/coredns:v1.14.7", b"CA"), id="coredns"),
    pytest.param(lambda c: o.flannel_rbac(), id="flannel-rbac"),
    pytest.param(lambda c: o.node_roles(c), id="node-roles"),
])
def test_each_object_function_fits(objects: Any, cluster: Cluster, schemas: oa.Schemas) -> None:
    rendered = objects(cluster)
    assert rendered
    oa.validate(rendered, schemas)


def test_an_unknown_field_names_object_path_and_suggestion(cluster: Cluster,
                                                           schemas: oa.Schemas) -> None:
    d = _deployment(cluster)
    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(KubernetesObjectError) as info:
        oa.validate([d], schemas)
    (p,) = info.value.problems
    assert p.startswith("Deployment kube-system/coredns: "
                        "spec.template.spec.containers[0].imagePullPolcy: unknown field; accepted: "
                        "did you mean 'imagePullPolicy'? the fields of io.k8s.api.core.v1.Container")
    assert "v1.36" in str(info.value)


def test_a_wrong_type_names_path_found_and_accepted(cluster: Cluster, schemas: oa.Schemas) -> None:
    d = _deployment(cluster)
    d["spec"]["replicas"] = "2"
    d["spec"]["template"]["spec"]["containers"][0]["ports"][1]["containerPort"] = 53.5
    d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = {"x": 1}
    got = oa.problems(d, schemas)
    assert got == [
        "spec.replicas: found '2'; accepted: an integer",
        "spec.template.spec.containers[0].ports[1].containerPort: found 53.5; accepted: an integer",
        "spec.template.spec.containers[0].resources.limits.memory: found {'x': 1}; accepted: "
        "a string or a number",
    ]


def test_int_or_string_and_quantities_take_both(cluster: Cluster, schemas: oa.Schemas) -> None:
    d = _deployment(cluster)
    d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = "25%"
    d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = 1
    assert oa.problems(d, schemas) == []
    d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = True
    assert oa.problems(d, schemas) == [
        "spec.template.spec.containers[0].readinessProbe.httpGet.port: found True; accepted: "
        "an integer or a string"]


def test_a_missing_required_field(cluster: Cluster, schemas: oa.Schemas) -> None:
    d = _deployment(cluster)
    del d["spec"]["selector"]
    del d["spec"]["template"]["spec"]["containers"][0]["name"]
    assert oa.problems(d, schemas) == [
        "spec.selector: missing; accepted: a required field of io.k8s.api.apps.v1.DeploymentSpec",
        "spec.template.spec.containers[0].name: missing; accepted: a required field of "
        "io.k8s.api.core.v1.Container",
    ]
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "x"},
           "spec": {"ports": [{"name": "http"}]}}
    assert oa.problems(svc, schemas) == [
        "spec.ports[0].port: missing; accepted: a required field of io.k8s.api.core.v1.ServicePort"]


def test_an_object_without_a_name(schemas: oa.Schemas) -> None:
    assert oa.problems({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}, schemas) == [
        "metadata.name: missing; accepted: the object's name (server-side apply addresses "
        "objects by name)"]


def test_unknown_api_version_and_kind(schemas: oa.Schemas) -> None:
    old = {"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "i"}}
    assert oa.problems(old, schemas) == [
        "apiVersion: found 'extensions/v1beta1'; accepted: for kind 'Ingress', "
        "networking.k8s.io/v1"]
    typo = {"apiVersion": "v1", "kind": "ConfigMpa", "metadata": {"name": "c"}}
    (p,) = oa.problems(typo, schemas)
    assert p.startswith("kind: found 'ConfigMpa'; accepted: a kind of Kubernetes v1.36")
    assert p.endswith("(did you mean 'ConfigMap'?)")


def test_every_problem_of_every_object_at_once(cluster: Cluster, schemas: oa.Schemas) -> None:
    d = _deployment(cluster)
    d["spec"]["replica"] = 2
    bad_role = copy.deepcopy(o.flannel_rbac()[0])
    bad_role["rules"][0]["verbs"] = "get"
    with pytest.raises(KubernetesObjectError) as info:
        oa.validate([d, bad_role], schemas)
    assert [p.split(":")[0] + ":" + p.split(":")[1] for p in info.value.problems] == [
        "Deployment kube-system/coredns: spec.replica",
        "ClusterRole metalseed:flannel",  # the name itself holds a ':'
    ]
    assert "rules[0].verbs: found 'get'; accepted: a list" in info.value.problems[1]


def test_a_tampered_bundle_is_refused(tmp_path: Path) -> None:
    root = default_root()
    manifest = load_manifest(root)
    art = next(a for a in manifest.artifacts if a.component == oa.COMPONENT)
    (tmp_path / art.path).parent.mkdir(parents=True)
    shutil.copy(root / "manifest.json", tmp_path / "manifest.json")
    data = (root / art.path).read_bytes()
    (tmp_path / art.path).write_bytes(data.replace(b'"required":["selector","template"]',
                                                   b'"required":["selector"]', 1))
    with pytest.raises(MirrorIntegrityError, match=f"{art.path}: expected sha256:{art.sha256}"):
        oa.load(tmp_path)


def test_a_mirror_without_the_bundle_says_how_to_get_it(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": 1, "artifacts": []}))
    with pytest.raises(ArtifactError, match=r"has no kubernetes-openapi.*metalseed mirror build"):
        oa.load(tmp_path)


def test_bundle_merges_files_and_maps_kinds(tmp_path: Path) -> None:
    def gvk(group: str, kind: str) -> dict[str, str]:
        return {"group": group, "version": "v1", "kind": kind}

    opts = {"type": "object", "properties": {"apiVersion": {"type": "string"},
                                             "kind": {"type": "string"}}}
    thing = {**opts, "description": "long text", "x-kubernetes-group-version-kind":
             [gvk("", "Thing")]}
    (tmp_path / "api__v1_openapi.json").write_text(json.dumps({"components": {"schemas": {
        "x.Thing": thing, "meta.DeleteOptions": {**opts, "x-kubernetes-group-version-kind":
                                                 [gvk("", "DeleteOptions")]}}}}))
    (tmp_path / "apis__apps__v1_openapi.json").write_text(json.dumps({"components": {"schemas": {
        "meta.DeleteOptions": {**opts, "x-kubernetes-group-version-kind":
                               [gvk("apps", "DeleteOptions")]}}}}))
    b = oa.bundle(tmp_path, "v9.9.9")
    assert b["kinds"] == {"v1/Thing": "x.Thing"}  # DeleteOptions belongs to every group
    assert "description" not in b["schemas"]["x.Thing"]
    assert len(b["schemas"]["meta.DeleteOptions"]["x-kubernetes-group-version-kind"]) == 2
