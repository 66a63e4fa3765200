"""The typed cluster model, built once from a pyinfra inventory and its group data.

Every validation lives here, so that a bad inventory is rejected before any host is touched. Errors
name the field, the host, what was found and what would be accepted; all problems found are reported
together (:class:`~metalseed.errors.ModelErrors`).

Settings come from pyinfra data (inventory file, ``group_data/*.py``, host data). Cluster-wide
settings must have the same value on every host. Per-host settings are ``address`` (the node's
address on the node network; defaults to ``ssh_hostname``) and ``node_name`` (defaults to the
inventory name). Hosts belong to the ``masters`` or the ``workers`` group.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from metalseed.errors import InventoryError, ModelError, ModelErrors
from metalseed.mirror import default_root as default_mirror_root
from metalseed.tenants.spec import TenantSpec, parse_tenants

IPv4 = ipaddress.IPv4Address
Net4 = ipaddress.IPv4Network

KEY_ALGORITHMS = ("ecdsa-p256", "rsa-2048", "rsa-3072", "rsa-4096")
NODEPORT_RANGE = (30000, 32767)
FAILOVER_ADVERT_INT = {"default": 1.0, "fast": 0.1}

_RFC1123_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdwy]?)\s*$")
_DURATION_UNITS = {
    "s": 1,
    "": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "y": 365 * 86400,
}

# Data keys that belong to pyinfra or its connectors, not to us: never reported as typos.
_PYINFRA_PREFIXES = (
    "ssh_", "_", "winrm_", "docker_", "chroot_", "local_", "vagrant_", "terraform_", "fake_",
)


@dataclass(frozen=True)
class Node:
    """One machine of the cluster."""

    name: str
    """Kubernetes node name (RFC 1123 subdomain); also the etcd member name on masters."""
    address: IPv4
    role: str  # "master" | "worker" | "datastore" | "tenant-worker"
    inventory_name: str
    """The pyinfra host name this node came from."""

    @property
    def is_master(self) -> bool:
        return self.role == "master"


@dataclass(frozen=True)
class EtcdSettings:
    client_port: int = 2379
    peer_port: int = 2380
    metrics_port: int = 2381
    # LAN timing tuned so a crashed leader is replaced well within 1.5 s (etcd requires
    # election >= 5 x heartbeat); etcd's own defaults (100/1000 ms) are for slower links.
    heartbeat_ms: int = 50
    election_ms: int = 500
    source: str = "mirror"
    """``mirror``: etcd 3.6 from the pinned artifacts (the mirror, or upstream); ``debian``:
    Debian's 3.4 package (too old for Kubernetes); ``tarball``: an etcd 3.4 release tarball."""
    tarball_url: str | None = None
    tarball_sha256: str | None = None
    data_dir: str = "/var/lib/etcd/metalseed"
    backup_dir: Path = Path("backups")
    """Where backups land on the operator's machine: ``<backup_dir>/<cluster>/``."""
    store_dir: str = "etcd"
    """The PKI store directory of this etcd cluster's CA and member certificates: ``etcd`` for the
    cluster's own etcd, ``datastore`` for the tenant datastore."""
    admin_client: str = "healthcheck-client"
    """The operator-side client certificate (``<store_dir>/<admin_client>``) the deploy's health
    gates, and with ``auth`` every administration, use."""
    auth: bool = False
    """etcd authentication enabled (a root user and role, certificate CNs as user names)."""


@dataclass(frozen=True)
class PKISettings:
    key_algorithm: str = "ecdsa-p256"
    ca_lifetime: timedelta = timedelta(days=3650)
    leaf_lifetime: timedelta = timedelta(days=365)
    renew_before: timedelta = timedelta(days=30)
    """A leaf is due when it expires within this window..."""
    renew_fraction: float = 2 / 3
    """...or when this fraction of its lifetime has passed."""
    store: Path = Path("pki")
    check_timer: bool = True
    """A daily on-host expiry check (systemd timer) on the masters."""


@dataclass(frozen=True)
class EdgeSettings:
    hostnames: tuple[str, ...] = ()
    """DNS names (wildcards allowed) the generated edge certificate covers, beside the VIP."""
    cert_file: Path | None = None
    """The operator's own serving certificate (PEM chain); None to have metalseed issue one."""
    key_file: Path | None = None
    hsts_max_age: int = 63072000
    failover: str = "default"  # "default" | "fast": keepalived advertisement interval
    vrrp_unicast: bool = False
    virtual_router_id: int = 51
    http_port: int = 80
    https_port: int = 443

    @property
    def advert_int(self) -> float:
        return FAILOVER_ADVERT_INT[self.failover]


NETWORK_POLICY_ENGINES = ("cilium", "kube-router", "none")
KUBE_PROXY_MODES = ("iptables", "nftables")  # no "ipvs": kernels without IP_VS exist (the lab's)


@dataclass(frozen=True)
class KubernetesSettings:
    enabled: bool = False
    """Kubernetes (the pinned version, mirror/pins.toml) on top of etcd and the edge."""
    kubelet_settings: tuple[tuple[str, Any], ...] = ()
    """Extra KubeletConfiguration fields (validated names), over metalseed's own."""
    kube_proxy_mode: str = "iptables"
    kube_proxy_settings: tuple[tuple[str, Any], ...] = ()
    """Extra KubeProxyConfiguration fields (validated names), over metalseed's own."""
    network_policy: str = "none"
    """What enforces network policies: ``cilium`` (the agent chained over flannel on every node),
    ``kube-router`` (its firewall as a DaemonSet, standard NetworkPolicies) or ``none``. A seed
    (tenants in the data) defaults to ``cilium``, any other cluster to ``none``."""
    version: str = ""
    """The Kubernetes release the nodes run: ``kubernetes_version``, one the pins hold (the
    ``kubernetes`` pin's by default; deploys/kubernetes-upgrade.py moves a cluster to it)."""


DATASTORE_GROUP = "datastore"
TENANT_WORKERS_GROUP = "tenant_workers"
"""Hosts that join a tenant's control plane (each named by one tenant's ``workers``): nodes of
that tenant's cluster, never of the seed."""
TENANT_WORKER = "tenant-worker"
DATASTORE_ROOT_USER = "root"
"""etcd's own superuser name: the CN of the datastore's administration certificate."""


@dataclass(frozen=True)
class Datastore:
    """The tenant datastore: a separate etcd cluster (inventory group ``datastore``, 1, 3 or 5
    members, none of them a master or a worker) with authentication enabled. It uses the cluster's
    etcd ports and timing: it shares no host with the cluster's etcd, so they cannot collide."""

    members: tuple[Node, ...]
    etcd: EtcdSettings

    def client_urls(self) -> list[str]:
        """What a tenant's kube-apiserver gets as ``--etcd-servers`` (comma-joined)."""
        return [f"https://{m.address}:{self.etcd.client_port}" for m in self.members]


@dataclass(frozen=True)
class Cluster:
    name: str
    dns_domain: str
    masters: tuple[Node, ...]
    workers: tuple[Node, ...]
    vip: IPv4
    vip_interface: str
    node_network: Net4
    pod_network: Net4
    service_network: Net4
    apiserver_port: int = 6443
    ingress_http_nodeport: int = 30080
    ingress_https_nodeport: int = 30443
    etcd: EtcdSettings = field(default_factory=EtcdSettings)
    pki: PKISettings = field(default_factory=PKISettings)
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    mirror_url: str | None = None
    """The artifact mirror hosts download from (``http://host:port``, no path): files at
    ``<mirror_url>/files/<path>``, its OCI registry at the same host:port. None: hosts download the
    pinned upstream releases."""
    mirror_dir: Path = field(default_factory=default_mirror_root)
    """The operator-side mirror root holding ``manifest.json``: the sha256 every download from
    ``mirror_url`` is checked against (never what a host or the mirror server says)."""
    datastore: Datastore | None = None
    """The tenant datastore, when the inventory has a ``datastore`` group."""
    containerd_restrict_oom_score_adj: bool = False
    """containerd clamps the OOM scores it sets to its own (its ``restrict_oom_score_adj``): for
    nodes where nothing may lower an OOM score (no CAP_SYS_RESOURCE, as in this lab), where runc
    otherwise fails every pod sandbox ("failed to update /proc/self/oom_score_adj")."""
    tenants: tuple[TenantSpec, ...] = ()
    """The tenant control planes this cluster hosts as a seed (``tenants`` in group data), by name."""
    tenant_domain: str = ""
    """Tenant API endpoints are ``<tenant>.<tenant_domain>``: the SAN of each tenant's API server
    certificate and the SNI name the edge routes to that tenant."""
    tenant_workers: tuple[Node, ...] = ()
    """The ``tenant_workers`` group: each host a node of the one tenant whose ``workers`` name it,
    none of the seed's."""

    def tenant(self, name: str) -> TenantSpec:
        for t in self.tenants:
            if t.name == name:
                return t
        raise KeyError(name)

    def tenant_endpoint(self, name: str) -> str:
        return f"{name}.{self.tenant_domain}"

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self.masters + self.workers

    @property
    def first_service_address(self) -> IPv4:
        """The ``kubernetes`` service's ClusterIP: first usable address of the service network."""
        return self.service_network.network_address + 1

    @property
    def cluster_dns_address(self) -> IPv4:
        return self.service_network.network_address + 10

    @property
    def pki_dir(self) -> Path:
        return self.pki.store / self.name

    def is_datastore_host(self, name: str) -> bool:
        """Whether the inventory host ``name`` is a datastore member (not a Kubernetes node)."""
        return self.datastore is not None and any(
            name in (m.name, m.inventory_name) for m in self.datastore.members)

    def datastore_view(self) -> Cluster:
        """The datastore as the etcd deploy sees a cluster: its members as the masters, its own
        etcd settings, the same name and PKI store (its material under ``datastore/``)."""
        if self.datastore is None:
            raise ModelError(DATASTORE_GROUP, None, "a 'datastore' group of 1, 3 or 5 hosts in the "
                             "inventory for a tenant datastore")
        return replace(self, masters=self.datastore.members, workers=(), etcd=self.datastore.etcd,
                       datastore=None)

    def is_tenant_worker_host(self, name: str) -> bool:
        """Whether the inventory host ``name`` joins a tenant's cluster (not a seed node)."""
        return any(name in (n.name, n.inventory_name) for n in self.tenant_workers)

    def tenant_worker(self, name: str) -> tuple[TenantSpec, Node]:
        """The tenant the host ``name`` works for and its node; KeyError if it is none's."""
        for n in self.tenant_workers:
            if name in (n.name, n.inventory_name):
                for t in self.tenants:
                    if n.inventory_name in t.workers:
                        return t, n
        raise KeyError(name)

    def workers_of(self, tenant: str) -> tuple[Node, ...]:
        """The nodes of ``tenant``'s cluster, in the order its ``workers`` name them."""
        by_host = {n.inventory_name: n for n in self.tenant_workers}
        return tuple(by_host[h] for h in self.tenant(tenant).workers if h in by_host)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if name in (n.name, n.inventory_name):
                return n
        raise KeyError(name)

    def etcd_initial_cluster(self) -> str:
        return ",".join(
            f"{m.name}=https://{m.address}:{self.etcd.peer_port}" for m in self.masters
        )

    def etcd_client_urls(self) -> list[str]:
        return [f"https://{m.address}:{self.etcd.client_port}" for m in self.masters]


# --------------------------------------------------------------------------------------------
# Settings table: key -> (parser, default). Parsers raise ValueError with "accepted" text.


def parse_duration(value: object) -> timedelta:
    """``3600``, ``"90s"``, ``"5m"``, ``"12h"``, ``"30d"``, ``"2w"``, ``"10y"`` (365 days)."""
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
    elif isinstance(value, bool):
        raise ValueError("a duration: seconds as an integer, or a string like 90s, 5m, 12h, 30d, 10y")
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = int(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError("a duration: seconds as an integer, or a string like 90s, 5m, 12h, 30d, 10y")
    if seconds <= 0:
        raise ValueError("a positive duration")
    return timedelta(seconds=seconds)


def _fmt_duration(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    for unit in ("y", "d", "h", "m"):
        size = _DURATION_UNITS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _str(accepted: str, check: Callable[[str], bool] = lambda s: bool(s)) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str) or not check(value):
            raise ValueError(accepted)
        return value

    return parse


def _int(lo: int, hi: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"an integer from {lo} to {hi}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise ValueError("one of " + ", ".join(repr(c) for c in choices))
        return str(value)

    return parse


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("True or False")
    return value


def _ipv4(value: object) -> IPv4:
    try:
        return IPv4(str(value))
    except ValueError:
        raise ValueError("an IPv4 address such as 10.0.0.10") from None


def _net4(value: object) -> Net4:
    try:
        return Net4(str(value), strict=True)
    except ValueError:
        raise ValueError("an IPv4 network in CIDR form with no host bits set, such as 10.0.0.0/24") from None


def _optional(parse: Callable[[object], Any]) -> Callable[[object], Any]:
    return lambda value: None if value is None else parse(value)


def _mirror_url(value: object) -> str:
    """``http(s)://host[:port]`` with nothing after it (a trailing '/' is dropped)."""
    from urllib.parse import urlsplit

    accepted = "an http(s) URL of host and port only, such as http://10.0.0.1:5080"
    if not isinstance(value, str):
        raise ValueError(accepted)
    try:
        u = urlsplit(value.rstrip("/"))
        _ = u.port  # raises on a port that is not a number in range
    except ValueError:
        raise ValueError(accepted) from None
    if u.scheme not in ("http", "https") or not u.hostname or u.path or u.query or u.fragment \
            or u.username or u.password:
        raise ValueError(accepted)
    return value.rstrip("/")


def _path(value: object) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError("a file path")
    return Path(value)


def is_rfc1123_label(name: str) -> bool:
    return bool(_RFC1123_LABEL.match(name))


def is_rfc1123_subdomain(name: str) -> bool:
    return 0 < len(name) <= 253 and all(is_rfc1123_label(p) for p in name.split("."))


def _hostnames(value: object) -> tuple[str, ...]:
    accepted = "a list of DNS names (RFC 1123; a leading '*.' allowed), such as ['*.apps.example.com']"
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(accepted)
    for name in value:
        if not isinstance(name, str) or not is_rfc1123_subdomain(name.removeprefix("*.")):
            raise ValueError(accepted)
    return tuple(value)


# Fields metalseed sets from the model itself: overriding them would break what it relies on
# (TLS from the store, the cgroup driver containerd uses, the cluster's DNS and networks).
_OWNED_FIELDS = {
    "kubelet": {
        "authentication": "client certificates of the store's CA and webhook token review",
        "authorization": "Webhook (the API server's RBAC)",
        "tlsCertFile": "the store's kubelet-serving/<node> certificate",
        "tlsPrivateKeyFile": "the store's kubelet-serving/<node> key",
        "rotateCertificates": "the store's certificates, rotated by deploys/rotate-certs.py",
        "serverTLSBootstrap": "the store's certificates, rotated by deploys/rotate-certs.py",
        "cgroupDriver": "containerd's cgroup driver (cgroupfs)",
        "containerRuntimeEndpoint": "containerd's socket",
        "clusterDNS": "the 10th address of service_network (CoreDNS)",
        "clusterDomain": "dns_domain",
    },
    "kube-proxy": {
        "mode": "kube_proxy_mode",
        "clientConnection": "the store's kube-proxy kubeconfig",
        "clusterCIDR": "pod_network",
        "hostnameOverride": "the node's name",
    },
}


def _component_settings(kind: str, component: str) -> Callable[[object], tuple[tuple[str, Any], ...]]:
    """A mapping of extra fields of a component's configuration file: names known to the pinned
    version's schema (misspelt ones refused with a suggestion), none of the fields metalseed owns."""
    from metalseed.kube import schema

    if component == "kubelet":
        known, nested = schema.KUBELET_CONFIGURATION_FIELDS, schema.KUBELET_NESTED_FIELDS
    else:
        known, nested = schema.KUBE_PROXY_CONFIGURATION_FIELDS, schema.KUBE_PROXY_NESTED_FIELDS
    owned = _OWNED_FIELDS[component]

    def parse(value: object) -> tuple[tuple[str, Any], ...]:
        if not isinstance(value, Mapping):
            raise ValueError(f"a mapping of {kind} fields, such as {{'maxPods': 50}}")
        for key in value:
            if key in owned:
                raise ValueError(f"no {key!r}: metalseed sets it ({owned[key]})")
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"{hint}field names of {kind} in the pinned Kubernetes "
                                 f"(metalseed.kube.schema); {key!r} is not one")
            if key in nested:
                _nested_fields(f"{kind}.{key}", value[key], nested[key])
        return tuple(sorted(value.items()))

    return parse


def _nested_fields(where: str, value: object, known: frozenset[str]) -> None:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: a mapping of its fields ({', '.join(sorted(known))})")
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"{hint}field names of {where} in the pinned Kubernetes "
                             f"({', '.join(sorted(known))}); {key!r} is not one")


_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# The pins whose binaries a cluster can run (mirror/pins.toml chooses their versions).
KUBERNETES_PINS = ("kubernetes", "kubernetes-previous")


def kubernetes_releases() -> dict[str, str]:
    """Version -> pin name, for every Kubernetes release the pins hold."""
    from metalseed.mirror import load_pins

    pins = load_pins()
    return {pins.get(n).version: n for n in KUBERNETES_PINS if n in pins.names()}


def _kubernetes_version(value: object) -> str:
    releases = kubernetes_releases()
    if value is None:
        return next(v for v, n in releases.items() if n == "kubernetes")
    if value not in releases:
        raise ValueError("a Kubernetes release the pins hold (mirror/pins.toml): "
                         + ", ".join(f"{v!r} ({n})" for v, n in releases.items()))
    return str(value)


CLUSTER_SETTINGS: dict[str, tuple[Callable[[object], Any], Any]] = {
    "cluster_name": (_str("an RFC 1123 label: lowercase letters, digits and '-', at most 63",
                          is_rfc1123_label), None),
    "dns_domain": (_str("an RFC 1123 subdomain such as cluster.local", is_rfc1123_subdomain),
                   "cluster.local"),
    "vip": (_ipv4, None),
    "vip_interface": (_str("a network interface name such as eth0",
                           lambda s: bool(re.match(r"^[A-Za-z0-9_.:-]{1,15}$", s))), "eth0"),
    "node_network": (_net4, None),
    "pod_network": (_net4, "10.244.0.0/16"),
    "service_network": (_net4, "10.96.0.0/12"),
    "apiserver_port": (_int(1, 65535), 6443),
    "ingress_http_nodeport": (_int(*NODEPORT_RANGE), 30080),
    "ingress_https_nodeport": (_int(*NODEPORT_RANGE), 30443),
    "etcd_heartbeat_ms": (_int(10, 5000), EtcdSettings.heartbeat_ms),
    "etcd_election_ms": (_int(50, 50000), EtcdSettings.election_ms),
    "etcd_client_port": (_int(1, 65535), EtcdSettings.client_port),
    "etcd_peer_port": (_int(1, 65535), EtcdSettings.peer_port),
    "etcd_metrics_port": (_int(1, 65535), EtcdSettings.metrics_port),
    "etcd_source": (_choice("mirror", "debian", "tarball"), "mirror"),
    "etcd_tarball_url": (_optional(_str("an http(s) or file URL",
                                        lambda s: s.startswith(("http://", "https://", "file://")))),
                         None),
    "etcd_tarball_sha256": (_optional(_str("64 lowercase hex digits",
                                           lambda s: bool(_SHA256.match(s)))), None),
    "etcd_data_dir": (_str("an absolute path", lambda s: s.startswith("/")), EtcdSettings.data_dir),
    "etcd_backup_dir": (_path, "backups"),
    "pki_key_algorithm": (_choice(*KEY_ALGORITHMS), "ecdsa-p256"),
    "pki_ca_lifetime": (parse_duration, "3650d"),
    "pki_leaf_lifetime": (parse_duration, "365d"),
    "pki_renew_before": (parse_duration, "30d"),
    "pki_store": (_path, "pki"),
    "pki_check_timer": (_bool, True),
    "edge_hostnames": (_hostnames, ()),
    "edge_cert_file": (_optional(_path), None),
    "edge_key_file": (_optional(_path), None),
    "edge_hsts_max_age": (_int(0, 10 * 365 * 86400), EdgeSettings.hsts_max_age),
    # None: "fast" where Kubernetes runs (its API is promised back within 2 s of a crash of the
    # VIP holder; the default interval alone takes 3.45 s to notice one), else "default".
    "edge_failover": (_optional(_choice(*FAILOVER_ADVERT_INT)), None),
    "edge_vrrp_unicast": (_bool, False),
    "edge_virtual_router_id": (_int(1, 255), EdgeSettings.virtual_router_id),
    "edge_http_port": (_int(1, 65535), 80),
    "edge_https_port": (_int(1, 65535), 443),
    "kubernetes": (_bool, False),
    "kubelet_settings": (_component_settings("KubeletConfiguration", "kubelet"), {}),
    "kube_proxy_mode": (_choice(*KUBE_PROXY_MODES), "iptables"),
    "kube_proxy_settings": (_component_settings("KubeProxyConfiguration", "kube-proxy"), {}),
    # None: "cilium" on a seed (tenants in the data), else "none".
    "network_policy": (_optional(_choice(*NETWORK_POLICY_ENGINES)), None),
    "kubernetes_version": (_kubernetes_version, None),
    "mirror_url": (_optional(_mirror_url), None),
    "mirror_dir": (_optional(_path), None),
    "containerd_restrict_oom_score_adj": (_bool, False),
    # Checked with the inventory's hosts and pinned versions in build_cluster (parse_tenants).
    "tenants": (lambda value: value, None),
    # None: <cluster_name>.tenants.<dns_domain>, resolvable or not (admin.conf names the VIP and
    # sends the endpoint as its TLS server name, so no DNS record is needed).
    "tenant_domain": (_optional(_str("an RFC 1123 subdomain such as tenants.example.com",
                                     is_rfc1123_subdomain)), None),
}

HOST_SETTINGS: dict[str, tuple[Callable[[object], Any], Any]] = {
    "address": (_ipv4, None),
    "node_name": (_str("an RFC 1123 subdomain: lowercase letters, digits, '-' and '.'",
                       is_rfc1123_subdomain), None),
}



def _leaves(value: object) -> str | tuple[str, ...]:
    accepted = "'due', 'all', 'none', or store ids of leaves (a list, or separated by commas)"
    if isinstance(value, str):
        if value in ("due", "all", "none"):
            return value
        ids = tuple(x.strip() for x in value.split(",") if x.strip())
    elif isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        ids = tuple(x.strip() for x in value if x.strip())
    else:
        raise ValueError(accepted)
    if not ids:
        raise ValueError(accepted)
    return ids


def _cas(value: object) -> tuple[str, ...]:
    accepted = ("a CA's store id, such as 'etcd/ca', or several rotated together (a list, or "
                "separated by commas: 'ca,front-proxy-ca')")
    if isinstance(value, str):
        ids = tuple(x.strip() for x in value.split(",") if x.strip())
    elif isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        ids = tuple(x.strip() for x in value if x.strip())
    else:
        raise ValueError(accepted)
    if not ids:
        raise ValueError(accepted)
    return tuple(dict.fromkeys(ids))


ROTATE_PHASES = ("trust", "reissue", "finish")

# What one run of a day-2 playbook is asked to do: ``pyinfra INVENTORY deploys/rotate-certs.py
# --data rotate=all``, or group data. Each playbook declares its defaults with ``@deploy(...,
# data_defaults=...)`` and reads them through :func:`playbook_inputs`; the parsers live here so a
# misspelt key or a bad value is refused with the same messages as every other setting.
PLAYBOOK_INPUTS: dict[str, Callable[[object], Any]] = {
    "rotate": _leaves,
    "rotate_ca": _optional(_cas),
    "rotate_phase": _optional(_choice(*ROTATE_PHASES)),
    "etcd_backup_retention": _int(1, 10000),
    "etcd_snapshot": _optional(_path),
    "etcd_restore_force": _bool,
    "etcd_replace": _optional(_str("a master's node name")),
    "datastore_replace": _optional(_str("a datastore member's name")),
}

REQUIRED = ("cluster_name", "vip", "node_network")
KNOWN_KEYS = frozenset(CLUSTER_SETTINGS) | frozenset(HOST_SETTINGS) | frozenset(PLAYBOOK_INPUTS)


def is_foreign_key(key: str) -> bool:
    """Keys that pyinfra or its connectors own; we neither read nor reject them."""
    return key.startswith(_PYINFRA_PREFIXES)


# --------------------------------------------------------------------------------------------


@dataclass
class _HostInput:
    inventory_name: str
    groups: tuple[str, ...]
    data: Mapping[str, Any]


def build_cluster(hosts: Iterable[_HostInput]) -> Cluster:
    """Validate raw host data and build the model. Raises ModelErrors listing every problem."""
    hosts = list(hosts)
    errors: list[ModelError] = []

    def err(key: str, found: object, accepted: str, host: str | None = None) -> None:
        errors.append(ModelError(key, found, accepted, host))

    # Unknown keys first: a typo would otherwise silently fall back to a default.
    for h in hosts:
        for key in sorted(h.data):
            if key in KNOWN_KEYS or is_foreign_key(key):
                continue
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            err(key, h.data[key], f"{hint}known settings are listed in metalseed.model", h.inventory_name)

    masters = [h for h in hosts if "masters" in h.groups]
    workers = [h for h in hosts if "workers" in h.groups]
    datastore = [h for h in hosts if DATASTORE_GROUP in h.groups]
    tenant_workers = [h for h in hosts if TENANT_WORKERS_GROUP in h.groups]
    for h in hosts:
        mine = [g for g in ("masters", "workers", DATASTORE_GROUP, TENANT_WORKERS_GROUP)
                if g in h.groups]
        if len(mine) > 1:
            err("groups", " and ".join(mine), "a host in exactly one of masters, workers, "
                "datastore and tenant_workers (a datastore member is no Kubernetes node, and "
                "shares no host with the cluster's etcd; a tenant's worker is a node of that "
                "tenant's cluster, never of the seed)", h.inventory_name)
        elif not mine:
            err("groups", list(h.groups), "the host in the 'masters', 'workers', 'datastore' or "
                "'tenant_workers' group", h.inventory_name)
    if len(masters) % 2 == 0:
        err("masters", len(masters),
            "an odd number of masters (1 for a lab, 3 recommended, 5 for large clusters)")
    if datastore and len(datastore) not in (1, 3, 5):
        err(DATASTORE_GROUP, len(datastore), "an odd number of datastore members: 1 (a lab), 3 "
            "or 5 (an even count adds no failure tolerance: etcd's quorum is a majority)")

    # Cluster-wide settings: the same value on every host.
    raw: dict[str, Any] = {}
    reference = masters[0] if masters else (hosts[0] if hosts else None)
    for key, (parse, default) in CLUSTER_SETTINGS.items():
        value = reference.data.get(key, default) if reference else default
        for h in hosts:
            other = h.data.get(key, default)
            if other != value:
                err(key, other, f"the same value on every host (cluster-wide setting); "
                    f"{reference.inventory_name if reference else '?'} has {value!r}",
                    h.inventory_name)
        if value is None and key in REQUIRED:
            err(key, None, "a value: this setting is required (set it in group_data/all.py)")
            continue
        try:
            raw[key] = parse(value)
        except ValueError as e:
            err(key, value, str(e))
    # Playbook inputs given in the data are checked now too, with everything else; the playbook
    # that uses them reads them again with its own defaults (playbook_inputs).
    for key, parse_input in PLAYBOOK_INPUTS.items():
        given = [h for h in hosts if key in h.data]
        for h in given[:1]:
            try:
                parse_input(h.data[key])
            except ValueError as e:
                err(key, h.data[key], str(e))

    nodes: list[Node] = []
    for role, group in (("master", masters), ("worker", workers), ("datastore", datastore),
                        (TENANT_WORKER, tenant_workers)):
        for h in group:
            name = h.data.get("node_name") or h.inventory_name
            try:
                name = HOST_SETTINGS["node_name"][0](name)
            except ValueError as e:
                err("node_name", name, str(e) + " (set node_name for this host)", h.inventory_name)
                continue
            addr_raw = h.data.get("address") or h.data.get("ssh_hostname") or h.inventory_name
            try:
                address = _ipv4(addr_raw)
            except ValueError as e:
                err("address", addr_raw, str(e) + " (set address or ssh_hostname)", h.inventory_name)
                continue
            nodes.append(Node(name=name, address=address, role=role, inventory_name=h.inventory_name))

    _check_nodes(nodes, raw, err)
    _check_networks(raw, err)
    _check_ports(raw, err)
    _check_kubernetes(raw, err)
    tenants: tuple[TenantSpec, ...] = ()
    if "kubernetes_version" in raw:
        try:
            tenants = parse_tenants(raw.get("tenants"), kubernetes_releases(),
                                    raw["kubernetes_version"], [h.inventory_name for h in hosts])
        except ModelErrors as e:
            errors.extend(e.errors)
        except ModelError as e:
            errors.append(e)
    _check_tenant_workers(tenants, hosts, err)
    if tenants and not raw.get("kubernetes"):
        err("tenants", sorted(t.name for t in tenants),
            "tenants only on a seed: a cluster with kubernetes = True")
    tenant_domain = raw.get("tenant_domain") or (
        f"{raw.get('cluster_name')}.tenants.{raw.get('dns_domain')}")
    for t in tenants:
        if len(f"{t.name}.{tenant_domain}") > 253:
            err("tenant_domain", tenant_domain, f"a domain short enough for the endpoint name "
                f"{t.name}.{tenant_domain} (at most 253 characters)")

    if errors:
        raise errors[0] if len(errors) == 1 else ModelErrors(errors)

    etcd = EtcdSettings(
        client_port=raw["etcd_client_port"],
        peer_port=raw["etcd_peer_port"],
        metrics_port=raw["etcd_metrics_port"],
        heartbeat_ms=raw["etcd_heartbeat_ms"],
        election_ms=raw["etcd_election_ms"],
        source=raw["etcd_source"],
        tarball_url=raw["etcd_tarball_url"],
        tarball_sha256=raw["etcd_tarball_sha256"],
        data_dir=raw["etcd_data_dir"],
        backup_dir=raw["etcd_backup_dir"],
    )
    members = tuple(n for n in nodes if n.role == "datastore")
    return Cluster(
        name=raw["cluster_name"],
        dns_domain=raw["dns_domain"],
        masters=tuple(n for n in nodes if n.is_master),
        workers=tuple(n for n in nodes if n.role == "worker"),
        vip=raw["vip"],
        vip_interface=raw["vip_interface"],
        node_network=raw["node_network"],
        pod_network=raw["pod_network"],
        service_network=raw["service_network"],
        apiserver_port=raw["apiserver_port"],
        ingress_http_nodeport=raw["ingress_http_nodeport"],
        ingress_https_nodeport=raw["ingress_https_nodeport"],
        etcd=etcd,
        datastore=Datastore(members, replace(etcd, store_dir="datastore",
                                             admin_client=DATASTORE_ROOT_USER, auth=True))
        if members else None,
        pki=PKISettings(
            key_algorithm=raw["pki_key_algorithm"],
            ca_lifetime=raw["pki_ca_lifetime"],
            leaf_lifetime=raw["pki_leaf_lifetime"],
            renew_before=raw["pki_renew_before"],
            store=raw["pki_store"],
            check_timer=raw["pki_check_timer"],
        ),
        edge=EdgeSettings(
            hostnames=raw["edge_hostnames"],
            cert_file=raw["edge_cert_file"],
            key_file=raw["edge_key_file"],
            hsts_max_age=raw["edge_hsts_max_age"],
            failover=raw["edge_failover"] or ("fast" if raw["kubernetes"] else "default"),
            vrrp_unicast=raw["edge_vrrp_unicast"],
            virtual_router_id=raw["edge_virtual_router_id"],
            http_port=raw["edge_http_port"],
            https_port=raw["edge_https_port"],
        ),
        kubernetes=KubernetesSettings(
            enabled=raw["kubernetes"],
            kubelet_settings=raw["kubelet_settings"],
            kube_proxy_mode=raw["kube_proxy_mode"],
            kube_proxy_settings=raw["kube_proxy_settings"],
            network_policy=raw["network_policy"] or ("cilium" if raw["tenants"] is not None
                                                     else "none"),
            version=raw["kubernetes_version"],
        ),
        mirror_url=raw["mirror_url"],
        mirror_dir=raw["mirror_dir"] or default_mirror_root(),
        containerd_restrict_oom_score_adj=raw["containerd_restrict_oom_score_adj"],
        tenants=tenants,
        tenant_domain=tenant_domain,
        tenant_workers=tuple(n for n in nodes if n.role == TENANT_WORKER),
    )


def _check_tenant_workers(tenants: tuple[TenantSpec, ...], hosts: list[_HostInput],
                          err: Callable[..., None]) -> None:
    """A tenant's workers are hosts of the tenant_workers group (a seed node joining a tenant's
    control plane would be a node of two clusters at once: its kubelet, kube-proxy and flanneld
    are the seed's), and every such host works for a tenant."""
    group_of = {h.inventory_name: h.groups for h in hosts}
    claimed: set[str] = set()
    for t in tenants:
        for w in t.workers:
            groups = group_of.get(w, ())
            claimed.add(w)
            if TENANT_WORKERS_GROUP in groups:
                continue
            seed = [g for g in ("masters", "workers", DATASTORE_GROUP) if g in groups]
            if seed:
                err(f"tenants[{t.name!r}].workers", w, f"a host of the '{TENANT_WORKERS_GROUP}' "
                    f"group: {w} is in '{seed[0]}', a host of the seed, and a tenant's worker must "
                    "not be one (move it to tenant_workers)")
    for h in hosts:
        if TENANT_WORKERS_GROUP in h.groups and h.inventory_name not in claimed:
            err("tenants", sorted(t.name for t in tenants), f"a tenant whose 'workers' name "
                f"{h.inventory_name} (a host of '{TENANT_WORKERS_GROUP}' that no tenant lists)",
                h.inventory_name)


def _check_nodes(nodes: list[Node], raw: dict[str, Any], err: Callable[..., None]) -> None:
    seen_names: dict[str, str] = {}
    seen_addrs: dict[IPv4, str] = {}
    net: Net4 | None = raw.get("node_network")
    vip: IPv4 | None = raw.get("vip")
    for n in nodes:
        if n.name in seen_names:
            err("node_name", n.name, f"a name no other host has (also used by {seen_names[n.name]})",
                n.inventory_name)
        seen_names.setdefault(n.name, n.inventory_name)
        if n.address in seen_addrs:
            err("address", str(n.address),
                f"an address no other host has (also used by {seen_addrs[n.address]})",
                n.inventory_name)
        seen_addrs.setdefault(n.address, n.inventory_name)
        if net is not None and n.address not in net:
            err("address", str(n.address), f"an address inside node_network {net}", n.inventory_name)
        elif net is not None and n.address in (net.network_address, net.broadcast_address):
            err("address", str(n.address), f"a host address of {net}, not its network or broadcast",
                n.inventory_name)
    if vip is not None:
        if net is not None and (vip not in net or vip in (net.network_address, net.broadcast_address)):
            err("vip", str(vip), f"a free host address inside node_network {net}")
        if vip in seen_addrs:
            err("vip", str(vip), f"an address no host uses (it is {seen_addrs[vip]}'s address)")


def _check_networks(raw: dict[str, Any], err: Callable[..., None]) -> None:
    names = ("node_network", "pod_network", "service_network")
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            na, nb = raw.get(a), raw.get(b)
            if na is not None and nb is not None and na.overlaps(nb):
                err(b, str(nb), f"a network that does not overlap {a} {na}")
    svc: Net4 | None = raw.get("service_network")
    if svc is not None and svc.num_addresses < 16:
        err("service_network", str(svc), "a network of at least 16 addresses (/28 or larger)")
    pod: Net4 | None = raw.get("pod_network")
    if pod is not None and pod.prefixlen > 22:
        err("pod_network", str(pod), "a network of /22 or larger (flannel gives each node a /24)")


def _check_ports(raw: dict[str, Any], err: Callable[..., None]) -> None:
    if "ingress_http_nodeport" in raw and raw.get("ingress_http_nodeport") == raw.get(
        "ingress_https_nodeport"
    ):
        err("ingress_https_nodeport", raw["ingress_https_nodeport"],
            "a NodePort different from ingress_http_nodeport")
    hb, el = raw.get("etcd_heartbeat_ms"), raw.get("etcd_election_ms")
    if hb is not None and el is not None and el < 5 * hb:
        err("etcd_election_ms", el, f"at least 5 x etcd_heartbeat_ms = {5 * hb} (etcd refuses less)")
    etcd_ports = [raw.get(k) for k in ("etcd_client_port", "etcd_peer_port", "etcd_metrics_port")]
    if None not in etcd_ports and len(set(etcd_ports)) != 3:
        err("etcd_metrics_port", etcd_ports, "three different ports for client, peer and metrics")
    if raw.get("etcd_source") == "tarball" and not (
        raw.get("etcd_tarball_url") and raw.get("etcd_tarball_sha256")
    ):
        err("etcd_tarball_url", raw.get("etcd_tarball_url"),
            "with etcd_source='tarball', both etcd_tarball_url and etcd_tarball_sha256")
    leaf, window = raw.get("pki_leaf_lifetime"), raw.get("pki_renew_before")
    if leaf is not None and window is not None and window >= leaf:
        err("pki_renew_before", _fmt_duration(window),
            f"a window shorter than pki_leaf_lifetime {_fmt_duration(leaf)} (otherwise every "
            "certificate is due the moment it is issued)")
    ca = raw.get("pki_ca_lifetime")
    if leaf is not None and ca is not None and leaf > ca:
        err("pki_leaf_lifetime", _fmt_duration(leaf),
            f"a lifetime no longer than pki_ca_lifetime {_fmt_duration(ca)}")
    if (raw.get("edge_cert_file") is None) != (raw.get("edge_key_file") is None):
        err("edge_key_file", raw.get("edge_key_file"),
            "edge_cert_file and edge_key_file together, or neither")


# Ports our own services listen on, on the nodes themselves.
_HOST_PORTS = ("apiserver_port", "etcd_client_port", "etcd_peer_port", "etcd_metrics_port",
               "edge_http_port", "edge_https_port")


def _check_kubernetes(raw: dict[str, Any], err: Callable[..., None]) -> None:
    if not raw.get("kubernetes"):
        if raw.get("network_policy") not in (None, "none"):
            err("network_policy", raw["network_policy"],
                "a network policy engine only with kubernetes = True (or 'none')")
        return
    if raw.get("etcd_source") == "debian":
        err("etcd_source", "debian",
            "with kubernetes = True, an etcd of 3.5.11 or newer (Kubernetes >= 1.31 needs it; "
            "Debian 12 ships 3.4.23): etcd_source = 'mirror' (the mirror's pinned 3.6), or "
            "'tarball'")
    # kube-proxy answers on every NodePort of every node, masters included: a host port of ours
    # inside the range collides with the ingress NodePorts or with any Service's NodePort.
    ingress = {raw.get(k): k for k in ("ingress_http_nodeport", "ingress_https_nodeport")}
    lo, hi = NODEPORT_RANGE
    for key in _HOST_PORTS:
        port = raw.get(key)
        if port in ingress:
            err(key, port, f"a port that no ingress NodePort uses ({ingress[port]} is {port})")
        elif isinstance(port, int) and lo <= port <= hi:
            err(key, port, f"a port outside the NodePort range {lo}-{hi} (with kubernetes = True, "
                "kube-proxy holds every NodePort on every node)")
    kubelet = dict(raw.get("kubelet_settings") or ())
    for field_ in ("port", "readOnlyPort", "healthzPort"):
        port = kubelet.get(field_)
        if isinstance(port, int) and not isinstance(port, bool) and lo <= port <= hi:
            err("kubelet_settings", {field_: port},
                f"kubelet_settings.{field_} outside the NodePort range {lo}-{hi} "
                f"({ingress.get(port) or 'a Service NodePort'} would collide with it)")


# --------------------------------------------------------------------------------------------
# Entry points from pyinfra


def playbook_inputs(cluster: Cluster, data: Any, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The validated inputs of one playbook run: each key of ``defaults`` (the playbook's
    ``data_defaults``), read from pyinfra data (``host.data``: ``--data``, host and group data,
    then the deploy's defaults). Raises ModelErrors naming every bad input."""
    errors: list[ModelError] = []
    out: dict[str, Any] = {}
    for key, default in defaults.items():
        value = data.get(key, default)
        try:
            out[key] = PLAYBOOK_INPUTS[key](value)
        except ValueError as e:
            errors.append(ModelError(key, value, str(e)))
    if ("rotate_ca" in out) and (out["rotate_ca"] is None) != (out.get("rotate_phase") is None):
        errors.append(ModelError(
            "rotate_ca" if out["rotate_ca"] is None else "rotate_phase", None,
            "both rotate_ca and rotate_phase for a CA rotation (--data rotate_ca=etcd/ca "
            "--data rotate_phase=trust), or neither"))
    members = [m.name for m in cluster.datastore.members] if cluster.datastore else []
    if "datastore_replace" in out and out["datastore_replace"] not in members:
        errors.append(ModelError("datastore_replace", out["datastore_replace"],
                                 "the name of the datastore member to replace: one of "
                                 f"{', '.join(members) or '(no datastore group)'}"))
    masters = [m.name for m in cluster.masters]
    if "etcd_replace" in out and out["etcd_replace"] not in masters:
        errors.append(ModelError("etcd_replace", out["etcd_replace"],
                                 f"the name of the master to replace: one of {', '.join(masters)}"))
    if errors:
        raise errors[0] if len(errors) == 1 else ModelErrors(errors)
    return out


def cluster_from_inventory(inventory: Any) -> Cluster:
    """Build the model from a ``pyinfra.api.Inventory`` (in deploys: ``host.inventory``).

    The result is cached on the inventory object so that every deploy of a run shares one model.
    """
    cached = getattr(inventory, "_metalseed_cluster", None)
    if isinstance(cached, Cluster):
        return cached
    hosts = []
    for h in inventory:
        data = {k: v for k, v in h.data.dict().items()}
        hosts.append(_HostInput(h.name, tuple(h.groups), data))
    cluster = build_cluster(hosts)
    inventory._metalseed_cluster = cluster
    return cluster


def _exec_file(path: Path) -> dict[str, Any]:
    """A Python data file's module-level names, less dunders and what it imported."""
    import ast
    import runpy

    imported: set[str] = set()
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
    values = runpy.run_path(str(path))
    return {k: v for k, v in values.items() if not k.startswith("__") and k not in imported}


def _is_group(key: str, value: Any) -> bool:
    if key.startswith("_"):
        return False
    hosts = value[0] if isinstance(value, tuple) and len(value) == 2 else value
    return isinstance(hosts, list) and all(isinstance(h, (str, tuple)) for h in hosts)


def load_inventory(path: str | Path, override_data: dict[str, Any] | None = None) -> Any:
    """Load a pyinfra inventory file with its ``group_data/`` as the pyinfra CLI does: every
    list (or ``(hosts, data)`` tuple) is a group, the file's own name is a group of all its
    hosts, ``group_data/<group>.py`` beside the file (and in the working directory) gives group
    data. ``override_data`` is what ``pyinfra --data KEY=VALUE`` would give.

    Not pyinfra_cli's loader: importing pyinfra_cli monkey-patches the whole process for gevent,
    which breaks threads (grpc, test clients) that already run in it.
    """
    from pyinfra.api import Inventory

    p = Path(path)
    if not p.is_file():
        raise InventoryError(f"inventory file {str(p)!r} does not exist")
    try:
        groups = {k: v for k, v in _exec_file(p).items() if _is_group(k, v)}
        data_dirs = dict.fromkeys([Path.cwd() / "group_data", p.resolve().parent / "group_data"])
        group_data: dict[str, dict[str, Any]] = {}
        for d in data_dirs:
            for f in sorted(d.glob("*.py")) if d.is_dir() else []:
                group_data.setdefault(f.stem, {}).update(_exec_file(f))
    except Exception as e:  # a user's file may raise anything; say which file and what
        raise InventoryError(f"could not load inventory {str(p)!r}: {type(e).__name__}: {e}") from e

    def split(value: Any) -> tuple[list[Any], dict[str, Any]]:
        if isinstance(value, tuple):
            return list(value[0]), dict(value[1])
        return list(value), {}

    all_hosts, all_data = split(groups.pop("all")) if "all" in groups else ([], {})
    names = [h[0] if isinstance(h, tuple) else h for h in all_hosts]
    parsed = {name: split(v) for name, v in groups.items()}
    for hosts, _ in parsed.values():
        for h in hosts:
            name = h[0] if isinstance(h, tuple) else h
            if name not in names:
                names.append(name)
                all_hosts.append(h)
    parsed.setdefault(p.stem, (list(all_hosts), {}))
    for name, data in group_data.items():
        # As in pyinfra: a group_data file overrides data given inline in the inventory file.
        if name == "all":
            all_data = {**all_data, **data}
        elif name in parsed:
            parsed[name] = (parsed[name][0], {**parsed[name][1], **data})
    return Inventory((all_hosts, all_data), override_data=override_data or {}, **parsed)


def load_cluster(path: str | Path, override_data: dict[str, Any] | None = None) -> Cluster:
    return cluster_from_inventory(load_inventory(path, override_data))
