"""containerd on every node, as pure functions: ``files/containerd/*.j2`` filled in from the model.

Layout on a node::

    /usr/local/bin/containerd, containerd-shim-runc-v2, ctr, crictl   (deploys/artifacts.py)
    /usr/local/sbin/runc
    /opt/cni/bin/*                               CNI plugins
    /etc/containerd/config.toml                  version 3 (containerd 2.x), CRI plugin settings
    /etc/containerd/certs.d/<registry>/hosts.toml    one per upstream registry: pull via the mirror
    /etc/crictl.yaml                             crictl talks to containerd's socket
    /etc/systemd/system/containerd.service

The cgroup driver is ``cgroupfs``: the lab's hosts (and many bare-metal ones of this vintage) run
cgroup v1 with a systemd too old to delegate v1 controllers reliably; the kubelet must use the same.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from metalseed.render.templates import render

CONFIG = "/etc/containerd/config.toml"
CERTS_DIR = "/etc/containerd/certs.d"
CRICTL_CONF = "/etc/crictl.yaml"
UNIT_FILE = "/etc/systemd/system/containerd.service"
UNIT = "containerd.service"
BIN_DIR = "/usr/local/bin"
SBIN_DIR = "/usr/local/sbin"
CONTAINERD = f"{BIN_DIR}/containerd"
CRICTL = f"{BIN_DIR}/crictl"
RUNC = f"{SBIN_DIR}/runc"
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"
SOCKET = "/run/containerd/containerd.sock"
CGROUP_DRIVER = "cgroupfs"

# Upstream registries whose images the mirror serves, and the address each really lives at.
REGISTRIES = {
    "registry.k8s.io": "https://registry.k8s.io",
    "docker.io": "https://registry-1.docker.io",
}


def hosts_toml_path(registry: str) -> str:
    return f"{CERTS_DIR}/{registry}/hosts.toml"


def registry_address(mirror_url: str) -> str:
    """The mirror's registry as containerd names a host: scheme, host and port of mirror_url."""
    u = urlsplit(mirror_url)
    return f"{u.scheme}://{u.netloc}"


def config_toml(containerd_version: str, sandbox_image: str,
                restrict_oom_score_adj: bool = False, cgroup_driver: str = CGROUP_DRIVER) -> str:
    return render("containerd/config.toml.j2", containerd_version=containerd_version,
                  socket=SOCKET, sandbox_image=sandbox_image, certs_dir=CERTS_DIR, runc=RUNC,
                  cgroup_driver=cgroup_driver, cni_bin_dir=CNI_BIN_DIR, cni_conf_dir=CNI_CONF_DIR,
                  restrict_oom_score_adj=restrict_oom_score_adj)


def hosts_toml(registry: str, mirror_url: str) -> str:
    return render("containerd/hosts.toml.j2", registry=registry, server=REGISTRIES[registry],
                  mirror=registry_address(mirror_url))


def crictl_yaml() -> str:
    return render("containerd/crictl.yaml.j2", socket=SOCKET)


def unit(containerd_version: str) -> str:
    return render("containerd/containerd.service.j2", containerd_version=containerd_version,
                  containerd=CONTAINERD, config=CONFIG)
