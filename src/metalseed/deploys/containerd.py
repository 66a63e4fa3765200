"""containerd, runc, the CNI plugins and crictl on every node, from pinned artifacts.

Two operations per host: :func:`metalseed.deploys.artifacts.install` for the binaries (one check
command when they are in place; containerd restarts only when a binary changed), then ONE converge
operation for the files of :mod:`metalseed.render.containerd` and the unit (containerd restarts
only when its configuration or unit changed; ``crictl info`` must answer before the host is done).
With ``mirror_url`` set, images of ``registry.k8s.io`` and ``docker.io`` are pulled through the
mirror's registry; without it no ``hosts.toml`` is left behind.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from metalseed.deploys import artifacts
from metalseed.deploys.converge import HostSpec, ManagedDir, ManagedFile, converge
from metalseed.errors import ArtifactError, MetalseedError
from metalseed.model import Cluster, cluster_from_inventory
from metalseed.render import containerd as r

BINARIES_OP = "containerd: binaries (containerd, runc, CNI plugins, crictl)"
CONVERGE_OP = "containerd: configuration and unit"
PAUSE = "pause"
HEALTH = (f"timeout 60 sh -c 'until {r.CRICTL} info >/dev/null 2>&1; do sleep 0.2; done' || "
          "{ echo 'metalseed: containerd does not answer crictl info; its last log lines:' >&2; "
          "journalctl -u containerd -n 15 --no-pager >&2; exit 1; }")


def downloads(cluster: Cluster) -> tuple[artifacts.Download, ...]:
    return (
        *artifacts.component_downloads(cluster, "containerd", r.BIN_DIR),
        *artifacts.component_downloads(cluster, "runc", r.SBIN_DIR, filename="runc"),
        *artifacts.component_downloads(cluster, "cni-plugins", r.CNI_BIN_DIR),
        *artifacts.component_downloads(cluster, "crictl", r.BIN_DIR),
    )


def sandbox_image(cluster: Cluster) -> str:
    """The pause image: as the mirror names it when there is one, else as pinned."""
    from metalseed.mirror import load_manifest, load_pins

    try:
        if cluster.mirror_url:
            refs = [a.image for a in load_manifest(cluster.mirror_dir).images()
                    if (a.component or a.name) == PAUSE and a.image]
            if not refs:
                raise ArtifactError(f"the mirror manifest under {cluster.mirror_dir} has no pause "
                                    "image (run `metalseed mirror build`)")
            return refs[0]
        return load_pins().get(PAUSE).images[0]
    except ArtifactError:
        raise
    except (MetalseedError, IndexError) as e:
        raise ArtifactError(f"the pause image: {e}") from e


def containerd_version() -> str:
    from metalseed.mirror import load_pins

    return load_pins().get("containerd").version


def node_spec(cluster: Cluster, pause: str, version: str) -> HostSpec:
    mirror_files = tuple(
        ManagedFile(r.hosts_toml_path(reg), r.hosts_toml(reg, cluster.mirror_url).encode())
        for reg in r.REGISTRIES
    ) if cluster.mirror_url else ()
    return HostSpec(
        dirs=(ManagedDir(r.CNI_CONF_DIR),),
        files=(
            ManagedFile(r.CONFIG, r.config_toml(version, pause,
                                                cluster.containerd_restrict_oom_score_adj).encode(),
                        check=f"{r.CONTAINERD} --config {{path}} config dump >/dev/null",
                        unit=r.UNIT, restart=True),
            *mirror_files,
            ManagedFile(r.CRICTL_CONF, r.crictl_yaml().encode()),
            ManagedFile(r.UNIT_FILE, r.unit(version).encode(), unit=r.UNIT, restart=True,
                        unit_file=True),
        ),
        units=(r.UNIT,),
        health={r.UNIT: HEALTH},
        absent=() if cluster.mirror_url else tuple(r.hosts_toml_path(reg) for reg in r.REGISTRIES),
    )


@deploy("metalseed containerd: containerd, runc, CNI plugins and crictl")
def containerd() -> None:
    cluster = cluster_from_inventory(host.inventory)
    artifacts.install(name=BINARIES_OP, downloads=downloads(cluster), restart=(r.UNIT,))
    converge(name=CONVERGE_OP,
             spec=node_spec(cluster, sandbox_image(cluster), containerd_version()))
