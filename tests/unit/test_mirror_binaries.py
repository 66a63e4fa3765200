"""The built mirror's binaries report their pinned versions (skipped when no mirror is built)."""

from __future__ import annotations

import subprocess

import pytest

from metalseed.errors import MirrorError
from metalseed.mirror import default_root, load_manifest, load_pins

try:
    NAMES = set(load_manifest(default_root()).names())
except MirrorError:
    NAMES = set()

PINS = load_pins()
V = {p.name: p.version for p in PINS.pins}

# binary -> (argv after it, text the output must hold)
CHECKS = {
    "kube-apiserver": (["--version"], f"Kubernetes {V['kubernetes']}"),
    "kube-controller-manager": (["--version"], f"Kubernetes {V['kubernetes']}"),
    "kube-scheduler": (["--version"], f"Kubernetes {V['kubernetes']}"),
    "kubelet": (["--version"], f"Kubernetes {V['kubernetes']}"),
    "kube-proxy": (["--version"], f"Kubernetes {V['kubernetes']}"),
    "kubectl": (["version", "--client"], f"Client Version: {V['kubernetes']}"),
    "etcd": (["--version"], f"etcd Version: {V['etcd'].removeprefix('v')}"),
    "etcdctl": (["version"], f"etcdctl version: {V['etcd'].removeprefix('v')}"),
    "containerd": (["--version"], V["containerd"]),
    "runc": (["--version"], f"runc version {V['runc'].removeprefix('v')}"),
    "crictl": (["--version"], V["crictl"]),
    "bridge": ([], V["cni-plugins"]),
    "flanneld": (["--version"], V["flannel"]),
    "coredns": (["-version"], f"CoreDNS-{V['coredns'].removeprefix('v')}"),
    "traefik": (["version"], V["traefik"]),
    "agnhost": (["--version"], V["agnhost"]),
    "e2e.test": (["--version"], V["e2e"]),
    "ginkgo": (["version"], "Ginkgo Version 2."),
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_binary_reports_its_pinned_version(name: str) -> None:
    if name not in NAMES:
        pytest.skip(f"{name} is not in a built mirror at {default_root()} (metalseed mirror build)")
    path = default_root() / load_manifest(default_root()).get(name).path
    args, expected = CHECKS[name]
    out = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=30)
    assert expected in out.stdout + out.stderr, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])


def test_runc_has_seccomp_and_is_static() -> None:
    if "runc" not in NAMES:
        pytest.skip(f"runc is not in a built mirror at {default_root()}")
    path = default_root() / load_manifest(default_root()).get("runc").path
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
    assert "libseccomp:" in out.stdout
    ldd = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr
