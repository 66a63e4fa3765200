"""containerd's files, rendered from the model: valid TOML/YAML saying what the deploy promises."""

from __future__ import annotations

import tomllib

from metalseed.deploys import containerd as d
from metalseed.deploys.converge import converged_snapshot, parse_snapshot, plan
from metalseed.model import build_cluster
from metalseed.render import containerd as r

from .test_model import hosts

PAUSE = "registry.k8s.io/pause:3.10.1"
MIRROR = "http://10.20.0.1:5080"


def test_config_is_version_3_with_the_mirror_pause_image_and_cgroupfs() -> None:
    doc = tomllib.loads(r.config_toml("v2.2.9", PAUSE))
    assert doc["version"] == 3
    images = doc["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == PAUSE
    assert images["registry"]["config_path"] == "/etc/containerd/certs.d"
    assert images["snapshotter"] == "overlayfs"
    runtime = doc["plugins"]["io.containerd.cri.v1.runtime"]
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runtime["containerd"]["default_runtime_name"] == "runc"
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"BinaryName": "/usr/local/sbin/runc", "SystemdCgroup": False}
    assert runtime["cni"] == {"bin_dirs": ["/opt/cni/bin"], "conf_dir": "/etc/cni/net.d"}
    assert doc["grpc"]["address"] == r.SOCKET
    assert runtime["restrict_oom_score_adj"] is False
    restricted = tomllib.loads(r.config_toml("v2.2.9", PAUSE, restrict_oom_score_adj=True))
    assert restricted["plugins"]["io.containerd.cri.v1.runtime"]["restrict_oom_score_adj"] is True
    systemd = tomllib.loads(r.config_toml("v2.2.9", PAUSE, cgroup_driver="systemd"))
    assert systemd["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"][
        "options"]["SystemdCgroup"] is True


def test_each_upstream_registry_pulls_through_the_mirror_over_plain_http() -> None:
    for registry, server in (("registry.k8s.io", "https://registry.k8s.io"),
                             ("docker.io", "https://registry-1.docker.io")):
        doc = tomllib.loads(r.hosts_toml(registry, MIRROR + "/"))
        assert doc["server"] == server
        assert doc["host"] == {MIRROR: {"capabilities": ["pull", "resolve"]}}
        assert r.hosts_toml_path(registry) == f"/etc/containerd/certs.d/{registry}/hosts.toml"


def test_crictl_and_unit() -> None:
    assert r.crictl_yaml().splitlines()[:2] == [
        "runtime-endpoint: unix:///run/containerd/containerd.sock",
        "image-endpoint: unix:///run/containerd/containerd.sock"]
    unit = r.unit("v2.2.9")
    assert "ExecStart=/usr/local/bin/containerd --config /etc/containerd/config.toml\n" in unit
    assert "Delegate=yes\n" in unit and "KillMode=process\n" in unit
    assert "WantedBy=multi-user.target\n" in unit


def test_node_spec_with_and_without_a_mirror() -> None:
    with_mirror = build_cluster(hosts(common={"mirror_url": MIRROR}))
    spec = d.node_spec(with_mirror, PAUSE, "v2.2.9")
    paths = [f.path for f in spec.files]
    assert paths == [r.CONFIG, *(r.hosts_toml_path(x) for x in r.REGISTRIES), r.CRICTL_CONF,
                     r.UNIT_FILE]
    assert spec.units == (r.UNIT,) and spec.absent == ()
    config = spec.files[0]
    assert config.check and "config dump" in config.check and config.restart
    # A converged host: nothing to do (a second run reports zero changes).
    assert plan(spec, parse_snapshot(converged_snapshot(spec))) == []

    upstream = d.node_spec(build_cluster(hosts()), PAUSE, "v2.2.9")
    assert [f.path for f in upstream.files] == [r.CONFIG, r.CRICTL_CONF, r.UNIT_FILE]
    assert upstream.absent == tuple(r.hosts_toml_path(x) for x in r.REGISTRIES)


def test_without_a_mirror_the_pinned_pause_image_is_the_sandbox() -> None:
    from metalseed.mirror import load_pins

    assert d.sandbox_image(build_cluster(hosts())) == load_pins().get("pause").images[0]
