"""Kubernetes on the nodes, as pure functions: ``files/kubernetes/*.j2`` filled in from the model.

Layout on a master (the kubeadm layout for the control plane's PKI)::

    /usr/local/bin/kube                       the mirror's multi-call binary (argv[1]: component)
    /etc/kubernetes/pki/                      from the PKI store: ca.crt (trust bundle), apiserver,
                                              apiserver-kubelet-client, front-proxy-ca.crt,
                                              front-proxy-client, sa.key/sa.pub, etcd/ca.crt,
                                              apiserver-etcd-client
    /etc/kubernetes/controller-manager.conf   kubeconfigs, server: this master's own API server
    /etc/kubernetes/scheduler.conf
    /etc/kubernetes/apiserver/                encryption, audit and admission configuration
    /var/log/kubernetes/audit.log             the audit log, rotated by the API server itself
    /etc/systemd/system/kube-{apiserver,controller-manager,scheduler}.service

On every node (masters too)::

    /etc/kubernetes/kubelet/                  config.yaml, kubeconfig, pki/{ca.crt,kubelet.crt,key}
    /etc/kubernetes/kube-proxy/               config.yaml, kubeconfig
    /etc/kubernetes/flannel/net-conf.json     flanneld (systemd), with the kubelet's kubeconfig
    /etc/cni/net.d/10-flannel.conflist
    /etc/systemd/system/{kubelet,kube-proxy,flanneld}.service

Each component has files of its own, so a change restarts exactly the component that reads it.
The API server binds the node's own address: the VIP's port is nginx's TCP pass-through on the
same masters, so a wildcard bind would collide with it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

import yaml

from metalseed.kube.schema import KUBE_PROXY_CONFIGURATION_VERSION, KUBELET_CONFIGURATION_VERSION
from metalseed.model import Cluster, Node
from metalseed.render.containerd import CGROUP_DRIVER, CNI_CONF_DIR, SOCKET
from metalseed.render.etcd import CIPHER_SUITES as GO_CIPHER_SUITES
from metalseed.render.templates import render

BIN_DIR = "/usr/local/bin"
KUBE = f"{BIN_DIR}/kube"
FLANNELD = f"{BIN_DIR}/flanneld"
ETC = "/etc/kubernetes"
PKI = f"{ETC}/pki"
APISERVER_DIR = f"{ETC}/apiserver"
ENCRYPTION_CONFIG = f"{APISERVER_DIR}/encryption-config.yaml"
AUDIT_POLICY = f"{APISERVER_DIR}/audit-policy.yaml"
ADMISSION_CONFIG = f"{APISERVER_DIR}/admission-config.yaml"
AUDIT_LOG_DIR = "/var/log/kubernetes"
AUDIT_LOG = f"{AUDIT_LOG_DIR}/audit.log"
CM_KUBECONFIG = f"{ETC}/controller-manager.conf"
# The controller-manager's own copies of the trust bundles: it reads --root-ca-file once, at
# start, and publishes it to every namespace as the kube-root-ca.crt ConfigMap (what pods trust
# the API server with), so a new bundle must restart it, not only the API server.
CM_DIR = f"{ETC}/controller-manager"
CM_CA = f"{CM_DIR}/ca.crt"
CM_FRONT_PROXY_CA = f"{CM_DIR}/front-proxy-ca.crt"
SCHEDULER_KUBECONFIG = f"{ETC}/scheduler.conf"
KUBELET_DIR = f"{ETC}/kubelet"
KUBELET_CONFIG = f"{KUBELET_DIR}/config.yaml"
KUBELET_KUBECONFIG = f"{KUBELET_DIR}/kubeconfig"
KUBELET_PKI = f"{KUBELET_DIR}/pki"
KUBELET_CA = f"{KUBELET_PKI}/ca.crt"
KUBELET_CERT = f"{KUBELET_PKI}/kubelet.crt"
KUBELET_KEY = f"{KUBELET_PKI}/kubelet.key"
KUBELET_ROOT = "/var/lib/kubelet"
PROXY_DIR = f"{ETC}/kube-proxy"
PROXY_CONFIG = f"{PROXY_DIR}/config.yaml"
PROXY_KUBECONFIG = f"{PROXY_DIR}/kubeconfig"
FLANNEL_DIR = f"{ETC}/flannel"
FLANNEL_KUBECONFIG = f"{FLANNEL_DIR}/kubeconfig"
FLANNEL_NET_CONF = f"{FLANNEL_DIR}/net-conf.json"
FLANNEL_SUBNET_FILE = "/run/flannel/subnet.env"
FLANNEL_CNI_DATA = "/var/lib/cni/flannel"
FLANNEL_CONFLIST = f"{CNI_CONF_DIR}/10-flannel.conflist"
FLANNEL_VNI = 1
FLANNEL_PORT = 8472  # the Linux kernel's (and flannel's) VXLAN port

APISERVER_UNIT = "kube-apiserver.service"
CM_UNIT = "kube-controller-manager.service"
SCHEDULER_UNIT = "kube-scheduler.service"
KUBELET_UNIT = "kubelet.service"
PROXY_UNIT = "kube-proxy.service"
FLANNEL_UNIT = "flanneld.service"
CONTROL_PLANE_UNITS = (APISERVER_UNIT, CM_UNIT, SCHEDULER_UNIT)
NODE_UNITS = (KUBELET_UNIT, PROXY_UNIT, FLANNEL_UNIT)

CM_PORT = 10257
SCHEDULER_PORT = 10259
KUBELET_HEALTHZ_PORT = 10248
PROXY_HEALTHZ_PORT = 10256
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
ENCRYPTION_KEY_NAME = "metalseed-1"
DOCS = "https://kubernetes.io/docs/reference/command-line-tools-reference"
TLS_MIN = "VersionTLS12"
# ECDHE + AEAD only, the Go names etcd is given too (TLS 1.3 suites are not configurable in Go).
TLS_CIPHERS = GO_CIPHER_SUITES
# Beside the plugins on by default (ServiceAccount, PodSecurity, ...): NodeRestriction, so a
# kubelet can change only its own Node and the pods bound to it (CIS 1.2.15).
ADMISSION_PLUGINS = ("NodeRestriction",)


@dataclass(frozen=True)
class Binary:
    """The installed multi-call binary: its path and digest (units name the digest)."""

    version: str
    sha256: str
    path: str = KUBE


@dataclass(frozen=True)
class PKIFile:
    """A control-plane file from the PKI store: ``store_path`` relative to ``pki/<cluster>/``."""

    path: str
    store_path: str
    secret: bool = False
    unit: str = APISERVER_UNIT


def control_plane_pki() -> tuple[PKIFile, ...]:
    """What a master receives under /etc/kubernetes/pki. The trust files are the store's bundles
    (the CA, plus the next one during a CA rotation); no CA key leaves the operator's machine:
    nothing on the hosts signs (no CSR signer, the kubelets' certificates come from the store)."""
    return (
        PKIFile(f"{PKI}/ca.crt", "ca-bundle.crt"),
        PKIFile(f"{PKI}/apiserver.crt", "apiserver.crt"),
        PKIFile(f"{PKI}/apiserver.key", "apiserver.key", secret=True),
        PKIFile(f"{PKI}/apiserver-kubelet-client.crt", "apiserver-kubelet-client.crt"),
        PKIFile(f"{PKI}/apiserver-kubelet-client.key", "apiserver-kubelet-client.key", secret=True),
        PKIFile(f"{PKI}/front-proxy-ca.crt", "front-proxy-ca-bundle.crt"),
        PKIFile(f"{PKI}/front-proxy-client.crt", "front-proxy-client.crt"),
        PKIFile(f"{PKI}/front-proxy-client.key", "front-proxy-client.key", secret=True),
        PKIFile(f"{PKI}/sa.pub", "sa.pub"),
        # The API server signs service-account tokens with it, the controller-manager too.
        PKIFile(f"{PKI}/sa.key", "sa.key", secret=True, unit=CM_UNIT),
        PKIFile(f"{PKI}/etcd/ca.crt", "etcd/ca-bundle.crt"),
        PKIFile(f"{PKI}/apiserver-etcd-client.crt", "apiserver-etcd-client.crt"),
        PKIFile(f"{PKI}/apiserver-etcd-client.key", "apiserver-etcd-client.key", secret=True),
        PKIFile(CM_CA, "ca-bundle.crt", unit=CM_UNIT),
        PKIFile(CM_FRONT_PROXY_CA, "front-proxy-ca-bundle.crt", unit=CM_UNIT),
    )


def api_url(address: IPv4Address | str, port: int) -> str:
    return f"https://{address}:{port}"


def service_account_issuer(cluster: Cluster) -> str:
    return f"https://kubernetes.default.svc.{cluster.dns_domain}"


# --------------------------------------------------------------------------------------------
# Control plane


def apiserver_flags(cluster: Cluster, node: Node) -> list[str]:
    etcd = ",".join(cluster.etcd_client_urls())
    return [
        f"--advertise-address={node.address}",
        f"--bind-address={node.address}",
        f"--secure-port={cluster.apiserver_port}",
        f"--etcd-servers={etcd}",
        f"--etcd-cafile={PKI}/etcd/ca.crt",
        f"--etcd-certfile={PKI}/apiserver-etcd-client.crt",
        f"--etcd-keyfile={PKI}/apiserver-etcd-client.key",
        f"--client-ca-file={PKI}/ca.crt",
        f"--tls-cert-file={PKI}/apiserver.crt",
        f"--tls-private-key-file={PKI}/apiserver.key",
        f"--tls-min-version={TLS_MIN}",
        f"--tls-cipher-suites={','.join(TLS_CIPHERS)}",
        f"--kubelet-client-certificate={PKI}/apiserver-kubelet-client.crt",
        f"--kubelet-client-key={PKI}/apiserver-kubelet-client.key",
        # Kubelets serve certificates from the store: check them (CIS 1.2.5), by node address.
        f"--kubelet-certificate-authority={PKI}/ca.crt",
        "--kubelet-preferred-address-types=InternalIP",
        f"--service-account-issuer={service_account_issuer(cluster)}",
        f"--service-account-key-file={PKI}/sa.pub",
        f"--service-account-signing-key-file={PKI}/sa.key",
        f"--service-cluster-ip-range={cluster.service_network}",
        "--authorization-mode=Node,RBAC",
        # Health checks and every component authenticate with certificates (CIS 1.2.1).
        "--anonymous-auth=false",
        f"--enable-admission-plugins={','.join(ADMISSION_PLUGINS)}",
        f"--admission-control-config-file={ADMISSION_CONFIG}",
        f"--encryption-provider-config={ENCRYPTION_CONFIG}",
        f"--audit-policy-file={AUDIT_POLICY}",
        f"--audit-log-path={AUDIT_LOG}",
        "--audit-log-maxage=30",
        "--audit-log-maxbackup=10",
        "--audit-log-maxsize=100",
        f"--requestheader-client-ca-file={PKI}/front-proxy-ca.crt",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-username-headers=X-Remote-User",
        f"--proxy-client-cert-file={PKI}/front-proxy-client.crt",
        f"--proxy-client-key-file={PKI}/front-proxy-client.key",
        "--profiling=false",
        "--allow-privileged=false",
        # On SIGTERM the API server stops listening at once (nginx sends new connections to the
        # other masters) but waited for open watches until its 60 s deadline: seen here, each
        # master's restart then took over a minute. Watches are ended within 10 s instead; their
        # clients re-establish them through the VIP.
        "--shutdown-watch-termination-grace-period=10s",
    ]


def controller_manager_flags(cluster: Cluster) -> list[str]:
    return [
        f"--kubeconfig={CM_KUBECONFIG}",
        f"--authentication-kubeconfig={CM_KUBECONFIG}",
        f"--authorization-kubeconfig={CM_KUBECONFIG}",
        "--bind-address=127.0.0.1",
        f"--secure-port={CM_PORT}",
        "--leader-elect=true",
        # Node CIDRs for flannel (kube-subnet-mgr reads each Node's podCIDR).
        "--allocate-node-cidrs=true",
        f"--cluster-cidr={cluster.pod_network}",
        "--node-cidr-mask-size=24",
        f"--service-cluster-ip-range={cluster.service_network}",
        f"--cluster-name={cluster.name}",
        f"--root-ca-file={CM_CA}",
        f"--service-account-private-key-file={PKI}/sa.key",
        "--use-service-account-credentials=true",
        f"--client-ca-file={CM_CA}",
        f"--requestheader-client-ca-file={CM_FRONT_PROXY_CA}",
        f"--tls-min-version={TLS_MIN}",
        "--profiling=false",
    ]


def scheduler_flags() -> list[str]:
    return [
        f"--kubeconfig={SCHEDULER_KUBECONFIG}",
        f"--authentication-kubeconfig={SCHEDULER_KUBECONFIG}",
        f"--authorization-kubeconfig={SCHEDULER_KUBECONFIG}",
        "--bind-address=127.0.0.1",
        f"--secure-port={SCHEDULER_PORT}",
        "--leader-elect=true",
        f"--tls-min-version={TLS_MIN}",
        "--profiling=false",
    ]


def unit(component: str, description: str, binary: Binary, flags: list[str],
         after: tuple[str, ...] = ("network-online.target",), requires: tuple[str, ...] = (),
         environment: tuple[str, ...] = (), delegate: bool = False,
         documentation: str | None = None, exec_start_pre: tuple[str, ...] = ()) -> str:
    # The multi-call binary is told which component to be by its first argument.
    exec_start = binary.path if binary.path != KUBE else f"{KUBE} {component}"
    return render("kubernetes/component.service.j2", component=component, description=description,
                  version=binary.version, binary=binary.path, binary_sha256=binary.sha256,
                  exec_start=exec_start, flags=flags, after=after, requires=requires,
                  environment=environment, delegate=delegate, exec_start_pre=exec_start_pre,
                  documentation=documentation or f"{DOCS}/{component}/")


def apiserver_unit(cluster: Cluster, node: Node, binary: Binary) -> str:
    return unit("kube-apiserver", f"Kubernetes API server on {node.name}", binary,
                apiserver_flags(cluster, node))


def controller_manager_unit(cluster: Cluster, binary: Binary) -> str:
    return unit("kube-controller-manager", "Kubernetes controller manager", binary,
                controller_manager_flags(cluster))


def scheduler_unit(binary: Binary) -> str:
    return unit("kube-scheduler", "Kubernetes scheduler", binary, scheduler_flags())


def encryption_config(key: str) -> str:
    return render("kubernetes/encryption-config.yaml.j2", key=key, key_name=ENCRYPTION_KEY_NAME,
                  key_file="encryption-at-rest.key")


def audit_policy() -> str:
    return render("kubernetes/audit-policy.yaml.j2", audit_log=AUDIT_LOG)


def admission_config() -> str:
    return render("kubernetes/admission-config.yaml.j2")


def kubeconfig_with_server(text: bytes, server: str) -> bytes:
    """The store's kubeconfig pointed at another API server (a master's own address): the
    credentials stay byte for byte; only ``clusters[0].cluster.server`` changes."""
    doc = yaml.safe_load(text)
    doc["clusters"][0]["cluster"]["server"] = server
    return yaml.safe_dump(doc, sort_keys=False).encode()


# --------------------------------------------------------------------------------------------
# Every node


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``; nested mappings are merged (conntrack.maxPerCore keeps the rest)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def kubelet_configuration(cluster: Cluster, node: Node) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": KUBELET_CONFIGURATION_VERSION,
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": KUBELET_CA},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": KUBELET_CERT,
        "tlsPrivateKeyFile": KUBELET_KEY,
        "tlsMinVersion": TLS_MIN,
        "tlsCipherSuites": list(TLS_CIPHERS),
        # Serving and client certificates come from the PKI store and are renewed by
        # deploys/rotate-certs.py; the kubelet neither requests nor rotates its own.
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "cgroupDriver": CGROUP_DRIVER,
        "containerRuntimeEndpoint": f"unix://{SOCKET}",
        "clusterDomain": cluster.dns_domain,
        "clusterDNS": [str(cluster.cluster_dns_address)],
        # Since 1.35 the kubelet exits on a cgroup v1 host unless told otherwise; on a v2 host
        # this changes nothing.
        "failCgroupV1": False,
        "failSwapOn": False,
        "registerNode": True,
        "registerWithTaints": [CONTROL_PLANE_TAINT] if node.is_master else [],
        "staticPodPath": "",
    }
    return _merge(base, dict(cluster.kubernetes.kubelet_settings))


def kubelet_config(cluster: Cluster, node: Node) -> str:
    body = yaml.safe_dump(kubelet_configuration(cluster, node), sort_keys=False)
    return render("kubernetes/config.yaml.j2", body=body,
                  what=f"KubeletConfiguration of {node.name} (extra fields: kubelet_settings)")


def kubelet_flags(node: Node) -> list[str]:
    return [
        f"--config={KUBELET_CONFIG}",
        f"--kubeconfig={KUBELET_KUBECONFIG}",
        f"--hostname-override={node.name}",
        f"--node-ip={node.address}",
        f"--root-dir={KUBELET_ROOT}",
    ]


def kubelet_unit(node: Node, binary: Binary) -> str:
    return unit("kubelet", f"Kubernetes node agent on {node.name}", binary, kubelet_flags(node),
                after=("network-online.target", "containerd.service"),
                requires=("containerd.service",), delegate=True)


def kube_proxy_configuration(cluster: Cluster, node: Node) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": KUBE_PROXY_CONFIGURATION_VERSION,
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": PROXY_KUBECONFIG},
        "mode": cluster.kubernetes.kube_proxy_mode,
        "clusterCIDR": str(cluster.pod_network),
        "hostnameOverride": node.name,
        "bindAddress": "0.0.0.0",
        "healthzBindAddress": f"127.0.0.1:{PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": "127.0.0.1:10249",
        # NodePorts only on the node's own address, not on the pod bridges.
        "nodePortAddresses": [f"{node.address}/32"],
    }
    return _merge(base, dict(cluster.kubernetes.kube_proxy_settings))


def kube_proxy_config(cluster: Cluster, node: Node) -> str:
    body = yaml.safe_dump(kube_proxy_configuration(cluster, node), sort_keys=False)
    return render("kubernetes/config.yaml.j2", body=body,
                  what=f"KubeProxyConfiguration of {node.name} (extra fields: kube_proxy_settings)")


def kube_proxy_unit(node: Node, binary: Binary) -> str:
    return unit("kube-proxy", f"Kubernetes service proxy on {node.name}", binary,
                [f"--config={PROXY_CONFIG}"])


def flannel_net_conf(cluster: Cluster) -> str:
    return render("kubernetes/net-conf.json.j2", pod_network=str(cluster.pod_network),
                  vni=FLANNEL_VNI, port=FLANNEL_PORT)


def flannel_conflist(chained: tuple[str, ...] = ()) -> str:
    """flannel's chain; ``chained``: plugins (JSON text) after it, Cilium's on a seed."""
    return render("kubernetes/10-flannel.conflist.j2", subnet_file=FLANNEL_SUBNET_FILE,
                  data_dir=FLANNEL_CNI_DATA, chained=chained)


def flanneld_unit(node: Node, flannel: Binary) -> str:
    """flanneld under systemd (not a DaemonSet): pod networking then does not wait for a pod
    that itself needs the API and an image pull to be scheduled, and it is converged, restarted
    and health-checked like the kubelet beside it."""
    return unit("flanneld", f"flannel (vxlan) on {node.name}", flannel, [
        "--kube-subnet-mgr",
        f"--kubeconfig-file={FLANNEL_KUBECONFIG}",
        f"--net-config-path={FLANNEL_NET_CONF}",
        f"--subnet-file={FLANNEL_SUBNET_FILE}",
        # The lab (and many racks) have no default route: name the interface by its address.
        f"--iface={node.address}",
        "--ip-masq",
    ], after=("network-online.target", KUBELET_UNIT), environment=(f"NODE_NAME={node.name}",),
        documentation="https://github.com/flannel-io/flannel/blob/master/Documentation/configuration.md")
