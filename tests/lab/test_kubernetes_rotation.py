"""Kubernetes certificates rotated without downtime, on the shared Kubernetes lab (issue 11).

Under a continuous client of the API through the VIP (the official kubernetes client with the
store's admin kubeconfig, built again whenever the file changes, as an operator's tools read it)
and continuous HTTPS through the edge to an app behind the ingress controller (``kube_app``):

1. the API server's etcd client certificate re-issued and shipped (the one leaf phase 2 does not
   re-issue);
2. the Kubernetes CA and the front-proxy CA rotated together through the three phases
   (``trust``, ``reissue``, ``finish``), with what must hold after each phase checked on the
   nodes and in the API: the kubelets' client CA, the kube-root-ca.crt ConfigMap pods trust the
   API server with, the published front-proxy CA, each API server's serving certificate, nodes
   Ready, ``kubectl exec`` and ``kubectl logs`` (API server -> kubelet, both ways checked);
3. every Kubernetes leaf and kubeconfig certificate renewed by then; the old credentials refused
   once the old CA is retired; a second run changes nothing; ``certs check`` clean,
   kubeconfig-embedded certificates included.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from metalseed.lab import Lab
from metalseed.model import Cluster
from metalseed.pki.issue import store_for
from metalseed.probe import pyinfra_totals
from tests.lab.kube import (
    BackgroundClient,
    KubeApp,
    ReloadingApiClient,
    RunPyinfra,
    agnhost_image,
    kubectl,
    nodes_not_ready,
    wait_until,
)

pytestmark = [pytest.mark.lab, pytest.mark.kube]

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "metalseed-rotation"
POD = "rot-probe"
CAS = "ca,front-proxy-ca"
KUBELET_CA = "/etc/kubernetes/kubelet/pki/ca.crt"


class EdgeClient(BackgroundClient):
    """HTTPS through the edge (nginx on the VIP -> NodePort -> Traefik -> a pod), a new verified
    connection per request as curl makes one, every 100 ms."""

    def __init__(self, app: Any) -> None:
        super().__init__()
        self.app = app
        self._ctx = ssl.create_default_context(cafile=str(app.ca))

    def _once(self) -> None:
        import socket

        with socket.create_connection((self.app.vip, self.app.port), timeout=10) as raw, \
                self._ctx.wrap_socket(raw, server_hostname=self.app.host) as tls:
            tls.sendall(f"GET /hostname HTTP/1.1\r\nHost: {self.app.host}\r\n"
                        "Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
        status = data.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            raise RuntimeError(status.decode(errors="replace"))


def rotate(run: RunPyinfra, data: list[str], **inputs: str) -> subprocess.CompletedProcess[str]:
    args = [*data, *(a for k, v in inputs.items() for a in ("--data", f"{k}={v}"))]
    return run(*args, "deploys/rotate-certs.py", timeout=900)


def pems(data: bytes | str) -> list[x509.Certificate]:
    raw = data.encode() if isinstance(data, str) else data
    return x509.load_pem_x509_certificates(raw)


def subjects(certs: list[x509.Certificate]) -> set[str]:
    return {c.subject.rfc4514_string() for c in certs}


def store_cert(c: Cluster, id: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((c.pki_dir / f"{id}.crt").read_bytes())


def configmap(c: Cluster, ns: str, name: str) -> dict[str, str]:
    out = kubectl(c, "-n", ns, "get", "configmap", name, "-o", "json").stdout
    return dict(json.loads(out).get("data") or {})


def serving_issuers(c: Cluster) -> set[str]:
    """Who issued the certificate each master's API server presents (read without verifying)."""
    return {x509.load_pem_x509_certificate(ssl.get_server_certificate(
        (str(m.address), c.apiserver_port), timeout=10).encode()).issuer.rfc4514_string()
        for m in c.masters}


def kubelet_cas(lab: Lab, c: Cluster) -> dict[str, set[str]]:
    return {n.name: subjects(pems(lab.ssh(n.name, f"cat {KUBELET_CA}", check=True).stdout))
            for n in c.nodes}


def exec_and_logs(c: Cluster) -> None:
    """API server -> kubelet: exec and logs go through each side's certificates."""
    out = kubectl(c, "-n", NAMESPACE, "exec", POD, "--", "/agnhost", "dns-suffix")
    assert out.returncode == 0
    logs = kubectl(c, "-n", NAMESPACE, "logs", POD, "--tail=5")
    assert logs.returncode == 0


@pytest.fixture(scope="module")
def probe_pod(kube_cluster: Cluster) -> Iterator[str]:
    c = kube_cluster
    kubectl(c, "create", "namespace", NAMESPACE, check=False)
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD, "namespace": NAMESPACE},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": c.workers[0].name},
                 "containers": [{
                     "name": "agnhost", "image": agnhost_image(c),
                     "args": ["netexec", "--http-port=8080"],
                     "securityContext": {"allowPrivilegeEscalation": False,
                                         "capabilities": {"drop": ["ALL"]},
                                         "runAsNonRoot": True, "runAsUser": 65534,
                                         "seccompProfile": {"type": "RuntimeDefault"}}}]},
    }
    kubectl(c, "apply", "-f", "-", input=json.dumps(pod))

    def ready() -> str | None:
        got = json.loads(kubectl(c, "-n", NAMESPACE, "get", "pod", POD, "-o", "json",
                                 check=False).stdout or "{}")
        conds = (got.get("status") or {}).get("conditions") or []
        return None if any(x["type"] == "Ready" and x["status"] == "True" for x in conds) \
            else str(conds)[-200:]

    wait_until(f"pod {POD} Ready", ready, timeout=180)
    yield POD
    kubectl(c, "delete", "namespace", NAMESPACE, "--wait=false", check=False)


def edge_events(lab: Lab, c: Cluster, since: str) -> str:
    """What the masters' keepalived and nginx did since ``since`` (VIP moves, reloads, errors),
    for a failure message to be matched against the failed requests' times."""
    out = []
    for m in c.masters:
        proc = lab.ssh(m.name, f"journalctl -u keepalived -u nginx --since '{since}' -o short-precise"
                       " --no-pager | grep -iE 'state|reload|stop|start' | tail -n 40; "
                       "grep -hv ' \\[notice\\] ' /var/log/nginx/error.log | tail -n 20",
                       timeout=60)
        out.append(f"--- {m.name}\n{proc.stdout.strip()}")
    return "\n".join(out)


def check_steady(lab: Lab, c: Cluster, stage: str) -> None:
    wait_until(f"every node Ready after {stage}", lambda: nodes_not_ready(c), timeout=120)
    exec_and_logs(c)


def test_leaves_then_both_kubernetes_cas_rotate_under_a_client_through_the_vip(
        kube_lab: Lab, kube_cluster: Cluster, kube_run_pyinfra: RunPyinfra,
        kube_data: list[str], probe_pod: str, kube_app: KubeApp) -> None:
    lab, c, run = kube_lab, kube_cluster, kube_run_pyinfra
    store = store_for(c)
    old_admin = (c.pki_dir / "kubeconfig" / "admin.conf").read_bytes()
    old_ca, old_fp = store_cert(c, "ca"), store_cert(c, "front-proxy-ca")
    old_serials = {i: store_cert(c, i).serial_number for i in (
        "apiserver", "apiserver-kubelet-client", "apiserver-etcd-client", "front-proxy-client",
        f"kubelet/{c.nodes[0].name}", f"kubelet-serving/{c.nodes[0].name}",
        "kubeconfig/controller-manager", "kubeconfig/scheduler", "kubeconfig/admin",
        "kubeconfig/kube-proxy", "kubeconfig/flannel")}
    took: dict[str, float] = {}
    ended: dict[str, str] = {}  # wall clock at each phase's end, beside the failures' times
    began = time.strftime("%Y-%m-%d %H:%M:%S")
    with ReloadingApiClient(c.pki_dir / "kubeconfig" / "admin.conf") as client, EdgeClient(kube_app) as edge:
        client.wait_ok(5, timeout=120)
        wait_until("HTTPS answered through the edge", lambda: None if edge.ok >= 5
                   else f"{edge.ok} ok, failures: {edge.failed[-2:]}", 120)

        # The one Kubernetes leaf the CA phases below do not re-issue (the etcd CA signs it);
        # `rotate=all` of the etcd members' and the edge's leaves under load is
        # tests/lab/test_rotation.py's.
        start = time.monotonic()
        rotate(run, kube_data, rotate="apiserver-etcd-client")
        took["leaves"] = time.monotonic() - start
        ended["leaves"] = time.strftime("%H:%M:%S")
        assert store_cert(c, "apiserver-etcd-client").serial_number != old_serials[
            "apiserver-etcd-client"]
        check_steady(lab, c, "the leaf rotation")

        start = time.monotonic()
        rotate(run, kube_data, rotate="none", rotate_ca=CAS, rotate_phase="trust")
        took["trust"] = time.monotonic() - start
        ended["trust"] = time.strftime("%H:%M:%S")
        new_ca, new_fp = store_cert(c, "ca.next"), store_cert(c, "front-proxy-ca.next")
        both = {old_ca.subject.rfc4514_string(), new_ca.subject.rfc4514_string()}
        both_fp = {old_fp.subject.rfc4514_string(), new_fp.subject.rfc4514_string()}
        assert all(v == both for v in kubelet_cas(lab, c).values()), kubelet_cas(lab, c)
        # Pods trust the API server with kube-root-ca.crt: both CAs before any new certificate.
        assert subjects(pems(configmap(c, NAMESPACE, "kube-root-ca.crt")["ca.crt"])) == both
        auth = configmap(c, "kube-system", "extension-apiserver-authentication")
        assert subjects(pems(auth["requestheader-client-ca-file"])) == both_fp
        assert serving_issuers(c) == {old_ca.subject.rfc4514_string()}
        check_steady(lab, c, "phase trust")

        start = time.monotonic()
        rotate(run, kube_data, rotate="none", rotate_ca=CAS, rotate_phase="reissue")
        took["reissue"] = time.monotonic() - start
        ended["reissue"] = time.strftime("%H:%M:%S")
        assert serving_issuers(c) == {new_ca.subject.rfc4514_string()}
        assert store_cert(c, "front-proxy-client").issuer == new_fp.subject
        check_steady(lab, c, "phase reissue")

        start = time.monotonic()
        rotate(run, kube_data, rotate="none", rotate_ca=CAS, rotate_phase="finish")
        took["finish"] = time.monotonic() - start
        ended["finish"] = time.strftime("%H:%M:%S")
        only = {new_ca.subject.rfc4514_string()}
        assert all(v == only for v in kubelet_cas(lab, c).values())
        assert subjects(pems(configmap(c, NAMESPACE, "kube-root-ca.crt")["ca.crt"])) == only
        auth = configmap(c, "kube-system", "extension-apiserver-authentication")
        assert subjects(pems(auth["requestheader-client-ca-file"])) == {
            new_fp.subject.rfc4514_string()}
        assert subjects(pems(auth["client-ca-file"])) == only
        check_steady(lab, c, "phase finish")
        client.wait_ok(5, timeout=120)
    renewed = {i for i, serial in old_serials.items() if store_cert(c, i).serial_number != serial}
    assert renewed == set(old_serials)
    print(f"\nKubernetes rotation (s): { {k: round(v, 1) for k, v in took.items()} }; "
          f"{client.ok} API requests through the VIP, {len(client.failed)} failed, admin.conf "
          f"read {client.reloads} times; {client.failed[:3]}")
    print(f"HTTPS through the edge: {edge.ok} answered, {len(edge.failed)} failed; "
          f"{edge.failed[:3]}")
    events = edge_events(lab, c, began)
    if client.failed or edge.failed:
        print(events)
    # The holder kept the VIP throughout: a backup that took it, even for 50 ms, resets every
    # connection through it (what the failures above were, before keepalived ran real-time).
    assert "Entering MASTER STATE" not in events, events
    assert client.ok > 0 and not client.failed, (client.failed[:10], ended)
    assert edge.ok > 0 and not edge.failed, (edge.failed[:10], ended)
    assert client.reloads >= 3  # trust, reissue and finish each changed the admin kubeconfig
    assert not list(store.root.glob("*.next.crt")) and not list(store.root.glob("*.prev.crt"))

    # The old admin credentials are refused both ways: the server is not trusted with the old CA,
    # and the old client certificate is not trusted by the servers.
    from kubernetes import client as k8s
    from kubernetes.config import new_client_from_config

    doc = yaml.safe_load(old_admin)
    new_doc = yaml.safe_load((c.pki_dir / "kubeconfig" / "admin.conf").read_bytes())
    old_cert_new_ca = dict(doc, clusters=new_doc["clusters"])
    for conf, expect in ((doc, "CERTIFICATE_VERIFY_FAILED"), (old_cert_new_ca, "401")):
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            yaml.safe_dump(conf, f)
            f.flush()
            api = k8s.CoreV1Api(new_client_from_config(config_file=f.name))
            with pytest.raises(Exception) as refused:
                api.list_namespace(_request_timeout=5)
            assert expect in str(refused.value), str(refused.value)[:300]


def test_a_second_run_changes_nothing_and_certs_check_is_clean(
        kube_lab: Lab, kube_cluster: Cluster, kube_run_pyinfra: RunPyinfra,
        kube_data: list[str]) -> None:
    c = kube_cluster
    proc = rotate(kube_run_pyinfra, kube_data, rotate_ca=CAS, rotate_phase="finish")
    totals = pyinfra_totals(proc.stdout + proc.stderr)
    assert totals and totals["success"] == 0 and totals["error"] == 0, proc.stdout[-3000:]
    env = dict(os.environ, METALSEED_LAB=kube_lab.name, NO_COLOR="1")
    check = subprocess.run([sys.executable, "-m", "metalseed.cli", "certs", "check",
                            "inventory/lab.py", *kube_data], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]
    assert "differ from the store" not in check.stdout and "not in store" not in check.stdout
    rows = check.stdout.split("Installed on the hosts", 1)[1].splitlines()
    for n in c.nodes:
        kubeconfig = [r for r in rows if r.split()[:2] == [
            n.name, "/etc/kubernetes/kubelet/kubeconfig#client-certificate-data"]]
        assert kubeconfig and f"matches store (kubelet/{n.name})" in kubeconfig[0], kubeconfig
        ca = [r for r in rows if r.split()[:2] == [
            n.name, "/etc/kubernetes/kubelet/kubeconfig#certificate-authority-data"]]
        assert ca and "matches store (ca)" in ca[0], ca
    for m in c.masters:
        sched = [r for r in rows if r.split()[:2] == [
            m.name, "/etc/kubernetes/scheduler.conf#client-certificate-data"]]
        assert sched and "matches store (kubeconfig/scheduler)" in sched[0], sched
    # The nodes' own daily check (openssl on the host) reads the kubeconfigs too, workers included.
    w = c.workers[0].name
    on_host = kube_lab.ssh(w, "systemctl start metalseed-certcheck.service", timeout=120)
    journal = kube_lab.ssh(w, "journalctl -t metalseed-certcheck -n 200 --no-pager",
                           check=True).stdout
    assert on_host.returncode == 0, journal[-2000:]
    log = kube_lab.ssh(w, "journalctl -u metalseed-certcheck.service -n 200 --no-pager -o cat",
                       check=True).stdout
    assert "/etc/kubernetes/kubelet/kubeconfig#client-certificate-data" in log, log[-2000:]
