"""A test backend on the workers' ingress NodePort, for the lab tests and benches of the edge that
run without Kubernetes (the session lab ``test``, ``bench/edge.py``, ``bench/rotation.py``).

The edge proxies to ``<worker>:ingress_http_nodeport``; with no ingress controller there, those
tests need something that answers and says what it received. This is a small nginx (the host's
package, through the lab's overlay) in a unit of its own, answering every request with::

    node=<worker's hostname>
    host=<Host header>
    xff=<X-Forwarded-For>
    proto=<X-Forwarded-Proto>

It belongs to the tests, not to metalseed: no deploy installs it; on a Kubernetes cluster the
ingress controller (Traefik, :mod:`metalseed.kube.ingress`) answers on that port instead. The unit
is enabled, so a worker that was crashed and restarted serves again without a new install.
"""

from __future__ import annotations

import base64
import shlex
from functools import cache
from pathlib import Path

import jinja2

from metalseed.edgeprobe import wait_port
from metalseed.errors import HealthCheckError
from metalseed.lab import Lab
from metalseed.model import Cluster

NAME = "metalseed-test-backend"
UNIT = f"{NAME}.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
CONF = f"/etc/{NAME}/nginx.conf"
TEMPLATES = Path(__file__).resolve().parent / "templates" / "nodeport-backend"


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def nginx_conf(port: int) -> str:
    return _env().get_template("nginx.conf.j2").render(name=NAME, port=port)


def unit() -> str:
    return _env().get_template("unit.service.j2").render(conf=CONF)


def _put(path: str, text: str) -> str:
    """Shell: write ``text`` to ``path`` only when it differs; echo ``changed`` if it did."""
    data = base64.b64encode(text.encode()).decode()
    q = shlex.quote(path)
    return (f"mkdir -p $(dirname {q}) && echo {data} | base64 -d > {q}.new && "
            f"if cmp -s {q}.new {q}; then rm {q}.new; else mv {q}.new {q}; echo changed; fi")


def install(lab: Lab, cluster: Cluster, timeout: float = 30) -> None:
    """On every worker of ``cluster``: the backend up on the ingress NodePort (idempotent: a
    second call restarts nothing)."""
    port = cluster.ingress_http_nodeport
    for w in cluster.workers:
        script = "; ".join([
            "set -e",
            f"c=$({_put(CONF, nginx_conf(port))})",
            f"u=$({_put(UNIT_PATH, unit())})",
            'if [ -n "$u" ]; then systemctl daemon-reload; fi',
            f"systemctl enable -q {UNIT}",
            f'if [ -n "$c$u" ]; then systemctl restart {UNIT}; else systemctl start {UNIT}; fi',
        ])
        proc = lab.ssh(w.name, ["sh", "-c", script], timeout=timeout)
        if proc.returncode != 0:
            raise HealthCheckError(f"test backend on {w.name}: {proc.stderr.strip()[-500:]}")
    for w in cluster.workers:
        wait_port(str(w.address), port, timeout=timeout)
