"""What the store holds for Kubernetes: kubelet serving certificates per node (node name and
address as SANs), a kubeconfig per kubelet and for kube-proxy, the encryption-at-rest key."""

from __future__ import annotations

import base64
import stat
import subprocess
from pathlib import Path

import yaml

from metalseed.pki import x509 as px
from metalseed.pki.issue import init_pki
from metalseed.pki.profiles import ENCRYPTION_KEY, SERVER, kubelet_serving_id, leaf_specs

from .test_pki import NOW, make_cluster, snapshot

KUBE = {"kubernetes": True, "etcd_source": "tarball", "etcd_tarball_url": "https://e.example/e.tgz",
        "etcd_tarball_sha256": "0" * 64}


def test_without_kubernetes_none_of_it_is_made(tmp_path: Path) -> None:
    c = make_cluster(tmp_path / "pki")
    init_pki(c, now=NOW)
    assert not (c.pki_dir / ENCRYPTION_KEY).exists()
    assert not any(s.id.startswith("kubelet-serving/") for s in leaf_specs(c))


def test_kubernetes_material(tmp_path: Path) -> None:
    c = make_cluster(tmp_path / "pki", **KUBE)
    init_pki(c, now=NOW)
    root = c.pki_dir
    for n in c.nodes:
        info = px.describe(px.load_cert((root / f"{kubelet_serving_id(n.name)}.crt").read_bytes()))
        assert info.common_name == f"system:node:{n.name}"
        assert info.usages == {SERVER}
        assert set(info.sans()) == {n.name, str(n.address)}
        verify = subprocess.run(["openssl", "verify", "-attime", str(int(NOW.timestamp())),
                                 "-purpose", "sslserver", "-CAfile", str(root / "ca.crt"),
                                 str(root / f"{kubelet_serving_id(n.name)}.crt")],
                                capture_output=True, text=True, check=False)
        assert verify.returncode == 0, verify.stderr
        conf = yaml.safe_load((root / "kubeconfig" / "kubelet" / f"{n.name}.conf").read_text())
        assert conf["clusters"][0]["cluster"]["server"] == f"https://{c.vip}:6443"
        cert = base64.b64decode(conf["users"][0]["user"]["client-certificate-data"])
        assert cert == (root / f"kubelet/{n.name}.crt").read_bytes()
    proxy = yaml.safe_load((root / "kubeconfig" / "kube-proxy.conf").read_text())
    user = px.describe(px.load_cert(base64.b64decode(proxy["users"][0]["user"]
                                                     ["client-certificate-data"])))
    assert user.common_name == "system:kube-proxy"
    key = root / ENCRYPTION_KEY
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(base64.b64decode(key.read_bytes().strip())) == 32


def test_a_second_run_keeps_every_byte(tmp_path: Path) -> None:
    c = make_cluster(tmp_path / "pki", **KUBE)
    init_pki(c, now=NOW)
    before = snapshot(c.pki_dir)
    assert not init_pki(c, now=NOW).changed
    assert snapshot(c.pki_dir) == before
