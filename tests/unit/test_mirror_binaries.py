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


def test_coredns_has_every_plugin_the_corefile_names() -> None:
    """Our CoreDNS main imports a selection of plugins: every directive of the Corefile we ship
    must be among those the binary registers (a missing one would fail CoreDNS at start)."""
    if "coredns" not in NAMES:
        pytest.skip(f"coredns is not in a built mirror at {default_root()}")
    from metalseed.render.templates import FILES_DIR

    corefile = (FILES_DIR / "kubernetes" / "Corefile.j2").read_text()
    # A directive is a line's first word inside the server block; "}" and "{{" are neither.
    names = {line.split()[0] for line in corefile.splitlines()[1:]
             if line.startswith("    ") and not line.startswith("        ")
             and line.split() and line.split()[0] != "}"}
    path = default_root() / load_manifest(default_root()).get("coredns").path
    out = subprocess.run([str(path), "-plugins"], capture_output=True, text=True, timeout=30)
    registered = set(out.stdout.split())  # one plugin name a line
    assert {"kubernetes", "forward", "prometheus"} <= names, names  # the parse found the block
    assert names <= registered, (names - registered, out.stdout[-2000:])
    assert "route53" not in registered  # the selection took: upstream's main registers it
