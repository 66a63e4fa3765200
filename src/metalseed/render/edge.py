"""The HA edge on the masters: keepalived (VRRPv3 VIP) and nginx, as pure functions of the model.

Layout on a master::

    /etc/keepalived/keepalived.conf           VRRP instance holding the VIP, health-tracked
    /etc/nginx/nginx.conf                     the whole nginx config (Debian's sites are not used)
    /etc/nginx/metalseed/edge-<sha>.pem       serving chain + key + DH group, 0600 in a 0700 dir
    /etc/sysctl.d/60-metalseed-edge.conf      net.ipv4.ip_nonlocal_bind = 1

Why nginx binds the VIP only (never ``*:port``): the API server on every master listens on
``apiserver_port`` (6443). A wildcard ``*:6443`` in nginx would clash with it, so nginx listens on
``VIP:6443`` and the API server must bind the node's own address (``--bind-address=<node address>``,
which the kubernetes deploy sets). Binding an address a master does not hold needs
``ip_nonlocal_bind``; with it nginx runs and is warm on every master, and a failover is nothing but
the VIP moving (no nginx start on the new holder). HTTP/HTTPS are bound to the VIP for the same
reason of one rule: the edge is the VIP, node addresses belong to the node.

The bundle's file name carries a digest of its content: a new certificate is a new file, so a staged
``nginx.conf`` that names it can be checked with ``nginx -t`` while the live one keeps serving the
old file; nothing live is touched before the check passes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from metalseed.model import Cluster, Node
from metalseed.render.templates import render

NGINX_CONF = "/etc/nginx/nginx.conf"
NGINX_DIR = "/etc/nginx/metalseed"
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
SYSCTL_CONF = "/etc/sysctl.d/60-metalseed-edge.conf"
SYSCTLS = {"net.ipv4.ip_nonlocal_bind": "1"}
PACKAGES = ("nginx", "libnginx-mod-stream", "keepalived", "curl")
UNITS = ("nginx.service", "keepalived.service")
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

HEALTH_PORT = 18404
"""nginx answers ``/healthz`` on 127.0.0.1 here; keepalived's check asks it. Not on the VIP: on a
backup master the VIP is not local, so a check against it would test the holder's nginx."""
HEALTH_PATH = "/healthz"

# The VRRP priority of the first master; each next one is PRIORITY_STEP lower, so the holder is
# always the first healthy master in model order. 255 is reserved for an address owner.
PRIORITY_TOP = 150
PRIORITY_STEP = 10
VRRP_INSTANCE = "metalseed_edge"
VRRP_SCRIPT = "metalseed_nginx"

# Mozilla "intermediate" (guideline 5.7): TLS 1.2 + 1.3, forward-secret AEAD suites only
# (said again beside ssl_protocols in files/edge/nginx.conf.j2, for whoever reads the config).
TLS_PROTOCOLS = "TLSv1.2 TLSv1.3"
TLS_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-CHACHA20-POLY1305",
))

# RFC 7919 ffdhe2048, as Mozilla recommends for the DHE suites (only used with an RSA certificate).
# A public, well-known group: generating our own would be slower and no safer.
FFDHE2048 = """-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""

# nginx's timeouts; why each value: beside the line that uses it in files/edge/nginx.conf.j2.
CONNECT_TIMEOUT = "1s"
API_CONNECT_TIMEOUT = "300ms"
"""The TCP handshake to an API server, which the master's kernel answers however loaded its
processes are: a master that does not answer within this is down, and the next one is tried.
Short, because the first connection after a master's crash pays it (before nginx marks it)."""
FAIL_TIMEOUT = "10s"
API_FAIL_TIMEOUT_S = 2
"""How long nginx keeps an API server out of rotation after one refused connect. A rolling
restart must not take the next API server down while the last one is still out (seen, with
10 s: "no live upstreams", and a client through the VIP failed three tries in a row), so it
waits this long after each /readyz (:func:`metalseed.deploys.kubernetes.apiserver_health`):
short, since every master of every roll pays it."""
API_PROXY_TIMEOUT = "1h"


@dataclass(frozen=True)
class Bundle:
    """The serving material nginx reads: certificate chain, key and DH group in one PEM."""

    content: bytes

    @property
    def path(self) -> str:
        digest = hashlib.sha256(self.content).hexdigest()[:16]
        return f"{NGINX_DIR}/edge-{digest}.pem"


def bundle(cert_chain_pem: bytes, key_pem: bytes) -> Bundle:
    """One file for ``ssl_certificate``, ``ssl_certificate_key`` and ``ssl_dhparam``.

    nginx reads each from the first PEM block of the right type, so one file serves all three and
    the deploy ships (and checks) one secret file instead of three.
    """
    parts = [p.strip() + b"\n" for p in (cert_chain_pem, key_pem, FFDHE2048.encode())]
    return Bundle(b"".join(parts))


def priority(cluster: Cluster, node: Node) -> int:
    return PRIORITY_TOP - PRIORITY_STEP * cluster.masters.index(node)


def expected_holder(cluster: Cluster) -> Node:
    """The master that holds the VIP when every master is healthy."""
    return cluster.masters[0]


def master_down_interval(cluster: Cluster, node: Node) -> float:
    """RFC 5798: how long a backup waits for adverts before taking over (3 x interval + skew)."""
    advert = cluster.edge.advert_int
    return 3 * advert + (256 - priority(cluster, node)) / 256 * advert


def _fmt_interval(seconds: float) -> str:
    return f"{seconds:g}"


def health_check_command() -> str:
    return (f"/usr/bin/curl -fsS -o /dev/null --max-time 2 "
            f"http://127.0.0.1:{HEALTH_PORT}{HEALTH_PATH}")


# Seconds between the holder's unprompted gratuitous ARPs: the longest a client that kept another
# master's MAC for the VIP goes on sending through that master (see keepalived.conf.j2).
GARP_REFRESH = 5


def keepalived_conf(cluster: Cluster, node: Node) -> str:
    if not node.is_master:
        raise ValueError(f"{node.name} is not a master; keepalived runs on masters only")
    edge = cluster.edge
    return render(
        "edge/keepalived.conf.j2",
        router_id=node.name,
        vrrp_script=VRRP_SCRIPT,
        vrrp_instance=VRRP_INSTANCE,
        health_check_command=health_check_command(),
        interface=cluster.vip_interface,
        virtual_router_id=edge.virtual_router_id,
        priority=priority(cluster, node),
        advert_int=_fmt_interval(edge.advert_int),
        unicast=edge.vrrp_unicast,
        unicast_src_ip=node.address,
        unicast_peers=[m.address for m in cluster.masters if m != node],
        vip=cluster.vip,
        garp_refresh=GARP_REFRESH,
    )


def sysctl_conf() -> str:
    return render("edge/60-metalseed-edge.conf.j2", sysctls=SYSCTLS)


def _https_suffix(cluster: Cluster) -> str:
    port = cluster.edge.https_port
    return "" if port == 443 else f":{port}"


# How long nginx keeps a tenant Service's address from CoreDNS: a Service deleted and made again
# (a new ClusterIP) is reached within this, and a steady one costs one lookup per interval.
TENANT_DNS_VALID = "10s"
TENANT_DNS_TIMEOUT = "2s"


SERVICE_ROUTE_UNIT = "metalseed-service-route.service"


def service_route_unit(cluster: Cluster, node: Node) -> str:
    """On a seed's masters: a route for the service network, so nginx reaches tenant Services'
    ClusterIPs on a host without a default route (see files/edge/metalseed-service-route.service.j2)."""
    return render("edge/metalseed-service-route.service.j2", service_network=cluster.service_network,
                  interface=cluster.vip_interface, address=node.address)


def tenant_routes(cluster: Cluster) -> list[tuple[str, str]]:
    """(SNI name, upstream) for each tenant: the endpoint name to its API Service's in-seed DNS
    name. A name and not the ClusterIP, so the edge is a function of the model alone (cluster.py
    and seed.py render the same file) and needs nothing read back from the seed's API."""
    from metalseed.kube.tenant import API_PORT, API_SERVICE

    return [(cluster.tenant_endpoint(t.name),
             f"{API_SERVICE}.{t.namespace}.svc.{cluster.dns_domain}:{API_PORT}")
            for t in cluster.tenants]


def tenant_source_routes(cluster: Cluster) -> list[tuple[str, str]]:
    """(client address, upstream) for each tenant worker: its tenant's API Service. A pod's
    in-cluster client dials the tenant's ``kubernetes`` Service by IP (its endpoint is the VIP,
    :mod:`metalseed.kube.tenant_nodes`), so its TLS hello names no server; it arrives from its
    worker's address (flanneld masquerades), which belongs to exactly one tenant."""
    routes = dict(tenant_routes(cluster))
    return [(str(n.address), routes[cluster.tenant_endpoint(t.name)])
            for t in cluster.tenants for n in cluster.workers_of(t.name)]


def nginx_conf(cluster: Cluster, bundle_path: str) -> str:
    edge = cluster.edge
    return render(
        "edge/nginx.conf.j2",
        stream_module=STREAM_MODULE,
        workers=[f"{w.address}:{cluster.ingress_http_nodeport}" for w in cluster.workers],
        masters=[f"{m.address}:{cluster.apiserver_port}" for m in cluster.masters],
        fail_timeout=FAIL_TIMEOUT,
        api_fail_timeout=f"{API_FAIL_TIMEOUT_S}s",
        connect_timeout=CONNECT_TIMEOUT,
        api_connect_timeout=API_CONNECT_TIMEOUT,
        api_proxy_timeout=API_PROXY_TIMEOUT,
        tls_protocols=TLS_PROTOCOLS,
        tls_ciphers=TLS_CIPHERS,
        vip=cluster.vip,
        http_port=edge.http_port,
        https_port=edge.https_port,
        https_suffix=_https_suffix(cluster),
        bundle_path=bundle_path,
        hsts_max_age=edge.hsts_max_age,
        # Every worker gets one try; with none, nginx still needs a count of at least 1.
        tries=max(1, len(cluster.workers)),
        health_port=HEALTH_PORT,
        health_path=HEALTH_PATH,
        apiserver_port=cluster.apiserver_port,
        tenant_routes=tenant_routes(cluster),
        tenant_source_routes=tenant_source_routes(cluster),
        cluster_dns=cluster.cluster_dns_address,
        tenant_dns_valid=TENANT_DNS_VALID,
        tenant_dns_timeout=TENANT_DNS_TIMEOUT,
    )
