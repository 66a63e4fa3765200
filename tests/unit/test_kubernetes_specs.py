"""What each host of a Kubernetes cluster is given (pure: the deploy's host specs from a real store):
no CA key leaves the operator's machine, every key is 0600, a worker holds no control-plane key,
and each file names the one unit that reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalseed.deploys import kubernetes as d
from metalseed.deploys.converge import HostSpec
from metalseed.model import Cluster
from metalseed.pki import x509 as px
from metalseed.pki.issue import init_pki
from metalseed.render import kubernetes as r

from .test_pki import NOW, make_cluster
from .test_pki_kubernetes import KUBE

KUBE_BIN = r.Binary("v1.36.3", "ab" * 32)
FLANNEL_BIN = r.Binary("v0.28.10", "cd" * 32, r.FLANNELD)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    c = make_cluster(tmp_path_factory.mktemp("store") / "pki", **KUBE)
    init_pki(c, now=NOW)
    return c


def ca_keys(c: Cluster) -> set[bytes]:
    root = c.pki_dir
    return {p.read_bytes() for p in [root / "ca.key", root / "front-proxy-ca.key",
                                      root / "etcd" / "ca.key", root / "edge" / "ca.key"]}


def specs(c: Cluster) -> dict[str, HostSpec]:
    out = {m.name: d.master_spec(c, m, KUBE_BIN) for m in c.masters}
    for n in c.nodes:
        out[f"{n.name}/node"] = d.node_spec(c, n, KUBE_BIN, FLANNEL_BIN)
    return out


def test_no_ca_key_reaches_a_host_and_every_key_is_0600(cluster: Cluster) -> None:
    forbidden = ca_keys(cluster)
    for name, spec in specs(cluster).items():
        for f in spec.files:
            assert f.content not in forbidden, (name, f.path)
            assert not any(k in f.content for k in forbidden), (name, f.path)
            if b"PRIVATE KEY" in f.content or b"client-key-data" in f.content \
                    or f.path == r.ENCRYPTION_CONFIG:
                assert f.mode == 0o600, (name, f.path, oct(f.mode))


def test_a_worker_gets_only_its_own_node_material(cluster: Cluster) -> None:
    w1, w2 = cluster.workers
    spec = d.node_spec(cluster, w1, KUBE_BIN, FLANNEL_BIN)
    root = cluster.pki_dir
    contents = {f.path: f.content for f in spec.files}
    assert contents[r.KUBELET_KEY] == (root / f"kubelet-serving/{w1.name}.key").read_bytes()
    assert (root / f"kubelet-serving/{w2.name}.key").read_bytes() not in contents.values()
    assert (root / "apiserver.key").read_bytes() not in contents.values()
    cert = px.describe(px.load_cert(contents[r.KUBELET_CERT]))
    assert set(cert.sans()) == {w1.name, str(w1.address)}


def test_each_file_restarts_the_unit_that_reads_it(cluster: Cluster) -> None:
    m1 = cluster.masters[0]
    by_path = {f.path: f for f in d.master_spec(cluster, m1, KUBE_BIN).files}
    assert by_path[r.ENCRYPTION_CONFIG].unit == r.APISERVER_UNIT
    assert by_path[r.CM_KUBECONFIG].unit == r.CM_UNIT
    assert by_path[r.SCHEDULER_KUBECONFIG].unit == r.SCHEDULER_UNIT
    node = {f.path: f for f in d.node_spec(cluster, m1, KUBE_BIN, FLANNEL_BIN).files}
    assert node[r.KUBELET_CONFIG].unit == r.KUBELET_UNIT
    assert node[r.PROXY_CONFIG].unit == r.PROXY_UNIT
    assert node[r.FLANNEL_KUBECONFIG].unit == r.FLANNEL_UNIT
    assert node[r.FLANNEL_CONFLIST].unit is None  # containerd watches the directory


def test_master_kubeconfigs_point_at_their_own_api_server(cluster: Cluster) -> None:
    import yaml

    for m in cluster.masters:
        by_path = {f.path: f for f in d.master_spec(cluster, m, KUBE_BIN).files}
        for path in (r.CM_KUBECONFIG, r.SCHEDULER_KUBECONFIG):
            conf = yaml.safe_load(by_path[path].content)
            assert conf["clusters"][0]["cluster"]["server"] == f"https://{m.address}:6443"


def test_a_missing_store_file_names_it(tmp_path: Path) -> None:
    from metalseed.errors import DeployError

    c = make_cluster(tmp_path / "pki", **KUBE)
    with pytest.raises(DeployError, match=r"cannot read .* from the PKI store.*pki init"):
        d.master_spec(c, c.masters[0], KUBE_BIN)
