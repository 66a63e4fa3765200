"""What the seed deploy applies for its tenants, without a seed: the Secret's files come from the
tenant's own store directory (bundles, not single CAs) and the datastore's material, every object
fits the pinned schemas, images are the mirror's of the tenant's version, and what is missing is
named before anything is applied."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from metalseed.errors import ArtifactError, DeployError, KubernetesError
from metalseed.kube import openapi as oa
from metalseed.kube.tenant import PKI_FILES
from metalseed.mirror import default_root
from metalseed.model import Cluster, _HostInput, build_cluster
from metalseed.pki.issue import init_pki
from metalseed.tenants import apply as ta
from metalseed.tenants import datastore as ds

from .test_pki import NOW

BASE = {"cluster_name": "seed1", "node_network": "10.20.0.0/24", "vip": "10.20.0.10",
        "kubernetes": True, "mirror_url": "http://10.20.0.1:5080", "mirror_dir": str(default_root()),
        "tenants": {"acme": {}, "globex": {"profile": "medium"}}}


def seed(tmp_path: Path, datastore: bool = True, **extra: Any) -> Cluster:
    data = {**BASE, "pki_store": str(tmp_path / "pki"), **extra}
    hosts = [_HostInput(f"m{i}", ("masters",), {**data, "ssh_hostname": f"10.20.0.{10 + i}"})
             for i in (1, 2, 3)]
    hosts += [_HostInput("w1", ("workers",), {**data, "ssh_hostname": "10.20.0.21"})]
    if datastore:
        hosts += [_HostInput("d1", ("datastore",), {**data, "ssh_hostname": "10.20.0.31"})]
    return build_cluster(hosts)


def test_the_secret_holds_the_tenants_own_material(tmp_path: Path) -> None:
    c = seed(tmp_path)
    init_pki(c, now=NOW)
    files = ta.pki_files(c, "acme")
    assert set(files) == set(PKI_FILES)
    t = c.pki_dir / "tenants" / "acme"
    assert files["ca.crt"] == (t / "ca-bundle.crt").read_bytes()
    assert files["apiserver.key"] == (t / "apiserver.key").read_bytes()
    assert files["controller-manager.conf"] == (t / "controller-manager.conf").read_bytes()
    root = c.pki_dir
    assert files["datastore-client.crt"] == (root / f"{ds.client_id('acme')}.crt").read_bytes()
    assert files["datastore-ca.crt"] == (root / f"{ds.CA_BUNDLE_ID}.crt").read_bytes()
    assert ta.pki_files(c, "globex")["ca.crt"] != files["ca.crt"]
    objs = ta.objects(c)
    oa.validate(objs, oa.load(c.mirror_dir))
    secret = next(o for o in objs if o["kind"] == "Secret"
                  and o["metadata"]["namespace"] == "tenant-acme")
    assert base64.b64decode(secret["data"]["sa.key"]) == (t / "sa.key").read_bytes()
    dep = next(o for o in objs if o["kind"] == "Deployment"
               and o["metadata"]["namespace"] == "tenant-globex")
    api = dep["spec"]["template"]["spec"]["initContainers"][0]
    assert "--etcd-servers=https://10.20.0.31:2379" in api["args"]
    assert "--service-account-issuer=https://globex.seed1.tenants.cluster.local" in api["args"]
    assert api["command"] == ["/usr/local/bin/kube-apiserver"]


def test_missing_datastore_material_is_named(tmp_path: Path) -> None:
    c = seed(tmp_path)
    init_pki(c, now=NOW)
    (c.pki_dir / f"{ds.client_id('acme')}.crt").unlink()
    with pytest.raises(KubernetesError, match=r"tenants/acme/datastore-client\.crt"):
        ta.pki_files(c, "acme")


def test_objects_are_checked_offline_before_the_store_has_anything(tmp_path: Path) -> None:
    c = seed(tmp_path)
    ta.validate(c)  # no store yet: placeholders stand in for the material
    assert not (tmp_path / "pki").exists()


def test_tenants_without_a_datastore_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="'datastore' group"):
        ta.validate(seed(tmp_path, datastore=False))


def test_images_are_the_mirrors_of_the_tenants_version(tmp_path: Path) -> None:
    c = seed(tmp_path)
    images = ta.images(c, c.kubernetes.version)
    assert set(images) == set(ta.COMPONENTS)
    assert all(ref.endswith(f":{c.kubernetes.version}") for ref in images.values())
    with pytest.raises(ArtifactError, match=r"no kube-apiserver image of v1\.0\.0 \(it holds: "):
        ta.images(c, "v1.0.0")


def test_only_namespaces_of_tenants_gone_from_the_data_are_removed(tmp_path: Path) -> None:
    c = seed(tmp_path)

    def ns(name: str, tenant: str | None) -> dict[str, Any]:
        labels = {"metalseed.io/tenant": tenant} if tenant else {}
        return {"metadata": {"name": name, "labels": labels}}

    live = [ns("tenant-acme", "acme"), ns("tenant-initech", "initech"), ns("kube-system", None),
            # Labelled by someone else, or not in metalseed's form: never metalseed's to delete.
            ns("initech-apps", "initech"), ns("tenant-hooli", None)]
    assert ta.removed(c, live) == ["tenant-initech"]


def test_a_demoted_tenants_pdb_is_deleted_and_no_other(tmp_path: Path) -> None:
    c = seed(tmp_path)  # acme small (one replica), globex medium (two)

    def pdb(ns: str, name: str = "control-plane", tenant: str | None = "x") -> dict[str, Any]:
        labels = {"metalseed.io/tenant": tenant} if tenant else {}
        return {"metadata": {"namespace": ns, "name": name, "labels": labels}}

    live = [pdb("tenant-acme"), pdb("tenant-globex"),
            # Not metalseed's: another name, no tenant label, or a tenant gone from the data
            # (its whole namespace goes).
            pdb("tenant-acme", "apps"), pdb("tenant-acme", tenant=None), pdb("tenant-initech")]
    assert ta.stale_pdbs(c, live) == [("tenant-acme", "control-plane")]


def test_a_removed_tenants_pki_is_archived_outside_the_live_store(tmp_path: Path) -> None:
    c = seed(tmp_path)
    init_pki(c, now=NOW)
    key = (c.pki_dir / "tenants" / "globex" / "apiserver.key").read_bytes()
    moved = ta.archive_pki(c, "globex", "20261201T150000Z")
    assert moved == tmp_path / "pki" / "seed1.archive" / "tenants" / "globex-20261201T150000Z"
    assert (moved / "apiserver.key").read_bytes() == key
    assert not (c.pki_dir / "tenants" / "globex").exists()
    assert (c.pki_dir / "tenants" / "acme" / "apiserver.key").exists()
    assert ta.archive_pki(c, "globex", "later") is None
