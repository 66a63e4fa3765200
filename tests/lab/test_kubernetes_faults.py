"""Faults on the shared Kubernetes lab, each under a continuous API client through the VIP.

The client (metalseed.kubeprobe.ApiClient: the official kubernetes client with the store's admin
kubeconfig) writes numbered ConfigMaps one after the other, lists them and watches them, each
loop in a thread; an operation whose attempt fails (a connection cut, a 5xx) is retried for up to
OP_BUDGET seconds, and a create retried after an attempt that was applied answers 409, which
acknowledges it. Afterwards every acknowledged ConfigMap must exist and must have reached the
watcher (which resumes from its last resourceVersion after any error).

- crash the master holding the VIP, which also leads etcd (the worst case: the VIP moves and
  etcd elects a new leader at once): writes, lists and the watch resume within 2 s;
- SIGKILL one kube-apiserver (nginx's TCP pass-through on VIP:6443 routes new connections around
  it, systemd starts it again): no operation fails;
- freeze a master that does not hold the VIP but leads etcd, for FROZEN seconds (a hung machine
  that keeps its addresses and every open connection to it, and answers nothing): etcd elects
  another leader, nginx's connects to its API server time out and go to the next; no operation
  fails, nothing acknowledged is lost; thawed, it rejoins and the cluster is whole;
- freeze the master that holds the VIP and leads etcd, for FROZEN seconds: the next master
  takes the VIP, etcd elects another leader, no operation fails; thawed, it takes the VIP back
  (preemption) and clients reach it, not the master that stood in (see keepalived.conf.j2 on
  gratuitous ARPs), and the cluster is whole;
- crash a worker (silently, as on a power loss): no HTTPS request sent through the edge to the
  app (agnhost behind Traefik) after the crash fails; of those in flight while it happened, at
  most one (see the test);

Each test restores the cluster before it returns and checks that it is whole again (every
machine up, every unit active and answering its health endpoint, etcd healthy on every member,
every node Ready, the VIP on its expected holder): later modules share the cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from metalseed import edgeprobe, kubeprobe
from metalseed.lab import Lab
from metalseed.model import Cluster
from metalseed.render import edge as re
from metalseed.render import kubernetes as rk
from tests.lab.kube import KubeApp, kubectl, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.kube]

NAMESPACE = "metalseed-faults"
RESUME_WITHIN = 2.0
# Generous: a machine restarted on a loaded host boots, then etcd, containerd, the kubelet and the
# API server start and sync (seen: 30-45 s at load averages of 20-100).
RESTORE_TIMEOUT = 300


@pytest.fixture(scope="module")
def cluster(kube_lab: Lab, kube_cluster: Cluster) -> Iterator[Cluster]:
    kubectl(kube_cluster, "create", "namespace", NAMESPACE, check=False)
    kubeprobe.wait_whole(kube_lab, kube_cluster, RESTORE_TIMEOUT)
    yield kube_cluster
    # Thousands of ConfigMaps: gone with their namespace, in the background.
    kubectl(kube_cluster, "delete", "namespace", NAMESPACE, "--wait=false", check=False)


def holder(lab: Lab, c: Cluster) -> str:
    return kubeprobe.wait_holder(lab, c, expected=re.expected_holder(c).name, timeout=60)


def check_client(client: kubeprobe.ApiClient, since: float) -> None:
    """What every fault promises: no operation failed, no acknowledged write lost, the watch
    saw every acknowledged write."""
    assert len(client.acked) > 20, client.summary(since)
    assert client.failed(since) == [], client.summary(since)
    lost = client.lost()
    assert lost == [], f"acknowledged writes lost: {lost[:10]} of {len(client.acked)}"
    unwatched = client.unwatched()
    assert unwatched == [], f"the watch missed acknowledged writes {unwatched[:10]}"


def test_crash_of_the_vip_holder_resumes_the_api_within_2_s(kube_lab: Lab, cluster: Cluster
                                                           ) -> None:
    c = cluster
    victim = holder(kube_lab, c)
    kubeprobe.lead_etcd(kube_lab, c, victim)
    try:
        with kubeprobe.ApiClient(c, NAMESPACE, max_seconds=180) as client:
            client.wait_steady(20, timeout=60)
            t0 = time.monotonic()
            kube_lab.crash(victim)
            new = kubeprobe.wait_holder(kube_lab, c, names=[m.name for m in c.masters
                                                            if m.name != victim], timeout=30)
            client.wait_resumed(t0, count=20, timeout=60)
            time.sleep(2)  # some steady traffic after the resume, for the gaps' right ends
            client.finish()
            gaps = client.gaps(t0)
            print(f"\nVIP holder {victim} crashed, VIP now on {new}: {client.summary(t0)}")
            check_client(client, t0)
            slow = {k: round(v, 2) for k, v in gaps.items() if not v < RESUME_WITHIN}
            assert not slow, f"the API resumed later than {RESUME_WITHIN} s: {slow}"
    finally:
        kube_lab.restart(victim)
        took = kubeprobe.wait_whole(kube_lab, c, RESTORE_TIMEOUT)
        print(f"whole again {took:.1f} s after {victim} restarted")


FROZEN = 15


def test_a_frozen_master_fails_no_request_and_rejoins_when_thawed(kube_lab: Lab,
                                                                 cluster: Cluster) -> None:
    c = cluster
    keeper = holder(kube_lab, c)
    victim = next(m.name for m in reversed(c.masters) if m.name != keeper)
    kubeprobe.lead_etcd(kube_lab, c, victim)
    frozen = False
    try:
        with kubeprobe.ApiClient(c, NAMESPACE, max_seconds=180) as client:
            client.wait_steady(20, timeout=60)
            t0 = time.monotonic()
            kube_lab.freeze(victim)
            frozen = True
            client.wait_resumed(t0, count=20, timeout=60)
            time.sleep(max(0.0, FROZEN - (time.monotonic() - t0)))
            thawed = time.monotonic()
            kube_lab.thaw(victim)
            frozen = False
            client.wait_resumed(thawed, count=20, timeout=60)
            time.sleep(2)
            client.finish()
            during = {lp.name: round(lp.longest_gap(t0, thawed), 2) for lp in client.loops}
            print(f"\nmaster {victim} (etcd leader) frozen {thawed - t0:.1f} s, VIP stayed on "
                  f"{keeper}: {client.summary(t0)}; longest gaps while frozen {during}")
            check_client(client, t0)
        assert kubeprobe.holder(kube_lab, c) == keeper, "the VIP moved"
        leader, _ = kubeprobe.etcd_leader(kube_lab, keeper)
        assert f"//{c.node(victim).address}:" not in leader, "etcd did not elect another leader"
    finally:
        if frozen:
            kube_lab.thaw(victim)
        took = kubeprobe.wait_whole(kube_lab, c, RESTORE_TIMEOUT)
        print(f"whole again {took:.1f} s after {victim} thawed")


def test_a_frozen_vip_holder_fails_no_request_and_takes_the_vip_back_when_thawed(
        kube_lab: Lab, cluster: Cluster) -> None:
    c = cluster
    victim = holder(kube_lab, c)
    kubeprobe.lead_etcd(kube_lab, c, victim)
    frozen = False
    try:
        with kubeprobe.ApiClient(c, NAMESPACE, max_seconds=180) as client:
            client.wait_steady(20, timeout=60)
            t0 = time.monotonic()
            kube_lab.freeze(victim)
            frozen = True
            stand_in = kubeprobe.wait_holder(kube_lab, c, names=[m.name for m in c.masters
                                                                 if m.name != victim],
                                             timeout=30)
            client.wait_resumed(t0, count=20, timeout=60)
            time.sleep(max(0.0, FROZEN - (time.monotonic() - t0)))
            thawed = time.monotonic()
            kube_lab.thaw(victim)
            frozen = False
            # Preemption: the thawed holder, still MASTER in its own eyes, takes the VIP back.
            kubeprobe.wait_holder(kube_lab, c, expected=victim, timeout=30)
            try:
                client.wait_resumed(thawed, count=20, timeout=60)
            finally:
                print(f"\nafter the thaw the operator machine reaches the VIP at "
                      f"{edgeprobe.vip_neighbour(c)!r}; {victim} is "
                      f"{edgeprobe.mac_address(kube_lab, c, victim)}")
            time.sleep(2)
            client.finish()
            during = {lp.name: round(lp.longest_gap(t0, thawed), 2) for lp in client.loops}
            after = {lp.name: round(lp.longest_gap(thawed), 2) for lp in client.loops}
            print(f"VIP holder {victim} (etcd leader) frozen {thawed - t0:.1f} s, VIP on "
                  f"{stand_in} meanwhile: {client.summary(t0)}; longest gaps while frozen "
                  f"{during}, after the thaw {after}")
            check_client(client, t0)
        leader, _ = kubeprobe.etcd_leader(kube_lab, stand_in)
        assert f"//{c.node(victim).address}:" not in leader, "etcd did not elect another leader"
    finally:
        if frozen:
            kube_lab.thaw(victim)
        took = kubeprobe.wait_whole(kube_lab, c, RESTORE_TIMEOUT)
        print(f"whole again {took:.1f} s after {victim} thawed")


def apiserver_restarts(lab: Lab, name: str) -> int:
    out = lab.ssh(name, f"systemctl show -p NRestarts --value {rk.APISERVER_UNIT}", check=True)
    return int(out.stdout.strip() or 0)


def test_a_killed_apiserver_fails_no_request(kube_lab: Lab, cluster: Cluster) -> None:
    c = cluster
    # The VIP holder's own API server: its nginx must route around it to the other masters.
    victim = holder(kube_lab, c)
    restarts = apiserver_restarts(kube_lab, victim)
    with kubeprobe.ApiClient(c, NAMESPACE, max_seconds=120) as client:
        client.wait_steady(20, timeout=60)
        t0 = time.monotonic()
        kube_lab.kill_service(victim, rk.APISERVER_UNIT)
        # systemd starts it again (Restart=always); traffic goes on meanwhile.
        deadline = time.monotonic() + 60
        while apiserver_restarts(kube_lab, victim) == restarts and time.monotonic() < deadline:
            time.sleep(0.5)
        client.wait_resumed(t0, count=20, timeout=60)
        time.sleep(2)
        client.finish()
        print(f"\nkube-apiserver on {victim} killed: {client.summary(t0)}")
        check_client(client, t0)
    assert apiserver_restarts(kube_lab, victim) > restarts, "systemd did not restart it"
    took = kubeprobe.wait_whole(kube_lab, c, RESTORE_TIMEOUT)
    print(f"whole again {took:.1f} s after the kill")


def test_crash_of_a_worker_fails_no_request_sent_after_it(kube_lab: Lab, cluster: Cluster,
                                                         kube_app: KubeApp) -> None:
    c = cluster
    victim = c.workers[-1].name
    # A request that meets the dead worker waits out the edge's connect timeout and goes to the
    # next worker: slower, not failed. The client's timeout allows for that.
    with edgeprobe.Client(str(c.vip), c.edge.https_port, edgeprobe.tls_context(kube_app.ca),
                          host=kube_app.host, path="/hostname", timeout=5, pause=0.02,
                          max_seconds=90) as client:
        try:
            client.wait_ok(20, timeout=30)
            t0 = time.time()
            # As on a power loss: killed with its link up, the machine's kernel would reset its
            # connections (3-4 quick 502s that nobody resends, in CI); a real crash sends none.
            crashed = kube_lab.crash(victim, silent=True)  # the instant it went silent
            time.sleep(15)  # past the edge's fail_timeout: the dead worker is tried again
            client.stop()
        finally:
            kube_lab.restart(victim)
    # The claim is checked after the cluster is whole again, so that a failed claim does not
    # leave later modules a cluster with a worker missing.
    took = kubeprobe.wait_whole(kube_lab, c, RESTORE_TIMEOUT)

    def app_ready() -> str | None:
        out = kubectl(c, "-n", kube_app.namespace, "get", "deployment", kube_app.name, "-o",
                      "jsonpath={.status.readyReplicas}/{.spec.replicas}", check=False).stdout
        ready, _, want = out.partition("/")
        return None if ready and ready == want else f"ready/replicas: {out}"

    wait_until("the app has every replica Ready again", app_ready, timeout=RESTORE_TIMEOUT)
    # Ready is the kubelet's word; later modules need every pod answering through the edge.
    answered: set[str] = set()

    def every_pod_answers() -> str | None:
        try:
            reply = edgeprobe.get(str(c.vip), c.edge.https_port, path="/hostname",
                                  host=kube_app.host, ctx=edgeprobe.tls_context(kube_app.ca),
                                  timeout=5)
            if reply.status == 200:
                answered.add(reply.body.strip())
        except OSError as e:
            return str(e)
        missing = set(kube_app.pods(c)) - answered
        return f"not answered yet: {sorted(missing)}" if missing else None

    wait_until("every app pod answering through the edge", every_pod_answers,
               timeout=RESTORE_TIMEOUT)
    print(f"whole again {took:.1f} s after {victim} restarted; every pod answered after "
          f"{time.time() - crashed:.1f} s")
    after = [s for s in client.samples if s.start >= t0]
    failed = client.failures(t0)
    # A request Traefik had already sent to a pod on the worker when it died is not sent again
    # (Traefik retries only what never reached a backend: traefik/traefik#3285), nor is one that
    # nginx had sent to the dead worker's Traefik (nginx resends only what got no response
    # header, and a silent machine sends none until the client has given up).
    in_flight = [s for s in failed if s.start < crashed]
    later = [s for s in failed if s.start >= crashed]
    slowest = max((s.end - s.start for s in after), default=float("nan"))
    print(f"worker {victim} crashed: {len(after)} HTTPS requests through the edge, "
          f"{len(later)} of those sent after the crash failed, {len(in_flight)} in flight during "
          f"it failed, slowest {slowest:.2f} s; {failed[:3]}")
    assert len(after) > 10
    assert later == []
    assert len(in_flight) <= 1  # the client has one request in flight at a time
