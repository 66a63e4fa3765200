"""The shared Kubernetes lab of the test session, and plain helpers for tests that use it.

One lab named ``<TEST_LAB>k`` (3 masters, 2 workers) is booted on first use, taken from bare
machines to Kubernetes with ``deploys/cluster.py --data kubernetes=True`` (the README's main
command), and shared by every test module marked ``kube``; those run after all other lab tests
(``tests/lab/conftest.py`` sorts them last), modules in file-name order. It is a lab of its own,
not the session's ``lab``: Kubernetes leaves kubelets, flannel routes and its certificates on the
machines, which the etcd and edge tests must not find there.

A test that injects a fault restores the cluster (every node Ready, every component up) before it
returns, since later modules share it.

Needs the mirror with Kubernetes, flannel, CoreDNS and agnhost built (`metalseed mirror build`);
without them the Kubernetes tests are skipped, saying what is missing.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

from metalseed.lab import Lab
from metalseed.lab.inventory import pyinfra_inventory
from metalseed.lab.state import load as load_state
from metalseed.mirror import load_pins
from metalseed.model import Cluster, cluster_from_inventory
from tests.lab.app import APP
from tests.lab.labs import REPO, TEST_LAB, booted_lab, pyinfra_runner

RunPyinfra = Callable[..., subprocess.CompletedProcess[str]]
NEEDED = ("kubernetes", "kubernetes-previous", "flannel", "flannel-cni-plugin", "coredns",
          "agnhost", "etcd")
KUBE_DATA = ("--data", "kubernetes=True")
TIMINGS: dict[str, float] = {}
CURRENT = load_pins().get("kubernetes").version
PREVIOUS = load_pins().get("kubernetes-previous").version
UPGRADE: dict[str, Any] = {}
"""What the upgrade in :func:`kube_cluster` saw (tests/lab/test_kubernetes_upgrade.py checks it)."""
UPGRADE_NAMESPACE = "metalseed-upgrade"
UPGRADE_WORKLOAD = """apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: agnhost
          image: {image}
          args: ["netexec", "--http-port=8080"]
          readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web, namespace: {ns}}}
spec:
  minAvailable: 1
  selector: {{matchLabels: {{app: web}}}}
"""


def mirror_components(root: Path) -> set[str]:
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return set()
    return {a.get("component") or a["name"] for a in manifest.get("artifacts", [])}


def kubectl(c: Cluster, *args: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    """The mirror's kubectl with the store's admin kubeconfig (through the VIP)."""
    return kubectl_as(c, c.pki_dir / "kubeconfig" / "admin.conf", *args, check=check,
                      timeout=timeout, input=input)


def kubectl_as(c: Cluster, conf: Path, *args: str, check: bool = True, timeout: float = 60,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
    """The mirror's kubectl with the kubeconfig ``conf`` (a tenant's admin.conf, say)."""
    argv = [str(c.mirror_dir / "bin" / "kubectl"), "--kubeconfig", str(conf),
            "--request-timeout=20s", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          input=input)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    return proc


def wait_until(what: str, check: Callable[[], str | None], timeout: float = 180) -> None:
    """Poll ``check`` (None: done; else what it saw) every second; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    seen: str | None = "nothing yet"
    while time.monotonic() < deadline:
        seen = check()
        if seen is None:
            return
        time.sleep(1)
    pytest.fail(f"{what} did not happen within {timeout:.0f}s (last: {seen})")


def image(c: Cluster, component: str) -> str:
    """The mirror's image reference for ``component`` (as the nodes pull it)."""
    manifest = json.loads((c.mirror_dir / "manifest.json").read_text())
    return next(a["image"] for a in manifest["artifacts"]
                if (a.get("component") or a["name"]) == component and a.get("image"))


def agnhost_image(c: Cluster) -> str:
    return image(c, "agnhost")


def nodes_not_ready(c: Cluster) -> str | None:
    """None when every node of ``c`` is Ready, else which are not (for :func:`wait_until`)."""
    proc = kubectl(c, "get", "nodes", "-o", "json", check=False)
    if proc.returncode != 0:
        return proc.stderr.strip()[-300:]
    items = json.loads(proc.stdout)["items"]
    ready = {n["metadata"]["name"] for n in items
             if any(x["type"] == "Ready" and x["status"] == "True"
                    for x in n["status"].get("conditions", []))}
    missing = {n.name for n in c.nodes} - ready
    return f"not Ready: {sorted(missing)}" if missing else None


@pytest.fixture(scope="session")
def kube_lab() -> Iterator[Lab]:
    with booted_lab(f"{TEST_LAB}k", fixture="kube_lab") as the_lab:
        yield the_lab


@pytest.fixture(scope="session")
def kube_run_pyinfra(kube_lab: Lab) -> RunPyinfra:
    return pyinfra_runner(kube_lab)


@pytest.fixture(scope="session")
def kube_data(kube_lab: Lab) -> list[str]:
    state = load_state(kube_lab.paths)
    assert state is not None
    mirror = Path(state.mirror_root) if state.mirror_root else None
    missing = sorted(set(NEEDED) - (mirror_components(mirror) if mirror else set()))
    if missing:
        pytest.skip(f"the mirror lacks {', '.join(missing)} (run `metalseed mirror build`)")
    # etcd_source is the mirror's 3.6 by default (Kubernetes refuses Debian's 3.4).
    return list(KUBE_DATA)


@pytest.fixture(scope="session")
def kube_cluster(kube_lab: Lab, kube_run_pyinfra: RunPyinfra, kube_data: list[str]) -> Cluster:
    """The cluster, deployed from bare machines by deploys/cluster.py (etcd, edge, Kubernetes)."""
    state = load_state(kube_lab.paths)
    assert state is not None
    overrides: dict[str, Any] = {}
    for i in range(1, len(kube_data), 2):
        k, _, v = kube_data[i].partition("=")
        overrides[k] = True if v == "True" else v
    cluster = cluster_from_inventory(pyinfra_inventory(state, **overrides))
    start = time.monotonic()
    kube_run_pyinfra("deploys/cluster.py", *kube_data, "--data", f"kubernetes_version={PREVIOUS}",
                     timeout=1800)
    TIMINGS[f"bare machines -> Kubernetes {PREVIOUS} (deploys/cluster.py)"] = (
        time.monotonic() - start)
    upgrade_under_load(cluster, kube_run_pyinfra, kube_data)
    print(f"\n{TIMINGS}")
    return cluster


def kubelet_versions(c: Cluster) -> dict[str, str]:
    items = json.loads(kubectl(c, "get", "nodes", "-o", "json").stdout)["items"]
    return {n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"] for n in items}


def upgrade_under_load(c: Cluster, run: RunPyinfra, kube_data: list[str]) -> None:
    """deploys/kubernetes-upgrade.py from PREVIOUS to CURRENT while a client reads the API
    through the VIP and a workload of 2 replicas with a PodDisruptionBudget runs; what it saw
    goes to UPGRADE. The shared cluster is deployed at the previous release for this: every
    Kubernetes test after it runs on an upgraded cluster, and the upgrade costs no lab of its own.
    A failed upgrade run fails the fixture (no test can trust a half-upgraded cluster)."""
    import threading

    from kubernetes import client as k8s

    from metalseed.kube.client import api_client
    from metalseed.probe import pyinfra_totals

    UPGRADE["before"] = kubelet_versions(c)
    kubectl(c, "apply", "-f", "-", input=UPGRADE_WORKLOAD.format(ns=UPGRADE_NAMESPACE,
                                                                 image=agnhost_image(c)))
    kubectl(c, "-n", UPGRADE_NAMESPACE, "rollout", "status", "deployment/web",
            "--timeout=180s", timeout=200)
    api = api_client(c)
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    seen: dict[str, Any] = {"ok": 0, "failed": 0, "errors": [], "min_available": 2}
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                core.list_namespace(_request_timeout=5)
                d = apps.read_namespaced_deployment("web", UPGRADE_NAMESPACE, _request_timeout=5)
                seen["ok"] += 1
                seen["min_available"] = min(seen["min_available"],
                                            d.status.available_replicas or 0)
            except Exception as e:
                seen["failed"] += 1
                seen["errors"].append(f"{type(e).__name__}: {str(e)[:160]}")
            time.sleep(0.05)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        proc = run("deploys/kubernetes-upgrade.py", *kube_data, "--data",
                   f"kubernetes_version={CURRENT}", timeout=1500)
        TIMINGS[f"upgrade {PREVIOUS} -> {CURRENT} (deploys/kubernetes-upgrade.py)"] = (
            time.monotonic() - start)
    finally:
        stop.set()
        thread.join(10)
    UPGRADE.update(seen=seen, totals=pyinfra_totals(proc.stdout + proc.stderr))
    print(f"\nupgrade {PREVIOUS} -> {CURRENT}: client through the VIP ok {seen['ok']}, failed "
          f"{seen['failed']} {seen['errors'][:3]}; fewest available web replicas "
          f"{seen['min_available']}")


# ---------------------------------------------------------------------------------------------
# An application behind the edge: agnhost netexec behind a Service and an Ingress of class nginx


APP_NAMESPACE = "metalseed-app"
APP_NAME = "netexec"
APP_REPLICAS = 2



@dataclass(frozen=True)
class KubeApp:
    """What a client needs to reach the app through the edge (nginx on the VIP -> a worker's
    NodePort -> Traefik -> a pod): ``curl --cacert {ca} --resolve {host}:{port}:{vip} {url}``.

    The pods run agnhost ``netexec``: ``/hostname`` answers with the pod's name,
    ``/header?key=X-Forwarded-For`` with that request header as the pod received it."""

    host: str
    vip: str
    port: int
    ca: Path
    namespace: str
    name: str

    @property
    def url(self) -> str:
        return f"https://{self.host}{'' if self.port == 443 else f':{self.port}'}/"

    @property
    def resolve(self) -> str:
        return f"{self.host}:{self.port}:{self.vip}"

    def curl(self, path: str = "/", *extra: str, timeout: float = 5) -> list[str]:
        """argv of a curl of ``path`` on the app through the edge, TLS verified by name."""
        return ["curl", "-sS", "--max-time", f"{timeout:g}", "--cacert", str(self.ca),
                "--resolve", self.resolve, *extra, self.url.rstrip("/") + path]

    def pods(self, c: Cluster) -> list[str]:
        out = kubectl(c, "-n", self.namespace, "get", "pods", "-l", f"app={self.name}", "-o",
                      "jsonpath={.items[*].metadata.name}").stdout
        return out.split()


def app_host(c: Cluster) -> str:
    """A name under the lab's ``*.<lab>.test``, which the edge's certificate covers."""
    return f"app.{c.name}.test"


@pytest.fixture(scope="session")
def kube_app(kube_cluster: Cluster) -> KubeApp:
    """agnhost netexec (2 replicas, one per worker) behind a Service and an Ingress of class
    ``nginx``, deployed once per session and answering through the edge before it is returned."""
    from metalseed.pki.issue import store_for

    c = kube_cluster
    ca = store_for(c).cert_path("edge/ca")
    app = KubeApp(host=app_host(c), vip=str(c.vip), port=c.edge.https_port,
                  ca=ca if ca.is_absolute() else REPO / ca, namespace=APP_NAMESPACE, name=APP_NAME)
    kubectl(c, "apply", "--server-side", "--field-manager=metalseed-tests", "-f", "-",
            timeout=120, input=APP.format(ns=app.namespace, name=app.name, replicas=APP_REPLICAS,
                                          image=agnhost_image(c), host=app.host))
    kubectl(c, "-n", app.namespace, "rollout", "status", f"deployment/{app.name}",
            "--timeout=300s", timeout=330)

    def through_the_edge() -> str | None:
        proc = subprocess.run(app.curl("/hostname", "-w", "\n%{http_code}"), capture_output=True,
                              text=True, timeout=30, check=False)
        body, _, code = proc.stdout.rpartition("\n")
        return None if code == "200" and body in app.pods(c) else f"{code} {body[:100]} {proc.stderr}"

    wait_until(f"{app.url} answers through the edge from a pod", through_the_edge, timeout=120)
    return app


class BackgroundClient:
    """A client that repeats ``_once`` every ``interval`` seconds in a thread while its ``with``
    block runs, counting answers and keeping every failure with its time."""

    interval = 0.1

    def __init__(self) -> None:
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _once(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._once()
                self.ok += 1
            except Exception as e:
                self.failed.append(f"{time.strftime('%H:%M:%S')} {type(e).__name__}: "
                                   f"{str(e)[:160]}")
            time.sleep(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def wait_ok(self, n: int, timeout: float = 30) -> None:
        target = self.ok + n
        wait_until(f"{n} more answers", lambda: None if self.ok >= target
                   else f"{self.ok}/{target}, failures: {self.failed[-2:]}", timeout)


class ReloadingApiClient(BackgroundClient):
    """Lists namespaces every 50 ms with a kubeconfig from the store (a cluster's or a tenant's
    admin.conf), built again whenever the file's bytes change (the store writes it atomically),
    as an operator's tools read it."""

    interval = 0.05

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.reloads = 0
        self._text = b""
        self._api: Any = None

    def _once(self) -> None:
        from kubernetes import client as k8s
        from kubernetes.config import new_client_from_config

        now = self.path.read_bytes()
        if now != self._text:
            with tempfile.NamedTemporaryFile(suffix=".conf") as f:
                f.write(now)
                f.flush()
                self._text, self._api = now, k8s.CoreV1Api(new_client_from_config(
                    config_file=f.name))
            self.reloads += 1
        self._api.list_namespace(_request_timeout=5)
