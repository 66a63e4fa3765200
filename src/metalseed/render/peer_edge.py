"""A peer edge for benchmarks: HAProxy (Debian's) doing the HTTPS work of the edge's nginx.

bench/kubernetes.py runs it on a master beside nginx and compares requests/s through both; the
two must do the same work, so the settings come from :mod:`metalseed.render.edge` (TLS protocols
and ciphers, connect timeout, HSTS, the workers' NodePorts), never from a list of their own.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from metalseed.model import Cluster
from metalseed.render import edge
from metalseed.render.templates import render

CONF = "/run/metalseed-bench/haproxy.cfg"
UNIT = "metalseed-bench-haproxy.service"


def haproxy_conf(cluster: Cluster, bundle_path: str, address: IPv4Address, port: int) -> str:
    protocols = edge.TLS_PROTOCOLS.split()
    return render(
        "peer-edge/haproxy.cfg.j2",
        tls_ciphers=edge.TLS_CIPHERS,
        # HAProxy names a minimum; nginx lists the versions (always a contiguous range here).
        tls_min=protocols[0],
        connect_timeout=edge.CONNECT_TIMEOUT,
        # nginx tries each worker once (proxy_next_upstream_tries = workers): HAProxy retries
        # one time less than that, after its first try.
        retries=max(0, len(cluster.workers) - 1),
        address=address,
        port=port,
        bundle_path=bundle_path,
        hsts_max_age=cluster.edge.hsts_max_age,
        workers=[(w.name, f"{w.address}:{cluster.ingress_http_nodeport}")
                 for w in cluster.workers],
    )
