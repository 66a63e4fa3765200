"""A seed with two tenants, acme and globex, on real machines: a lab of its own (1 master, 2
workers, 1 datastore machine: the tenants' control planes need the datastore's etcd on the seed's
network, and a medium acme beside a small globex needs two workers' CPU, see
test_promoting_and_demoting_a_tenant_fails_no_request_of_its_client; 1 tenant worker, t1,
acme's), taken from bare machines by deploys/cluster.py and then deploys/seed.py as an operator
runs them. Each tenant's API answers through the edge (the VIP, by SNI) with its own admin.conf
and the mirror's kubectl; acme's credentials are refused by globex's API; a name the edge does
not route still reaches the seed's own API; what one tenant writes the other does not see; acme's
worker is Ready in acme's API (and no node of the seed's or globex's), runs a pod whose logs and
exec work through acme's admin.conf; a rerun changes nothing; acme promoted to medium and demoted
back under a continuous client of its API fails none of its requests; an invalid tenant spec is
refused before anything is applied; a tenant removed from the data loses its namespace and its
route, its PKI archived, the other unaffected.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from metalseed.lab import Lab
from metalseed.lab.inventory import pyinfra_inventory
from metalseed.model import Cluster, cluster_from_inventory
from metalseed.probe import pyinfra_totals
from tests.lab.kube import (
    NEEDED,
    TIMINGS,
    ReloadingApiClient,
    RunPyinfra,
    agnhost_image,
    mirror_components,
)
from tests.lab.kube import kubectl_as as kubectl
from tests.lab.labs import REPO, TEST_LAB, booted_lab, pyinfra_runner

pytestmark = [pytest.mark.lab, pytest.mark.kube]

POLICY_KIND = {True: "CiliumNetworkPolicy", False: "NetworkPolicy"}  # by enforce.cilium(seed)
SEED_LAB = os.environ.get("METALSEED_TEST_SEED_LAB") or f"{TEST_LAB}s"
TENANTS = {"acme": {"labels": {"team": "payments"}, "workers": ["t1"]}, "globex": {}}
DATA = ("--data", "kubernetes=True", "--data", f"tenants={json.dumps(TENANTS)}")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    # The archive of removed tenants' PKI lives beside the lab's store: as new as the lab, too.
    archive = REPO / "pki" / f"{SEED_LAB}.archive"
    shutil.rmtree(archive, ignore_errors=True)
    # Two workers: each lab machine has the host's 2 CPUs allocatable; acme medium (2 x 800m
    # requested) beside globex small (400m), the seed's own pods and a surge pod during the roll
    # do not fit one.
    with booted_lab(SEED_LAB, masters=1, workers=2, datastore=1,
                    tenant_workers=1) as the_lab:
        state = the_lab.require_state()
        mirror = Path(state.mirror_root) if state.mirror_root else None
        # The seed's network policy engine is the Cilium agent.
        missing = sorted({*NEEDED, "cilium"} - (mirror_components(mirror) if mirror else set()))
        if missing:
            pytest.skip(f"the mirror lacks {', '.join(missing)} (run `metalseed mirror build`)")
        try:
            yield the_lab
        finally:
            shutil.rmtree(archive, ignore_errors=True)


@pytest.fixture(scope="module")
def run(lab: Lab) -> RunPyinfra:
    return pyinfra_runner(lab)


@pytest.fixture(scope="module")
def seed(lab: Lab, run: RunPyinfra) -> Cluster:
    """The seed from bare machines (cluster.py), then its tenants (seed.py), as the README says."""
    cluster = cluster_from_inventory(pyinfra_inventory(lab.require_state(), kubernetes=True,
                                                       tenants=TENANTS))
    start = time.monotonic()
    run("deploys/cluster.py", *DATA, timeout=900)
    TIMINGS["seed: bare machines -> Kubernetes and datastore (cluster.py)"] = time.monotonic() - start
    start = time.monotonic()
    run("deploys/seed.py", *DATA, timeout=600)
    TIMINGS["seed: seed.py -> both tenant APIs answer through the edge, acme's worker Ready"] = (
        time.monotonic() - start)
    print(f"\n{TIMINGS}")
    return cluster


def admin_conf(c: Cluster, tenant: str) -> Path:
    return c.pki_dir / "tenants" / tenant / "admin.conf"


def test_each_tenant_api_answers_through_the_edge_with_its_own_admin_conf(seed: Cluster) -> None:
    c = seed
    for t in TENANTS:
        conf = yaml.safe_load(admin_conf(c, t).read_text())["clusters"][0]["cluster"]
        # The seed's VIP, no DNS: the endpoint name travels as SNI and is what TLS checks.
        assert conf["server"] == f"https://{c.vip}:{c.apiserver_port}"
        assert conf["tls-server-name"] == c.tenant_endpoint(t)
        assert kubectl(c, admin_conf(c, t), "get", "--raw", "/readyz").stdout.strip() == "ok"
        version = json.loads(kubectl(c, admin_conf(c, t), "version", "-o", "json").stdout)
        assert version["serverVersion"]["gitVersion"] == c.tenant(t).kubernetes_version
        # A cluster of its own: its default namespace, none of the seed's.
        names = kubectl(c, admin_conf(c, t), "get", "namespaces", "-o", "name").stdout.split()
        assert "namespace/default" in names and not any("tenant-" in n for n in names), names
    # The seed's own API through the same VIP and port: no SNI, the seed's answer.
    seed_conf = c.pki_dir / "kubeconfig" / "admin.conf"
    nodes = kubectl(c, seed_conf, "get", "nodes", "-o", "name").stdout.split()
    assert sorted(nodes) == sorted(f"node/{n.name}" for n in c.nodes)
    # The control plane's pods (the namespace also holds the isolation probe's).
    pods = json.loads(kubectl(c, seed_conf, "-n", "tenant-acme", "get", "pods", "-l",
                              "metalseed.io/tenant=acme,app.kubernetes.io/component=control-plane",
                              "-o", "json").stdout)["items"]
    assert pods and all(p["metadata"]["labels"]["team"] == "payments" for p in pods)


POD = """apiVersion: v1
kind: Pod
metadata: {{name: hello, namespace: default}}
spec:
  containers:
    - name: agnhost
      image: {image}
      args: ["netexec", "--http-port=8080"]
      readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}
"""


def test_acmes_worker_joins_acme_and_runs_a_pod_whose_logs_and_exec_work(seed: Cluster) -> None:
    c = seed
    acme = admin_conf(c, "acme")
    nodes = json.loads(kubectl(c, acme, "get", "nodes", "-o", "json").stdout)["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["t1"]
    [t1] = nodes
    ready = {x["type"]: x["status"] for x in t1["status"]["conditions"]}
    assert ready["Ready"] == "True", t1["status"]["conditions"]
    # The address the tenant's API server dials for logs and exec; its pod CIDR from acme's
    # controller-manager.
    assert {"type": "InternalIP", "address": str(c.workers_of("acme")[0].address)} in (
        t1["status"]["addresses"])
    assert t1["spec"].get("podCIDR"), t1["spec"]
    # globex's cluster has no node at all; the seed's has only its own.
    assert kubectl(c, admin_conf(c, "globex"), "get", "nodes", "-o", "name").stdout.split() == []
    seed_nodes = kubectl(c, c.pki_dir / "kubeconfig" / "admin.conf", "get", "nodes", "-o",
                         "name").stdout.split()
    assert "node/t1" not in seed_nodes, seed_nodes

    start = time.monotonic()
    kubectl(c, acme, "apply", "-f", "-", input=POD.format(image=agnhost_image(c)))
    kubectl(c, acme, "wait", "--for=condition=Ready", "pod/hello", "--timeout=120s", timeout=150)
    TIMINGS["seed: a pod on acme's worker Ready"] = time.monotonic() - start
    pod = json.loads(kubectl(c, acme, "get", "pod", "hello", "-o", "json").stdout)
    assert pod["spec"]["nodeName"] == "t1"
    # Logs and exec: acme's API server (a pod on the seed) dials t1's kubelet.
    logs = kubectl(c, acme, "logs", "hello").stdout
    assert "Started HTTP server on port 8080" in logs, logs
    out = kubectl(c, acme, "exec", "hello", "--", "cat", "/etc/hostname").stdout.strip()
    assert out == "hello", out


IN_CLUSTER_POD = """apiVersion: v1
kind: Pod
metadata: {{name: in-cluster, namespace: default}}
spec:
  containers:
    - name: agnhost
      image: {image}
      args: ["inclusterclient", "--poll-interval=1"]
"""


def test_a_pod_on_acmes_worker_reaches_acmes_api_in_cluster(seed: Cluster) -> None:
    """client-go's in-cluster config, its service account token and acme's CA bundle: the
    kubernetes Service (VIP at the edge's API port), the edge routing t1's nameless hello to
    acme's API. The seed's API would fail the TLS check (another CA), a wrong path would hang:
    either way fewer calls than asked, or a failed one, in the logs."""
    c = seed
    acme = admin_conf(c, "acme")
    slice_ = json.loads(kubectl(c, acme, "-n", "default", "get", "endpointslice", "kubernetes",
                                "-o", "json").stdout)
    assert slice_["endpoints"][0]["addresses"] == [str(c.vip)], slice_
    kubectl(c, acme, "apply", "-f", "-", input=IN_CLUSTER_POD.format(image=agnhost_image(c)))
    kubectl(c, acme, "wait", "--for=condition=Ready", "pod/in-cluster", "--timeout=120s",
            timeout=150)
    logs, deadline = "", time.monotonic() + 60
    while logs.count("calling /healthz") < 5 and time.monotonic() < deadline:
        time.sleep(1)
        logs = kubectl(c, acme, "logs", "in-cluster").stdout
    print(f"\nin-cluster client on t1: {logs.count('calling /healthz')} calls in the logs")
    assert logs.count("calling /healthz") >= 5, logs[-3000:]
    assert "status=failed" not in logs and "authz_header=<empty>" not in logs, logs[-3000:]
    kubectl(c, acme, "delete", "pod", "in-cluster", "--wait=false")


def test_tenants_status_shows_each_tenants_nodes(seed: Cluster) -> None:
    metalseed = Path(sys.executable).with_name("metalseed")
    proc = subprocess.run([str(metalseed), "tenants", "status", "inventory/lab.py", "--json",
                           *DATA], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False, env=dict(os.environ, METALSEED_LAB=SEED_LAB))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tenants = {t["name"]: t for t in json.loads(proc.stdout)["tenants"]}
    assert tenants["acme"]["workers"] == ["t1"]
    assert tenants["acme"]["nodes"] == [{"name": "t1", "ready": True}]
    assert {"type": "NodesReady", "status": True, "reason": "1/1 nodes Ready",
            "failing": False} in tenants["acme"]["conditions"]
    assert tenants["globex"]["nodes"] == [] and tenants["globex"]["healthy"]


def test_what_one_tenant_writes_the_other_does_not_see(seed: Cluster) -> None:
    c = seed
    kubectl(c, admin_conf(c, "acme"), "create", "configmap", "only-acme", "--from-literal=a=1")
    assert kubectl(c, admin_conf(c, "acme"), "get", "configmap", "only-acme").returncode == 0
    other = kubectl(c, admin_conf(c, "globex"), "get", "configmap", "only-acme", check=False)
    assert other.returncode != 0 and "NotFound" in other.stderr, other.stderr


def _crossed(c: Cluster, tmp_path: Path, trust_from: str) -> Path:
    """acme's admin.conf aimed at globex's endpoint, trusting ``trust_from``'s CA."""
    conf = yaml.safe_load(admin_conf(c, "acme").read_text())
    cluster = conf["clusters"][0]["cluster"]
    cluster["tls-server-name"] = c.tenant_endpoint("globex")
    ca = (c.pki_dir / "tenants" / trust_from / "ca.crt").read_bytes()
    cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    path = tmp_path / f"acme-to-globex-{trust_from}.conf"
    path.write_text(yaml.safe_dump(conf))
    path.chmod(0o600)
    return path


def test_acmes_admin_conf_is_refused_by_globex(seed: Cluster, tmp_path: Path) -> None:
    c = seed
    # Trusting globex's CA, the TLS handshake with globex's API server succeeds; acme's client
    # certificate (from acme's CA) is not one globex's API accepts.
    refused = kubectl(c, _crossed(c, tmp_path, "globex"), "get", "namespaces", check=False)
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr, refused.stderr
    # As it is (acme's CA), acme's admin.conf does not even accept globex's API server.
    untrusted = kubectl(c, _crossed(c, tmp_path, "acme"), "get", "namespaces", check=False)
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr, untrusted.stderr


def _verify(lab: Lab, tenants: dict[str, Any], timing: str) -> list[list[str]]:
    """``metalseed tenants verify`` as an operator runs it (exit 0: nothing unexpected), and
    every pair of tenants refused: each tenant's probe tried every other's API pod and Service.
    Returns the table's rows."""
    argv = [str(Path(sys.executable).with_name("metalseed")), "tenants", "verify",
            str(REPO / "inventory" / "lab.py"), "--data", "kubernetes=True", "--data",
            f"tenants={json.dumps(tenants)}"]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=dict(os.environ, METALSEED_LAB=lab.name),
                          capture_output=True, text=True, timeout=300, check=False)
    TIMINGS[timing] = time.monotonic() - start
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 unexpected" in proc.stdout
    rows = [line.split() for line in proc.stdout.splitlines()
            if line.split()[:1] and line.split()[0] in tenants]
    for me in tenants:
        for other in set(tenants) - {me}:
            crossed = [r for r in rows if r[0] == me and r[1] == other]
            assert len(crossed) >= 2 and all("deny" in r and "connected" not in r
                                             for r in crossed), (me, other, rows)
    return rows


def test_the_probe_matrix_denies_every_path_between_tenants_and_allows_the_rest(
        seed: Cluster, lab: Lab) -> None:
    """What seed.py's last step ran, again through the CLI an operator runs."""
    rows = _verify(lab, TENANTS, "seed: probe matrix (tenants verify)")
    for me in TENANTS:
        allowed = [r for r in rows if r[0] == me and "allow" in r]
        assert allowed and all("connected" in r for r in allowed), rows


def test_a_policy_change_is_enforced_within_5_seconds(seed: Cluster) -> None:
    from metalseed.kube import apply as ka
    from metalseed.kube import client as kc
    from metalseed.tenants import enforce
    from metalseed.tenants.verify import time_to_enforce

    c = seed
    assert c.datastore is not None
    target = f"{c.datastore.members[0].address}:{c.datastore.etcd.client_port}"
    egress = next(o for o in enforce.objects(c) if o["kind"] == POLICY_KIND[enforce.cilium(c)]
                  and o["metadata"]["namespace"] == "tenant-acme"
                  and o["metadata"]["name"] == "apiserver-egress")
    res = ka._resource(kc.dynamic(kc.api_client(c)), egress)
    # A loop in acme's probe pod sees the datastore refused once the allowance is gone...
    gone = time_to_enforce(c, "acme", target, False, lambda: kc.translated(
        "deleting acme's egress policy", lambda: res.delete(name="apiserver-egress",
                                                            namespace="tenant-acme")))
    TIMINGS["isolation: allowance deleted -> enforced"] = gone
    assert gone < 5.0
    # ...globex's allowance is its own, untouched...
    probe = time_to_enforce(c, "globex", target, True, lambda: None)
    assert probe < 5.0
    # ...and connects again once it is applied.
    back = time_to_enforce(c, "acme", target, True, lambda: ka.apply(c, [egress]))
    TIMINGS["isolation: allowance applied -> enforced"] = back
    assert back < 5.0


def test_a_second_run_changes_nothing(seed: Cluster, run: RunPyinfra) -> None:
    start = time.monotonic()
    proc = run("deploys/seed.py", *DATA, timeout=600)
    TIMINGS["seed: seed.py, no change"] = time.monotonic() - start
    totals = pyinfra_totals(proc.stdout + proc.stderr)
    assert totals and totals["success"] == 0 and totals["error"] == 0, proc.stdout[-3000:]
    assert "would apply" not in proc.stdout + proc.stderr


def _rolled_out(c: Cluster, tenant: str, replicas: int) -> str | None:
    """None when the tenant's control plane is exactly ``replicas`` Ready pods of its
    Deployment's current template and no other pod (an old one still terminating counts)."""
    from kubernetes.client import AppsV1Api, CoreV1Api

    from metalseed.kube.client import api_client

    api = api_client(c)
    ns = f"tenant-{tenant}"
    dep = AppsV1Api(api).read_namespaced_deployment("control-plane", ns, _request_timeout=10)
    current = [rs for rs in AppsV1Api(api).list_namespaced_replica_set(
        ns, _request_timeout=10).items
        if rs.metadata.annotations.get("deployment.kubernetes.io/revision")
        == dep.metadata.annotations.get("deployment.kubernetes.io/revision")]
    if dep.status.observed_generation != dep.metadata.generation or len(current) != 1:
        return "the Deployment controller has not caught up"
    template = current[0].metadata.labels["pod-template-hash"]
    # The control plane's own pods (the namespace holds others, such as the isolation probe).
    selector = ",".join(f"{k}={v}" for k, v in sorted(dep.spec.selector.match_labels.items()))
    pods = CoreV1Api(api).list_namespaced_pod(ns, label_selector=selector,
                                              _request_timeout=10).items

    def ready(p: object) -> bool:
        conds = getattr(getattr(p, "status", None), "conditions", None) or []
        return any(x.type == "Ready" and x.status == "True" for x in conds)

    new = [p for p in pods if p.metadata.labels.get("pod-template-hash") == template
           and not p.metadata.deletion_timestamp and ready(p)]
    if len(new) == replicas and len(pods) == replicas:
        return None
    return (f"{len(new)} of {replicas} current pods ready, {len(pods)} pods in all: "
            + ", ".join(f"{p.metadata.name} {p.status.phase}"
                        + (" terminating" if p.metadata.deletion_timestamp else "")
                        for p in pods))


def _change_profile(c: Cluster, run: RunPyinfra, profile: str, replicas: int) -> None:
    """acme to ``profile`` with seed.py as an operator runs it, under a continuous client of
    acme's API through the edge; every old pod gone, no request of the client failed."""
    from metalseed.kubeprobe import ApiClient

    tenants = {**TENANTS, "acme": {**TENANTS["acme"], "profile": profile}}
    # A writer, a lister and a watcher, the writer again 50 ms after each answer.
    with ApiClient(c, "default", max_seconds=420, pause=0.05,
                   kubeconfig=admin_conf(c, "acme")) as client:
        client.wait_steady(count=10, timeout=90)
        start = time.monotonic()
        run("deploys/seed.py", "--data", "kubernetes=True", "--data",
            f"tenants={json.dumps(tenants)}", timeout=600)
        TIMINGS[f"seed: seed.py, acme to {profile}"] = time.monotonic() - start
        # seed.py ends once the new pods serve; the client goes on until the old ones are gone
        # (their API servers' shutdown delay and drain): that is where requests fail if any do.
        deadline, said = time.monotonic() + 240, _rolled_out(c, "acme", replicas)
        while said and time.monotonic() < deadline:
            time.sleep(1)
            said = _rolled_out(c, "acme", replicas)
        assert said is None, f"acme at {profile} did not roll out within 240 s: {said}"
        TIMINGS[f"seed: acme to {profile}, every old pod gone"] = time.monotonic() - start
        client.wait_resumed(time.monotonic(), count=5, timeout=60)
        client.finish()
    print(f"\nacme to {profile}: {client.summary(start)}; errors retried: "
          f"{[e for lp in client.loops for t, e in lp.errors if t >= start][:12]}")
    # A failed request: a write (a ConfigMap created) or a list the client did not get done
    # within its 10 s of retries (each attempt: 1 s to connect, 1 s to read; a connection
    # error, a timeout, a 429 or a 5xx is retried), or refused with any other 4xx; and every
    # acknowledged write is there afterwards and was seen by the watcher.
    assert client.failed(start) == [], client.summary(start)
    assert client.lost() == [], f"acknowledged writes lost: {client.lost()[:20]}"
    assert client.unwatched() == [], f"acknowledged writes never watched: {client.unwatched()[:20]}"
    assert len(client.acked) > 100, client.summary(start)


def test_promoting_and_demoting_a_tenant_fails_no_request_of_its_client(
        seed: Cluster, run: RunPyinfra) -> None:
    from kubernetes.client import AppsV1Api, PolicyV1Api
    from kubernetes.client.exceptions import ApiException

    from metalseed.kube.client import api_client

    c = seed
    apps, policy = AppsV1Api(api_client(c)), PolicyV1Api(api_client(c))

    def apiserver(dep: object) -> object:
        # A sidecar (a restartable init container), see kube/tenant.py.
        return next(x for x in dep.spec.template.spec.init_containers  # type: ignore[attr-defined]
                    if x.name == "kube-apiserver")

    _change_profile(c, run, "medium", 2)
    dep = apps.read_namespaced_deployment("control-plane", "tenant-acme")
    assert dep.spec.replicas == 2
    assert apiserver(dep).resources.requests == {"cpu": "500m", "memory": "512Mi"}
    assert "--max-requests-inflight=400" in apiserver(dep).args
    assert policy.read_namespaced_pod_disruption_budget(
        "control-plane", "tenant-acme").spec.max_unavailable == 1

    _change_profile(c, run, "small", 1)
    dep = apps.read_namespaced_deployment("control-plane", "tenant-acme")
    assert dep.spec.replicas == 1
    assert apiserver(dep).resources.requests == {"cpu": "250m", "memory": "256Mi"}
    # Server-side apply never removes an object: seed.py deletes the demoted tenant's PDB.
    with pytest.raises(ApiException) as gone:
        policy.read_namespaced_pod_disruption_budget("control-plane", "tenant-acme")
    assert gone.value.status == 404


def _serving_cert(address: str) -> bytes:
    """The certificate the kubelet at ``address`` presents, as openssl sees it (DER)."""
    proc = subprocess.run(["openssl", "s_client", "-connect", f"{address}:10250", "-showcerts"],
                          input="", capture_output=True, text=True, timeout=30, check=False)
    pem = proc.stdout[proc.stdout.find("-----BEGIN CERTIFICATE-----"):]
    der = subprocess.run(["openssl", "x509", "-outform", "DER"], input=pem.encode(),
                         capture_output=True, timeout=30, check=False).stdout
    assert der, proc.stdout + proc.stderr
    return der


def _store_der(path: Path) -> bytes:
    return subprocess.run(["openssl", "x509", "-outform", "DER", "-in", str(path)],
                          capture_output=True, timeout=30, check=True).stdout


def test_renewed_worker_leaves_reach_acmes_worker(seed: Cluster, run: RunPyinfra) -> None:
    c = seed
    acme, t1 = admin_conf(c, "acme"), c.workers_of("acme")[0]
    serving = c.pki_dir / "tenants" / "acme" / "kubelet-serving" / "t1.crt"
    before = _store_der(serving)
    assert _serving_cert(str(t1.address)) == before
    start = time.monotonic()
    run("deploys/rotate-certs.py", *DATA, "--data",
        "rotate=tenants/acme/kubelet/t1,tenants/acme/kubelet-serving/t1", timeout=600)
    TIMINGS["seed: rotate-certs.py, acme's worker leaves"] = time.monotonic() - start
    after = _store_der(serving)
    assert after != before
    # t1's kubelet serves the renewed certificate, which acme's API server (its CA) accepts for
    # logs; its renewed client certificate keeps the node Ready.
    assert _serving_cert(str(t1.address)) == after
    logs = kubectl(c, acme, "logs", "hello").stdout
    assert "Started HTTP server on port 8080" in logs, logs
    kubectl(c, acme, "wait", "--for=condition=Ready", "node/t1", "--timeout=60s", timeout=90)


def test_acmes_ca_rotates_in_three_phases_under_a_client_and_reaches_its_worker(
        seed: Cluster, run: RunPyinfra) -> None:
    """Each phase as an operator runs it: rotate-certs.py (the store, then acme's worker), then
    seed.py (acme's control plane takes the new bundle or leaves: its Secret's digest rolls
    it); a client of acme's API through the edge, with acme's admin.conf reloaded whenever it
    changes, throughout."""
    c = seed
    conf = admin_conf(c, "acme")
    ca = c.pki_dir / "tenants" / "acme" / "ca.crt"
    old_ca, old_conf = _store_der(ca), yaml.safe_load(conf.read_bytes())
    serving = c.pki_dir / "tenants" / "acme" / "kubelet-serving" / "t1.crt"
    t1 = str(c.workers_of("acme")[0].address)
    with ReloadingApiClient(conf) as client:
        client.wait_ok(5, timeout=120)
        for phase in ("trust", "reissue", "finish"):
            start = time.monotonic()
            run("deploys/rotate-certs.py", *DATA, "--data", "rotate=none", "--data",
                "rotate_ca=tenants/acme/ca", "--data", f"rotate_phase={phase}", timeout=600)
            run("deploys/seed.py", *DATA, timeout=600)
            TIMINGS[f"seed: acme's CA, phase {phase} (rotate-certs.py + seed.py)"] = (
                time.monotonic() - start)
            kubectl(c, conf, "wait", "--for=condition=Ready", "node/t1", "--timeout=90s",
                    timeout=120)
            # The API server dials t1's kubelet (serving certificate of the CA in charge) for
            # logs; t1's kubelet takes the API server's client certificate.
            logs = kubectl(c, conf, "logs", "hello").stdout
            assert "Started HTTP server on port 8080" in logs, (phase, logs)
            assert _serving_cert(t1) == _store_der(serving), phase
            client.wait_ok(5, timeout=120)
    print(f"\nacme's CA rotated: {client.ok} API requests, {len(client.failed)} failed, "
          f"admin.conf read {client.reloads} times; {client.failed[:3]}")
    assert _store_der(ca) != old_ca
    assert client.ok > 0 and not client.failed, client.failed[:10]
    # The old admin credentials: the new API server certificate is not trusted with the old CA.
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        yaml.safe_dump(old_conf, f)
        f.flush()
        refused = kubectl(c, Path(f.name), "get", "--raw", "/readyz", check=False)
    assert refused.returncode != 0, refused.stdout


def test_an_invalid_tenant_spec_is_refused_and_nothing_is_applied(seed: Cluster,
                                                                  run: RunPyinfra) -> None:
    c = seed
    bad = {**TENANTS, "initech": {"profil": "small"}}
    proc = run("deploys/seed.py", "--data", "kubernetes=True", "--data",
               f"tenants={json.dumps(bad)}", check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "tenants['initech'].profil" in out and "did you mean 'profile'?" in out, out[-2000:]
    # Refused while the run was prepared: no operation ran, nothing reached the seed.
    assert "Grand total" not in out, out[-2000:]
    seed_conf = c.pki_dir / "kubeconfig" / "admin.conf"
    ns = kubectl(c, seed_conf, "get", "namespace", "tenant-initech", check=False)
    assert ns.returncode != 0 and "NotFound" in ns.stderr, ns.stderr
    assert not (c.pki_dir / "tenants" / "initech").exists()


def _policies(c: Cluster) -> dict[tuple[str, str], str]:
    """(namespace, name) -> resourceVersion of every namespaced policy of the seed's engine."""
    from metalseed.tenants.enforce import cilium

    kind = "ciliumnetworkpolicies" if cilium(c) else "networkpolicies"
    items = json.loads(kubectl(c, c.pki_dir / "kubeconfig" / "admin.conf", "get",
                               kind, "-A", "-o", "json").stdout)["items"]
    return {(p["metadata"]["namespace"], p["metadata"]["name"]): p["metadata"]["resourceVersion"]
            for p in items}


def test_a_tenant_added_later_is_isolated_without_touching_the_others_policies(
        seed: Cluster, run: RunPyinfra, lab: Lab) -> None:
    c = seed
    before = _policies(c)
    three = {**TENANTS, "initech": {}}
    data = ("--data", "kubernetes=True", "--data", f"tenants={json.dumps(three)}")
    start = time.monotonic()
    # seed.py ends with the probe matrix over all three: it fails on any unexpected path.
    proc = run("deploys/seed.py", *data, timeout=600)
    TIMINGS["seed: seed.py, initech added (matrix of 3 included)"] = time.monotonic() - start
    assert "0 unexpected" in proc.stdout + proc.stderr
    after = _policies(c)
    # The first two tenants' policies are the very objects they were (same resourceVersion).
    kept = {k: v for k, v in after.items() if k[0] in ("tenant-acme", "tenant-globex")}
    assert kept == {k: v for k, v in before.items() if k[0] in ("tenant-acme", "tenant-globex")}
    assert len([k for k in after if k[0] == "tenant-initech"]) == 4, sorted(after)
    _verify(lab, three, "seed: probe matrix of 3 tenants (tenants verify)")


def test_removing_a_tenant_deletes_its_control_plane_and_route_and_archives_its_pki(
        seed: Cluster, run: RunPyinfra) -> None:
    c = seed
    kept = {"acme": TENANTS["acme"]}
    globex_conf = admin_conf(c, "globex").read_bytes()
    start = time.monotonic()
    run("deploys/seed.py", "--data", "kubernetes=True", "--data", f"tenants={json.dumps(kept)}",
        timeout=600)
    TIMINGS["seed: seed.py, globex removed"] = time.monotonic() - start
    seed_conf = c.pki_dir / "kubeconfig" / "admin.conf"
    ns = kubectl(c, seed_conf, "get", "namespace", "tenant-globex", check=False)
    assert ns.returncode != 0 and "NotFound" in ns.stderr, ns.stdout + ns.stderr
    assert not (c.pki_dir / "tenants" / "globex").exists()
    # Its policies (and initech's, removed in the same run) went with their namespaces; acme's
    # are all there.
    policies = _policies(c)
    assert [k for k in policies if k[0] != "tenant-acme" and k[0].startswith("tenant-")] == []
    assert len([k for k in policies if k[0] == "tenant-acme"]) == 4
    archived = list((c.pki_dir.with_name(c.pki_dir.name + ".archive") / "tenants").glob("globex-*"))
    assert len(archived) == 1 and (archived[0] / "admin.conf").read_bytes() == globex_conf
    # Its endpoint name is no route any more: nginx sends it to the seed's API servers, whose
    # certificate globex's CA never signed.
    gone = kubectl(c, archived[0] / "admin.conf", "get", "--raw", "/readyz", check=False)
    assert gone.returncode != 0 and "certificate" in gone.stderr, gone.stdout + gone.stderr
    assert kubectl(c, admin_conf(c, "acme"), "get", "--raw", "/readyz").stdout.strip() == "ok"
    assert kubectl(c, admin_conf(c, "acme"), "get", "configmap", "only-acme").returncode == 0
