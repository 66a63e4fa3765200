"""Kubernetes on the foundation: the control plane on the masters, kubelet, kube-proxy and flannel
on every node, then CoreDNS and the nodes' roles through the API.

Operations, the same on every host (workers make the control plane's with nothing to do):

1. the binaries from the mirror (the multi-call ``kube``, ``flanneld``, the flannel CNI plugin),
   checked against the operator's manifest; then containerd (:mod:`metalseed.deploys.containerd`);
2. ONE converge of the control plane per master, masters one at a time (``_serial``): a component
   restarts only when its own files changed (a new binary changes its unit), and the next master
   waits for this one's ``/readyz`` (controller-manager, scheduler: ``/healthz``);
3. a gate on the operator's machine: the API answers ``/readyz`` through the VIP;
4. the RBAC the node agents need (flanneld's), server-side applied;
5. ONE converge per node for kubelet, kube-proxy and flanneld (each behind its health check);
6. CoreDNS and the node role labels, server-side applied (field manager ``metalseed``) once every
   node registered and every namespace's kube-root-ca.crt holds the store's trust bundle (CoreDNS's
   pod template carries the bundle's digest, so a CA rotation rolls it onto the new bundle); then
   waits on real conditions: every node Ready, kube-root-ca.crt current, CoreDNS rolled out;
7. after a CA rotation's last phase, the API servers' published authentication CAs
   (extension-apiserver-authentication) are written again without the retired CA.

Every object of 4 and 6 is validated against the pinned Kubernetes' OpenAPI schemas (the mirror's
``kubernetes-openapi``) when the deploy is prepared, before any host is touched.

Objects are compared with a server-side dry run when the run is prepared, so a converged cluster
reports no change.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from pyinfra import host
from pyinfra.api import deploy

from metalseed.deploys import artifacts
from metalseed.deploys.containerd import containerd
from metalseed.deploys.converge import HostSpec, ManagedDir, ManagedFile, converge
from metalseed.deploys.gates import gate
from metalseed.errors import ArtifactError, DeployError
from metalseed.kube import apply as ka
from metalseed.kube.apply import apply_objects
from metalseed.mirror.recipes import PREVIOUS_KUBE
from metalseed.model import Cluster, Node, cluster_from_inventory, kubernetes_releases
from metalseed.pki.issue import ensure_store, store_for
from metalseed.pki.profiles import ENCRYPTION_KEY, kubelet_serving_id, tenant_dir
from metalseed.render import cilium as rcil
from metalseed.render import containerd as rc
from metalseed.render import edge
from metalseed.render import kubernetes as r

BINARIES_OP = "kubernetes: binaries (kube, flanneld, flannel CNI plugin)"
CONTROL_PLANE_OP = "kubernetes: control plane (kube-apiserver, controller-manager, scheduler)"
NODE_OP = "kubernetes: kubelet, kube-proxy, flanneld"
API_TIMEOUT = 120.0
SYSCTLS = (("net.ipv4.ip_forward", "1"),)


def _retry(what: str, command: str, seconds: int = 90) -> str:
    return (f"timeout {seconds} sh -c 'until {command} >/dev/null 2>&1; do sleep 1; done' || "
            f"{{ echo 'metalseed: {what} did not answer within {seconds}s' >&2; exit 1; }}")


def apiserver_health(cluster: Cluster, node: Node) -> str:
    # /readyz needs credentials (anonymous auth is off): the master's own kubelet-client pair.
    cert = f"{r.PKI}/apiserver-kubelet-client"
    url = f"{r.api_url(node.address, cluster.apiserver_port)}/readyz"
    curl = (f"curl -fsS --max-time 3 --cacert {r.PKI}/ca.crt --cert {cert}.crt --key {cert}.key "
            f"{url}")
    # Then until the edge's nginx takes this API server back (it refused connects while it
    # restarted): the next master's must not go down while this one is still out of rotation.
    return (_retry(f"kube-apiserver on {node.name} ({url})", curl, 180)
            + f" && sleep {edge.API_FAIL_TIMEOUT_S + 1}")


HEALTH_CM = _retry("kube-controller-manager (/healthz)",
                   f"curl -fsSk --max-time 3 https://127.0.0.1:{r.CM_PORT}/healthz")
HEALTH_SCHEDULER = _retry("kube-scheduler (/healthz)",
                          f"curl -fsSk --max-time 3 https://127.0.0.1:{r.SCHEDULER_PORT}/healthz")
HEALTH_KUBELET = _retry("kubelet (/healthz)",
                        f"curl -fsS --max-time 3 http://127.0.0.1:{r.KUBELET_HEALTHZ_PORT}/healthz")
HEALTH_PROXY = _retry("kube-proxy (/healthz)",
                      f"curl -fsS --max-time 3 http://127.0.0.1:{r.PROXY_HEALTHZ_PORT}/healthz")
HEALTH_FLANNEL = _retry(f"flanneld ({r.FLANNEL_SUBNET_FILE})", f"test -s {r.FLANNEL_SUBNET_FILE}")
# The agent compiles its datapath before it is healthy: minutes on a busy 2-core node.
HEALTH_CILIUM = _retry("cilium-agent (/healthz)",
                       f"curl -fsS --max-time 3 http://127.0.0.1:{rcil.HEALTH_PORT}/healthz", 300)


# --------------------------------------------------------------------------------------------
# Binaries


@cache
def _pinned_version(component: str) -> str:
    from metalseed.mirror import load_pins

    return load_pins().get(component).version


def _only(downloads: tuple[artifacts.Download, ...], filename: str, component: str
          ) -> artifacts.Download:
    found = [d for d in downloads if d.filename == filename]
    if not found:
        raise ArtifactError(f"the mirror has no {filename!r} for {component} (run `metalseed mirror "
                            "build`)")
    return found[0]


def downloads(cluster: Cluster) -> tuple[artifacts.Download, ...]:
    """One download each: the multi-call ``kube`` (not its six names, each the same 100+ MB),
    ``flanneld`` and the flannel CNI plugin; where Cilium runs, its agent, CNI plugin and
    datapath sources too (:func:`cilium_downloads`)."""
    if not cluster.mirror_url:
        raise ArtifactError("Kubernetes is installed from a mirror (set mirror_url): the pins hold no "
                            "upstream sha256 for Kubernetes 1.36 or flannel to check a download "
                            "against")
    component = kube_component(cluster)
    filename = "kube" if component == "kubernetes" else PREVIOUS_KUBE
    kube = _only(artifacts.component_downloads(cluster, component, r.BIN_DIR), filename, component)
    # Whichever release, it is the host's one ``kube`` with one stamp: a change of release
    # replaces it (and the units naming its digest restart the components).
    kube = replace(kube, name="kubernetes/kube", filename="kube")
    return (
        kube,
        _only(artifacts.component_downloads(cluster, "flannel", r.BIN_DIR), "flanneld", "flannel"),
        _only(artifacts.component_downloads(cluster, "flannel-cni-plugin", rc.CNI_BIN_DIR),
              "flannel", "flannel-cni-plugin"),
        *cilium_downloads(cluster),
    )


def cilium_downloads(cluster: Cluster) -> tuple[artifacts.Download, ...]:
    """The agent, its CNI plugin and its datapath sources, each where it belongs; none unless the
    cluster's network policy engine is Cilium."""
    if cluster.kubernetes.network_policy != "cilium":
        return ()
    if not cluster.mirror_url:
        raise ArtifactError("network_policy = 'cilium' installs the agent from a mirror (set "
                            "mirror_url): Cilium publishes no host binaries to download")
    found = artifacts.component_downloads(cluster, "cilium", r.BIN_DIR)
    return (_only(found, "cilium-agent", "cilium"),
            replace(_only(found, "cilium-cni", "cilium"), dest_dir=rc.CNI_BIN_DIR),
            replace(_only(found, "cilium-bpf.tar", "cilium"), dest_dir=rcil.BPF_TAR_DIR,
                    mode=0o644))


@dataclass(frozen=True)
class CiliumFiles:
    """What a node's agent unit names: the agent's and the sources' digests."""

    agent: r.Binary
    bpf_sha256: str


def cilium_files(cluster: Cluster) -> CiliumFiles | None:
    found = cilium_downloads(cluster)
    if not found:
        return None
    agent, _, bpf = found
    return CiliumFiles(r.Binary(_pinned_version("cilium"), agent.sha256, rcil.AGENT), bpf.sha256)


def release(cluster: Cluster) -> str:
    """The Kubernetes release this cluster runs (``kubernetes_version``)."""
    return cluster.kubernetes.version or _pinned_version("kubernetes")


def kube_component(cluster: Cluster) -> str:
    """The pin (and mirror component) of the cluster's release."""
    return kubernetes_releases()[release(cluster)]


def binaries(cluster: Cluster) -> tuple[r.Binary, r.Binary]:
    kube, flanneld, *_ = downloads(cluster)
    return (r.Binary(release(cluster), kube.sha256),
            r.Binary(_pinned_version("flannel"), flanneld.sha256, r.FLANNELD))


# --------------------------------------------------------------------------------------------
# What each host should look like (pure, given the store's bytes)


def _read(cluster: Cluster, relative: str) -> bytes:
    path = store_for(cluster).root / relative
    try:
        return path.read_bytes()
    except OSError as e:
        raise DeployError(f"kubernetes: cannot read {path} from the PKI store: {e.strerror} "
                          "(run `metalseed pki init INVENTORY` with kubernetes = True)") from e


def master_spec(cluster: Cluster, node: Node, kube: r.Binary) -> HostSpec:
    secret, public = 0o600, 0o644
    pki = tuple(ManagedFile(f.path, _read(cluster, f.store_path), secret if f.secret else public,
                            dir_mode=0o700, unit=f.unit, restart=True)
                for f in r.control_plane_pki())
    key = _read(cluster, ENCRYPTION_KEY).decode().strip()
    own = r.api_url(node.address, cluster.apiserver_port)
    return HostSpec(
        dirs=(ManagedDir(r.ETC), ManagedDir(r.PKI, 0o700), ManagedDir(f"{r.PKI}/etcd", 0o700),
              ManagedDir(r.APISERVER_DIR, 0o700), ManagedDir(r.AUDIT_LOG_DIR, 0o700),
              ManagedDir(r.CM_DIR, 0o700)),
        files=(
            *pki,
            ManagedFile(r.ENCRYPTION_CONFIG, r.encryption_config(key).encode(), secret,
                        unit=r.APISERVER_UNIT, restart=True),
            ManagedFile(r.AUDIT_POLICY, r.audit_policy().encode(), unit=r.APISERVER_UNIT,
                        restart=True),
            ManagedFile(r.ADMISSION_CONFIG, r.admission_config().encode(), unit=r.APISERVER_UNIT,
                        restart=True),
            ManagedFile(r.CM_KUBECONFIG, r.kubeconfig_with_server(
                _read(cluster, "kubeconfig/controller-manager.conf"), own), secret,
                unit=r.CM_UNIT, restart=True),
            ManagedFile(r.SCHEDULER_KUBECONFIG, r.kubeconfig_with_server(
                _read(cluster, "kubeconfig/scheduler.conf"), own), secret,
                unit=r.SCHEDULER_UNIT, restart=True),
            ManagedFile(f"/etc/systemd/system/{r.APISERVER_UNIT}",
                        r.apiserver_unit(cluster, node, kube).encode(), unit=r.APISERVER_UNIT,
                        restart=True, unit_file=True),
            ManagedFile(f"/etc/systemd/system/{r.CM_UNIT}",
                        r.controller_manager_unit(cluster, kube).encode(), unit=r.CM_UNIT,
                        restart=True, unit_file=True),
            ManagedFile(f"/etc/systemd/system/{r.SCHEDULER_UNIT}",
                        r.scheduler_unit(kube).encode(), unit=r.SCHEDULER_UNIT, restart=True,
                        unit_file=True),
        ),
        units=r.CONTROL_PLANE_UNITS,
        health={r.APISERVER_UNIT: apiserver_health(cluster, node), r.CM_UNIT: HEALTH_CM,
                r.SCHEDULER_UNIT: HEALTH_SCHEDULER},
    )


@dataclass(frozen=True)
class NodePKI:
    """Where in the store a node's material is (relative paths): the seed's own by default; a
    tenant worker's under ``tenants/<name>/`` (see :func:`tenant_node_pki`)."""

    ca_bundle: str
    serving: str
    """The kubelet's serving pair, without ``.crt``/``.key``."""
    kubelet_conf: str
    proxy_conf: str
    flannel_conf: str


def seed_node_pki(node: Node) -> NodePKI:
    return NodePKI("ca-bundle.crt", kubelet_serving_id(node.name),
                   f"kubeconfig/kubelet/{node.name}.conf", "kubeconfig/kube-proxy.conf",
                   "kubeconfig/flannel.conf")


def tenant_node_pki(tenant: str, node: Node) -> NodePKI:
    d = tenant_dir(tenant)
    return NodePKI(f"{d}/ca-bundle.crt", f"{d}/{kubelet_serving_id(node.name)}",
                   f"{d}/kubelet/{node.name}.conf", f"{d}/kube-proxy.conf", f"{d}/flannel.conf")


def node_spec(cluster: Cluster, node: Node, kube: r.Binary, flanneld: r.Binary,
              pki: NodePKI | None = None) -> HostSpec:
    secret = 0o600
    p = pki or seed_node_pki(node)
    kubelet, proxy, flannel = r.KUBELET_UNIT, r.PROXY_UNIT, r.FLANNEL_UNIT
    # A tenant's worker is no node of the seed: the seed's engine is not its.
    cil = cilium_files(cluster) if pki is None else None
    chained = (rcil.cni_plugin_json(),) if cil else ()
    cilium_dirs = (ManagedDir(rcil.DIR, 0o700),) if cil else ()
    cilium = () if cil is None else (
        ManagedFile(rcil.KUBECONFIG, _read(cluster, "kubeconfig/cilium.conf"), secret,
                    unit=rcil.UNIT, restart=True),
        ManagedFile(f"/etc/systemd/system/{rcil.UNIT}",
                    rcil.agent_unit(cluster, node, cil.agent, cil.bpf_sha256).encode(),
                    unit=rcil.UNIT, restart=True, unit_file=True),
    )
    return HostSpec(
        sysctls=SYSCTLS,
        dirs=(ManagedDir(r.ETC), ManagedDir(r.KUBELET_DIR, 0o700), ManagedDir(r.KUBELET_PKI, 0o700),
              ManagedDir(r.PROXY_DIR, 0o700), ManagedDir(r.FLANNEL_DIR, 0o700), *cilium_dirs),
        files=(
            ManagedFile(r.KUBELET_CA, _read(cluster, p.ca_bundle), unit=kubelet, restart=True),
            ManagedFile(r.KUBELET_CERT, _read(cluster, f"{p.serving}.crt"), unit=kubelet,
                        restart=True),
            ManagedFile(r.KUBELET_KEY, _read(cluster, f"{p.serving}.key"), secret, unit=kubelet,
                        restart=True),
            ManagedFile(r.KUBELET_KUBECONFIG, _read(cluster, p.kubelet_conf), secret, unit=kubelet,
                        restart=True),
            ManagedFile(r.KUBELET_CONFIG, r.kubelet_config(cluster, node).encode(), unit=kubelet,
                        restart=True),
            ManagedFile(f"/etc/systemd/system/{kubelet}", r.kubelet_unit(node, kube).encode(),
                        unit=kubelet, restart=True, unit_file=True),
            ManagedFile(r.PROXY_KUBECONFIG, _read(cluster, p.proxy_conf), secret,
                        unit=proxy, restart=True),
            ManagedFile(r.PROXY_CONFIG, r.kube_proxy_config(cluster, node).encode(), unit=proxy,
                        restart=True),
            ManagedFile(f"/etc/systemd/system/{proxy}", r.kube_proxy_unit(node, kube).encode(),
                        unit=proxy, restart=True, unit_file=True),
            ManagedFile(r.FLANNEL_KUBECONFIG, _read(cluster, p.flannel_conf), secret,
                        unit=flannel, restart=True),
            ManagedFile(r.FLANNEL_NET_CONF, r.flannel_net_conf(cluster).encode(), unit=flannel,
                        restart=True),
            # containerd watches the directory: no unit to restart for the CNI configuration.
            ManagedFile(r.FLANNEL_CONFLIST, r.flannel_conflist(chained).encode()),
            ManagedFile(f"/etc/systemd/system/{flannel}", r.flanneld_unit(node, flanneld).encode(),
                        unit=flannel, restart=True, unit_file=True),
            *cilium,
        ),
        units=(*r.NODE_UNITS, *((rcil.UNIT,) if cil else ())),
        health={kubelet: HEALTH_KUBELET, proxy: HEALTH_PROXY, flannel: HEALTH_FLANNEL,
                **({rcil.UNIT: HEALTH_CILIUM} if cil else {})},
    )


# --------------------------------------------------------------------------------------------
# The deploy


def _this_node(cluster: Cluster) -> Node:
    try:
        return cluster.node(host.name)
    except KeyError:
        raise DeployError(f"host {host.name!r} is not a node of cluster {cluster.name!r}") from None


def _shared(key: str, fn: Any) -> Any:
    """Computed once per run for every host (manifest lookups, the store's bytes)."""
    cache_ = vars(host.inventory).setdefault("_metalseed_kubernetes", {})
    if key not in cache_:
        cache_[key] = fn()
    return cache_[key]


@deploy("metalseed kubernetes: control plane, nodes, flannel, CoreDNS")
def kubernetes() -> None:
    cluster = cluster_from_inventory(host.inventory)
    if not cluster.kubernetes.enabled:
        raise DeployError("kubernetes: set kubernetes = True (with etcd_source = 'mirror' or "
                          "'tarball') to deploy Kubernetes")
    node = _this_node(cluster)
    # Offline, before any host is touched: every object this run would apply fits the schemas.
    _shared("objects valid", lambda: ka.validate_all(cluster))
    ensure_store(cluster, host.inventory)
    todo = _shared("downloads", lambda: downloads(cluster))
    kube, flanneld = _shared("binaries", lambda: binaries(cluster))
    # Every host makes the same calls from the same lines (see deploys/edge.py).
    artifacts.install(name=BINARIES_OP, downloads=todo)
    containerd()
    spec = master_spec(cluster, node, kube) if node.is_master else HostSpec()
    converge(name=CONTROL_PLANE_OP, spec=spec, _serial=True)
    inventory = host.inventory
    gate(name="kubernetes: the API answers through the VIP", description="api",
         check=lambda: _wait_api(cluster, inventory), _run_once=True)
    apply_objects(name=ka.BOOTSTRAP_OP, cluster=cluster, which=ka.BOOTSTRAP, _run_once=True)
    converge(name=NODE_OP, spec=node_spec(cluster, node, kube, flanneld))
    apply_objects(name=ka.ADDONS_OP, cluster=cluster, which=ka.ADDONS, _run_once=True)
    gate(name=ka.WAIT_OP, description="objects", check=lambda: ka.wait_all(cluster),
         _run_once=True)
    ka.retire_authentication_cas(name=ka.RETIRE_OP, cluster=cluster, _run_once=True)


def _wait_api(cluster: Cluster, inventory: Any) -> None:
    from metalseed.kube.client import wait_api

    del inventory
    wait_api(cluster, API_TIMEOUT)

