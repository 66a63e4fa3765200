"""Parsing and comparing installed certificates (pure parts of `certs check`)."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from metalseed.pki.installed import (
    MATCHES,
    STALE,
    UNKNOWN,
    compare,
    dump_command,
    kubeconfig_path,
    parse_dump,
)
from metalseed.pki.issue import init_pki, store_for
from metalseed.pki.plan import EXPIRED, INVALID, OK, inspect
from tests.unit.test_pki import NOW, make_cluster


def test_dump_command_reads_real_files_and_parses(tmp_path: Path) -> None:
    c = make_cluster(tmp_path / "pki")
    init_pki(c, now=NOW)
    etc = tmp_path / "etc"
    (etc / "etcd").mkdir(parents=True)
    (etc / "etcd" / "server.crt").write_bytes((c.pki_dir / "etcd/m1/server.crt").read_bytes())
    (etc / "etcd" / "server.key").write_bytes((c.pki_dir / "etcd/m1/server.key").read_bytes())
    # A bundle file as nginx gets it: the chain (leaf first, then its CA), then the key.
    (etc / "edge.pem").write_bytes((c.pki_dir / "edge/server.crt").read_bytes()
                                   + (c.pki_dir / "edge/ca.crt").read_bytes()
                                   + (c.pki_dir / "edge/server.key").read_bytes())
    (etc / "broken.crt").write_text("not a certificate\n")
    out = subprocess.run(["sh", "-c", dump_command([str(etc), str(tmp_path / "absent")], [])],
                         capture_output=True, text=True, check=True).stdout
    assert "PRIVATE KEY" not in out  # keys never leave the host
    items = {Path(i.path).name: i for i in parse_dump("m1", out)}
    assert set(items) == {"server.crt", "edge.pem", "broken.crt"}  # keys are never read
    assert items["edge.pem"].info is not None and items["edge.pem"].info.common_name == "prod-edge"
    assert items["broken.crt"].info is None and "not a PEM" in items["broken.crt"].error

    inv = inspect(c, store_for(c), NOW)
    states = {Path(s.item.path).name: s for s in compare(items.values(), inv, c.pki, NOW)}
    assert states["server.crt"].state == OK
    assert states["server.crt"].store == f"{MATCHES} (etcd/m1/server)"
    assert states["broken.crt"].state == INVALID

    # After a renewal that was not shipped yet, the installed copy is stale, and later expired.
    init_pki(c, now=NOW, force=frozenset({"etcd/m1/server"}))
    inv = inspect(c, store_for(c), NOW)
    late = NOW + dt.timedelta(days=400)
    states = {Path(s.item.path).name: s for s in compare(items.values(), inv, c.pki, late)}
    assert states["server.crt"].store == f"{STALE} (etcd/m1/server or etcd/m1/peer)"
    assert states["server.crt"].state == EXPIRED


def test_foreign_certificate_is_not_in_store(tmp_path: Path) -> None:
    c = make_cluster(tmp_path / "pki")
    other = make_cluster(tmp_path / "other", cluster_name="other")
    init_pki(c, now=NOW)
    init_pki(other, now=NOW)
    text = "==> metalseed-cert /etc/x.crt\n" + (other.pki_dir / "ca.crt").read_text()
    [status] = compare(parse_dump("m1", text), inspect(c, store_for(c), NOW), c.pki, NOW)
    assert status.store == UNKNOWN


def test_dump_command_reads_the_certificates_embedded_in_kubeconfigs(tmp_path: Path) -> None:
    c = make_cluster(tmp_path / "pki", kubernetes=True, etcd_source="mirror")
    init_pki(c, now=NOW)
    kube = tmp_path / "kubernetes"
    (kube / "kubelet").mkdir(parents=True)
    (kube / "scheduler.conf").write_bytes((c.pki_dir / "kubeconfig/scheduler.conf").read_bytes())
    (kube / "kubelet" / "kubeconfig").write_bytes(
        (c.pki_dir / "kubeconfig/kubelet/w1.conf").read_bytes())
    (kube / "other.yaml").write_text("client-certificate-data: bm90IHJlYWQ=\n")  # not a kubeconfig
    out = subprocess.run(["sh", "-c", dump_command([], [str(kube)])], capture_output=True,
                         text=True, check=True).stdout
    assert "PRIVATE KEY" not in out  # client-key-data is never read
    items = {i.path: i for i in parse_dump("w1", out)}
    sched, kubelet = str(kube / "scheduler.conf"), str(kube / "kubelet" / "kubeconfig")
    assert set(items) == {kubeconfig_path(p, f) for p in (sched, kubelet)
                          for f in ("certificate-authority-data", "client-certificate-data")}
    inv = inspect(c, store_for(c), NOW)
    stores = {s.item.path: s.store for s in compare(items.values(), inv, c.pki, NOW)}
    assert stores[kubeconfig_path(sched, "client-certificate-data")] == (
        f"{MATCHES} (kubeconfig/scheduler)")
    assert stores[kubeconfig_path(kubelet, "client-certificate-data")] == f"{MATCHES} (kubelet/w1)"
    assert stores[kubeconfig_path(kubelet, "certificate-authority-data")] == f"{MATCHES} (ca)"
