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

# Mozilla "intermediate" (guideline 5.7): TLS 1.2 + 1.3, forward-secret AEAD suites only.
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

# Short on purpose: a worker that is down costs a request at most this long before nginx tries the
# next one (a crashed machine answers nothing, so only the timeout notices it).
CONNECT_TIMEOUT = "1s"
# How long a worker stays out of rotation after one failure before nginx tries it again.
FAIL_TIMEOUT = "10s"
# Kubernetes watches are long-lived and mostly idle.
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
    return (f"/usr/bin/curl -fsS -o /dev/null --max-time 1 "
            f"http://127.0.0.1:{HEALTH_PORT}{HEALTH_PATH}")


def keepalived_conf(cluster: Cluster, node: Node) -> str:
    if not node.is_master:
        raise ValueError(f"{node.name} is not a master; keepalived runs on masters only")
    edge = cluster.edge
    peers = [m for m in cluster.masters if m != node]
    unicast = ""
    if edge.vrrp_unicast:
        lines = "\n".join(f"        {p.address}" for p in peers)
        unicast = f"    unicast_src_ip {node.address}\n    unicast_peer {{\n{lines}\n    }}\n"
    return f"""\
# Managed by metalseed (edge): changes here are overwritten by the next deploy.
global_defs {{
    router_id {node.name}
    vrrp_version 3
    script_user root
    enable_script_security
    # Sub-second adverts must not be starved by a busy machine: let keepalived raise itself to
    # real-time scheduling when its timers run late, instead of a false failover.
    max_auto_priority
}}

# The VIP belongs on a master whose nginx serves: when the check fails, this instance goes to
# FAULT, gives up the VIP, and the next master by priority takes it.
vrrp_script {VRRP_SCRIPT} {{
    script "{health_check_command()}"
    interval 1
    timeout 2
    fall 2
    rise 2
}}

vrrp_instance {VRRP_INSTANCE} {{
    # All start as BACKUP so a booting master never claims the VIP before hearing its peers;
    # the highest priority then takes it (preemption is on: the holder is predictable).
    state BACKUP
    interface {cluster.vip_interface}
    virtual_router_id {edge.virtual_router_id}
    priority {priority(cluster, node)}
    advert_int {_fmt_interval(edge.advert_int)}
{unicast}    virtual_ipaddress {{
        {cluster.vip}/32 dev {cluster.vip_interface}
    }}
    track_script {{
        {VRRP_SCRIPT}
    }}
}}
"""


def sysctl_conf() -> str:
    body = "".join(f"{k} = {v}\n" for k, v in SYSCTLS.items())
    return ("# Managed by metalseed (edge): nginx binds the VIP on every master, holder or not.\n"
            + body)


def _https_suffix(cluster: Cluster) -> str:
    port = cluster.edge.https_port
    return "" if port == 443 else f":{port}"


def nginx_conf(cluster: Cluster, bundle_path: str) -> str:
    edge = cluster.edge
    vip = cluster.vip
    workers = "\n".join(
        f"        server {w.address}:{cluster.ingress_http_nodeport} max_fails=1 "
        f"fail_timeout={FAIL_TIMEOUT};"
        for w in cluster.workers
    ) or "        server 127.0.0.1:1 down;  # no workers in the model"
    masters = "\n".join(
        f"        server {m.address}:{cluster.apiserver_port} max_fails=1 fail_timeout={FAIL_TIMEOUT};"
        for m in cluster.masters
    )
    tries = max(1, len(cluster.workers))
    return f"""\
# Managed by metalseed (edge): changes here are overwritten by the next deploy.
user www-data;
worker_processes auto;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log;
load_module {STREAM_MODULE};

events {{
    worker_connections 4096;
}}

http {{
    server_tokens off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    access_log /var/log/nginx/access.log combined buffer=64k flush=5s;
    # Limits belong to the ingress controller; the edge streams bodies through.
    client_max_body_size 0;
    proxy_request_buffering off;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}

    # No upstream keepalive, on purpose: a request sent on a pooled connection to a worker that
    # crashed waits for the read timeout, while a fresh connect fails within CONNECT_TIMEOUT and
    # is retried on the next worker.
    upstream metalseed_ingress_http {{
{workers}
    }}

    ssl_protocols {TLS_PROTOCOLS};
    ssl_ciphers {TLS_CIPHERS};
    ssl_prefer_server_ciphers off;
    ssl_session_timeout 1d;
    ssl_session_cache shared:MetalseedTLS:10m;
    ssl_session_tickets off;

    server {{
        listen {vip}:{edge.http_port} default_server;
        return 308 https://$host{_https_suffix(cluster)}$request_uri;
    }}

    server {{
        listen {vip}:{edge.https_port} ssl http2 default_server;
        ssl_certificate {bundle_path};
        ssl_certificate_key {bundle_path};
        ssl_dhparam {bundle_path};
        add_header Strict-Transport-Security "max-age={edge.hsts_max_age}" always;

        location / {{
            proxy_pass http://metalseed_ingress_http;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_connect_timeout {CONNECT_TIMEOUT};
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries {tries};
        }}
    }}

    # keepalived's health check (loopback only).
    server {{
        listen 127.0.0.1:{HEALTH_PORT};
        access_log off;
        location = {HEALTH_PATH} {{
            return 200 "ok\\n";
        }}
        location / {{
            return 404;
        }}
    }}
}}

# The Kubernetes API: TCP pass-through, TLS untouched, to every master's API server.
stream {{
    upstream metalseed_apiserver {{
{masters}
    }}

    server {{
        listen {vip}:{cluster.apiserver_port};
        proxy_pass metalseed_apiserver;
        proxy_connect_timeout {CONNECT_TIMEOUT};
        proxy_timeout {API_PROXY_TIMEOUT};
        proxy_next_upstream on;
    }}
}}
"""


# --------------------------------------------------------------------------------------------
# Lab stand-in for the ingress controller (the lab has no Kubernetes)

STANDIN_UNIT_NAME = "metalseed-lab-ingress-standin.service"
STANDIN_UNIT = f"/etc/systemd/system/{STANDIN_UNIT_NAME}"
STANDIN_CONF = "/etc/metalseed/lab-ingress-standin/nginx.conf"


def standin_conf(cluster: Cluster) -> str:
    """nginx answering on the ingress NodePort with its node name and the request's headers."""
    body = ("node=$hostname\\nhost=$host\\nxff=$http_x_forwarded_for\\n"
            "proto=$http_x_forwarded_proto\\n")
    return f"""\
# LAB STAND-IN for the ingress controller, installed by metalseed on lab workers only.
daemon off;
user www-data;
worker_processes 1;
pid /run/metalseed-lab-ingress-standin.pid;
error_log stderr;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    server_tokens off;
    keepalive_requests 100000;
    server {{
        listen {cluster.ingress_http_nodeport} default_server;
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
}}
"""


def standin_unit() -> str:
    return f"""\
# LAB STAND-IN for the ingress controller, installed by metalseed on lab workers only.
[Unit]
Description=metalseed lab stand-in for the ingress NodePort (answers with node name and Host)
After=network.target

[Service]
ExecStartPre=/usr/sbin/nginx -t -q -c {STANDIN_CONF}
ExecStart=/usr/sbin/nginx -c {STANDIN_CONF}
ExecReload=/bin/kill -HUP $MAINPID
Restart=always

[Install]
WantedBy=multi-user.target
"""
