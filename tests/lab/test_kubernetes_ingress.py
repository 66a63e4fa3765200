"""The ingress path on the shared Kubernetes lab: client -> nginx on the VIP (TLS) -> a worker's
NodePort -> Traefik (ingress-nginx provider) -> an agnhost pod, with real curl from this machine.

- an Ingress of class ``nginx`` answers ``https://app.<lab>.test/`` (resolved to the VIP, TLS
  verified against the store's edge CA) from both pods; another Host gets Traefik's 404;
- the pod sees this machine's address in X-Forwarded-For (appended to by the master that
  proxied: Traefik trusts the masters), and X-Forwarded-* sent straight to a worker's NodePort by
  anybody else are replaced, not trusted;
- ``nginx.ingress.kubernetes.io/force-ssl-redirect`` and ``auth-type: basic`` behave as under
  ingress-nginx behind a TLS-terminating proxy: through the edge (X-Forwarded-Proto https) no
  redirect but a 401 without credentials; plain HTTP on the NodePort a 308 to https, even when
  the client claims ``X-Forwarded-Proto: https``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import subprocess

import pytest

from metalseed.kube import ingress
from metalseed.model import Cluster
from tests.lab.kube import KubeApp, kubectl, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.kube]

SPOOF = "203.0.113.9"


def curl(*argv: str) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) of one curl (argv without the program)."""
    proc = subprocess.run(["curl", "-sS", "--max-time", "10", "-D", "-", *argv],
                          capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    # Bytes: text mode would turn the header block's CRLFs into newlines.
    head, _, body = proc.stdout.decode(errors="replace").partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), body, headers


def through_the_edge(app: KubeApp, path: str, *extra: str, host: str | None = None
                     ) -> tuple[int, str, dict[str, str]]:
    name = host or app.host
    return curl("--cacert", str(app.ca), "--resolve", f"{name}:{app.port}:{app.vip}", *extra,
                f"https://{name}:{app.port}{path}")


def straight_to(c: Cluster, worker: str, host: str, path: str, *extra: str
                ) -> tuple[int, str, dict[str, str]]:
    return curl("-H", f"Host: {host}", *extra,
                f"http://{c.node(worker).address}:{c.ingress_http_nodeport}{path}")


def my_address(c: Cluster) -> str:
    """This machine's source address towards the lab (what the edge sees as the client)."""
    out = subprocess.run(["ip", "-4", "-o", "route", "get", str(c.vip)], capture_output=True,
                         text=True, check=True).stdout.split()
    return str(ipaddress.ip_address(out[out.index("src") + 1]))


# ---------------------------------------------------------------------------------------------


def test_traefik_runs_on_every_worker_only(kube_cluster: Cluster, kube_app: KubeApp) -> None:
    c = kube_cluster
    pods = json.loads(kubectl(c, "-n", ingress.NAMESPACE, "get", "pods", "-o", "json").stdout)
    nodes = sorted(p["spec"]["nodeName"] for p in pods["items"])
    assert nodes == sorted(w.name for w in c.workers)
    svc = json.loads(kubectl(c, "-n", ingress.NAMESPACE, "get", "service", ingress.NAME, "-o",
                             "json").stdout)["spec"]
    assert svc["externalTrafficPolicy"] == "Local"
    assert [p["nodePort"] for p in svc["ports"]] == [c.ingress_http_nodeport]
    cls = json.loads(kubectl(c, "get", "ingressclass", "nginx", "-o", "json").stdout)
    assert cls["spec"]["controller"] == "k8s.io/ingress-nginx"
    # The provider publishes the VIP as the Ingress's address.
    ing = json.loads(kubectl(c, "-n", kube_app.namespace, "get", "ingress", kube_app.name, "-o",
                             "json").stdout)
    assert ing["status"]["loadBalancer"]["ingress"] == [{"ip": str(c.vip)}]


def test_an_ingress_of_class_nginx_answers_through_the_edge(kube_cluster: Cluster,
                                                           kube_app: KubeApp) -> None:
    pods = set(kube_app.pods(kube_cluster))
    assert len(pods) == 2
    seen = set()
    for _ in range(12):
        proc = subprocess.run(kube_app.curl("/hostname", "-w", "\n%{http_code}"),
                              capture_output=True, text=True, timeout=30, check=True)
        body, _, code = proc.stdout.rpartition("\n")
        assert code == "200", proc.stdout
        seen.add(body)
    assert seen == pods  # both replicas serve
    # The Host routed on (Go's server keeps it out of the headers netexec can echo) is what the
    # edge passed on as X-Forwarded-Host.
    status, body, headers = through_the_edge(kube_app, "/header?key=X-Forwarded-Host")
    assert (status, body) == (200, kube_app.host)
    assert headers["strict-transport-security"].startswith("max-age=")


def test_another_host_gets_404(kube_app: KubeApp) -> None:
    status, body, _ = through_the_edge(kube_app, "/hostname",
                                       host=f"nothing-here.{kube_app.host.split('.', 1)[1]}")
    assert status == 404, body


def test_the_pod_sees_the_clients_address(kube_cluster: Cluster, kube_app: KubeApp) -> None:
    c = kube_cluster
    me = my_address(c)
    masters = {str(m.address) for m in c.masters}
    # The edge replaces whatever X-Forwarded-For the client sent; Traefik trusts the master it
    # came from and appends that master's address.
    _, xff, _ = through_the_edge(kube_app, "/header?key=X-Forwarded-For",
                                 "-H", f"X-Forwarded-For: {SPOOF}")
    client, _, proxy = xff.partition(", ")
    assert client == me and proxy in masters, xff
    assert through_the_edge(kube_app, "/header?key=X-Real-Ip")[1] == me
    assert through_the_edge(kube_app, "/header?key=X-Forwarded-Proto")[1] == "https"


def test_forwarded_headers_straight_to_a_nodeport_are_not_trusted(kube_cluster: Cluster,
                                                                  kube_app: KubeApp) -> None:
    c = kube_cluster
    me = my_address(c)
    spoofed = ("-H", f"X-Forwarded-For: {SPOOF}", "-H", "X-Forwarded-Proto: https",
               "-H", f"X-Real-Ip: {SPOOF}")
    for w in c.workers:
        got = {key: straight_to(c, w.name, kube_app.host, f"/header?key={key}", *spoofed)[1]
               for key in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Real-Ip")}
        # No SNAT on the way in (externalTrafficPolicy Local): Traefik sees this machine.
        assert got == {"X-Forwarded-For": me, "X-Forwarded-Proto": "http", "X-Real-Ip": me}, w.name


ANNOTATED = """apiVersion: v1
kind: Secret
metadata:
  name: {name}-users
  namespace: {ns}
type: Opaque
stringData:
  auth: "{user}:{{SHA}}{sha}"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}-guarded
  namespace: {ns}
  annotations:
    nginx.ingress.kubernetes.io/force-ssl-redirect: "true"
    nginx.ingress.kubernetes.io/auth-type: basic
    nginx.ingress.kubernetes.io/auth-secret: {name}-users
    nginx.ingress.kubernetes.io/auth-realm: metalseed lab
spec:
  ingressClassName: nginx
  rules:
    - host: {host}
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: {name}
                port: {{name: http}}
"""


def test_nginx_annotations_behave_as_under_ingress_nginx(kube_cluster: Cluster,
                                                        kube_app: KubeApp) -> None:
    c = kube_cluster
    host = f"guarded.{kube_app.host.split('.', 1)[1]}"
    user, password = "operator", "lab-only-password"
    # htpasswd's {SHA} scheme, which nginx's auth_basic_user_file and Traefik both read.
    sha = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    kubectl(c, "apply", "--server-side", "--field-manager=metalseed-tests", "-f", "-",
            timeout=120, input=ANNOTATED.format(name=kube_app.name, ns=kube_app.namespace,
                                                host=host, user=user, sha=sha))
    creds = ("-u", f"{user}:{password}")

    def served() -> str | None:
        # Each worker's Traefik picks the new Ingress up on its own: ask until several requests
        # in a row (the edge spreads them over both workers) are answered.
        for _ in range(6):
            status, body, _ = through_the_edge(kube_app, "/hostname", *creds, host=host)
            if status != 200:
                return f"{status} {body[:80]}"
        return None

    try:
        wait_until(f"https://{host}/ answers through the edge", served, timeout=60)
        # Through the edge: X-Forwarded-Proto is https (from a master, trusted), so no redirect;
        # the credentials are checked.
        status, _, headers = through_the_edge(kube_app, "/hostname", host=host)
        assert status == 401 and headers["www-authenticate"] == 'Basic realm="metalseed lab"'
        assert through_the_edge(kube_app, "/hostname", "-u", f"{user}:wrong", host=host)[0] == 401
        assert through_the_edge(kube_app, "/hostname", *creds, host=host)[1] in kube_app.pods(c)
        # Plain HTTP straight to a worker: redirected to https, as ingress-nginx answers with
        # force-ssl-redirect (308); claiming X-Forwarded-Proto https from here changes nothing.
        for extra in ((), ("-H", "X-Forwarded-Proto: https")):
            status, _, headers = straight_to(c, c.workers[0].name, host, "/a?b=1", *extra)
            assert (status, headers["location"]) == (308, f"https://{host}/a?b=1"), extra
    finally:
        kubectl(c, "-n", kube_app.namespace, "delete", "ingress", f"{kube_app.name}-guarded",
                "--ignore-not-found", check=False)
        kubectl(c, "-n", kube_app.namespace, "delete", "secret", f"{kube_app.name}-users",
                "--ignore-not-found", check=False)
