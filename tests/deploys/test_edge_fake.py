"""The edge deploy through pyinfra's API against ``@fake`` hosts: what a bare, a converged and a
half-converged master get, and what it costs. (Real machines: tests/lab/test_edge.py.)"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops
from pyinfra.connectors.fake import FakeConnector

from metalseed.deploys import converge as cv
from metalseed.deploys import edge as d
from metalseed.errors import DeployError
from metalseed.model import cluster_from_inventory
from metalseed.pki.issue import init_pki, store_for
from metalseed.render import edge as r

MASTERS = ("m1", "m2", "m3")
WORKERS = ("w1", "w2")
FACT = "echo '[sha]'"
VIP_ON_ETH0 = "2: eth0    inet 10.20.0.10/32 scope global eth0"


def fake_pem(kind: bytes, body: bytes) -> bytes:
    """A PEM-shaped placeholder (not a real key): built here so no key-like block is committed."""
    return b"-----BEGIN " + kind + b"-----\n" + body + b"\n-----END " + kind + b"-----\n"


@pytest.fixture(autouse=True)
def _fake_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PYINFRA_FAKE_DELAY", "0")
    monkeypatch.setenv("PYINFRA_FAKE_DELAY_JITTER", "0")
    yield


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, bytes]]:
    seen: dict[str, dict[str, bytes]] = {}

    def put_file(self: FakeConnector, src: Any, remote: str, *args: Any, **kwargs: Any) -> bool:
        data = src.getvalue() if isinstance(src, io.BytesIO) else Path(src).read_bytes()
        seen.setdefault(self.host.name, {})[remote] = data
        return True

    monkeypatch.setattr(FakeConnector, "put_file", put_file)
    return seen


def make_state(tmp_path: Path, responses: dict[str, dict[str, Any]] | None = None,
               check_for_changes: bool = True, **data: Any) -> State:
    common = {"cluster_name": "fake", "node_network": "10.20.0.0/24", "vip": "10.20.0.10",
              "pki_store": str(tmp_path / "pki"), "fake_delay": 0, "fake_delay_jitter": 0, **data}
    hosts = []
    for i, name in enumerate(MASTERS, start=1):
        holds = [VIP_ON_ETH0] if name == MASTERS[0] else []  # the settled VIP: on m1
        hosts.append((f"@fake/{name}", {**common, "address": f"10.20.0.{10 + i}", "node_name": name,
                                         "fake_responses": {"ip -4 -o addr show dev eth0": holds,
                                                            **(responses or {}).get(name, {})}}))
    for i, name in enumerate(WORKERS, start=1):
        hosts.append((f"@fake/{name}", {**common, "address": f"10.20.0.{20 + i}", "node_name": name,
                                         "fake_responses": (responses or {}).get(name, {})}))
    inventory = Inventory(
        (hosts, {}),
        masters=([f"@fake/{n}" for n in MASTERS], {}),
        workers=([f"@fake/{n}" for n in WORKERS], {}),
    )
    # check_for_changes=False is `pyinfra -y`: operations run once, at execution only.
    state = State(inventory, Config(), check_for_changes=check_for_changes)
    connect_all(state)
    return state


def run(state: State, *deploys: Any) -> State:
    for deploy in deploys:
        add_deploy(state, deploy)
    run_ops(state)
    return state


def commands(state: State, name: str, facts: bool = False) -> list[str]:
    """Commands a host ran; the fact command only with ``facts``."""
    cmds = [str(c) for c in state.inventory.get_host(f"@fake/{name}").connector.executed_commands]
    return cmds if facts else [c for c in cmds if not c.startswith(FACT)]


def changed(state: State) -> dict[str, int]:
    return {h.name: state.get_meta_for_host(h).ops_change for h in state.inventory
            if state.get_meta_for_host(h).ops_change}


def converged_responses(tmp_path: Path, **data: Any) -> dict[str, dict[str, Any]]:
    before = make_state(tmp_path, **data)
    cluster = cluster_from_inventory(before.inventory)
    init_pki(cluster)
    material = d.serving_material(cluster)
    out = {m.name: {FACT: cv.converged_snapshot(d.master_spec(cluster, m, material))}
           for m in cluster.masters}
    return out


# ---------------------------------------------------------------------------------------------


def test_bare_masters_get_everything_in_one_serial_operation(
        tmp_path: Path, uploads: dict[str, dict[str, bytes]]) -> None:
    state = run(make_state(tmp_path), d.edge)
    assert changed(state) == {f"@fake/{m}": 1 for m in MASTERS}
    op, settle = state.get_op_order()
    assert state.get_op_meta(op).global_arguments["_serial"] is True
    assert state.get_op_meta(settle).global_arguments["_run_once"] is True
    for w in WORKERS:  # workers take part (API op order) but run nothing, not even the fact
        assert commands(state, w, facts=True) == []
    # After a change the run waits for the VIP to rest on its holder, asking every master.
    for m in MASTERS:
        assert commands(state, m)[-1] == "ip -4 -o addr show dev eth0"

    cmds = commands(state, "m1")
    assert "apt-get install" in cmds[0] and "libnginx-mod-stream" in cmds[0]
    sysctl = next(i for i, c in enumerate(cmds) if c.startswith("sysctl -q -w net.ipv4.ip_nonlocal_bind=1"))
    assert sysctl < next(i for i, c in enumerate(cmds) if c.startswith("nginx -t -q -c"))
    assert "systemctl start nginx.service" in cmds and "systemctl start keepalived.service" in cmds
    assert cmds.index("systemctl start nginx.service") < cmds.index("systemctl start keepalived.service")
    assert "systemctl reload nginx.service" not in cmds

    cluster = cluster_from_inventory(state.inventory)
    store = store_for(cluster)
    ups = uploads["@fake/m1"]
    keepalived = ups[r.KEEPALIVED_CONF + cv.STAGED_SUFFIX].decode()
    assert "priority 150" in keepalived and "priority 140" in uploads["@fake/m2"][
        r.KEEPALIVED_CONF + cv.STAGED_SUFFIX].decode()
    (bundle_path,) = [p for p in ups if p.startswith(r.NGINX_DIR)]
    bundle = ups[bundle_path]
    assert store.key_path("edge/server").read_bytes().strip() in bundle
    assert store.key_path("edge/ca").read_bytes().strip() not in bundle
    for secret in (b for name in MASTERS for b in uploads[f"@fake/{name}"].values()):
        assert store.key_path("edge/ca").read_bytes().strip() not in secret
    staged = bundle_path
    assert cmds.index(f"install -m 0600 /dev/null {staged}") < cmds.index(f"chmod 0600 {staged}")
    final = staged.removesuffix(cv.STAGED_SUFFIX)
    assert f"ssl_certificate {final};" in ups[r.NGINX_CONF + cv.STAGED_SUFFIX].decode()


def test_second_run_on_a_converged_edge_is_one_command_per_master(
        tmp_path: Path, uploads: dict[str, dict[str, bytes]]) -> None:
    responses = converged_responses(tmp_path)
    state = run(make_state(tmp_path, responses), d.edge)
    assert changed(state) == {}
    assert uploads == {}
    # As `pyinfra -y` runs it: the whole edge costs one command per master -- the fact.
    state = run(make_state(tmp_path, responses, check_for_changes=False), d.edge)
    for name in MASTERS:  # and no VIP check: nothing changed
        assert len(commands(state, name, facts=True)) == 1
    for name in WORKERS:  # the edge has nothing on a worker
        assert commands(state, name, facts=True) == []
    assert len(state.get_op_order()) == 2


def test_a_vip_that_does_not_settle_fails_the_run(
        tmp_path: Path, uploads: dict[str, dict[str, bytes]], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(d.wait_vip_settled, "__defaults__", (0.5,))
    both = {"ip -4 -o addr show dev eth0": [VIP_ON_ETH0]}
    state = run(make_state(tmp_path, {"m2": both}), d.edge)  # m1 and m2 both claim it
    assert sum(state.get_results_for_host(h).error_ops for h in state.inventory) == 1
    assert "did not settle on m1 within 0s (held by: m1, m2)" in caplog.text


def test_faster_failover_only_reloads_keepalived(
        tmp_path: Path, uploads: dict[str, dict[str, bytes]]) -> None:
    state = run(make_state(tmp_path, converged_responses(tmp_path), edge_failover="fast"), d.edge)
    assert changed(state) == {f"@fake/{m}": 1 for m in MASTERS}
    assert set(uploads["@fake/m2"]) == {r.KEEPALIVED_CONF + cv.STAGED_SUFFIX}
    assert "advert_int 0.1" in uploads["@fake/m2"][r.KEEPALIVED_CONF + cv.STAGED_SUFFIX].decode()
    cmds = commands(state, "m2")
    assert "systemctl reload keepalived.service" in cmds
    assert not any("nginx.service" in c for c in cmds)
    assert any(c.startswith(f"keepalived -t -f {r.KEEPALIVED_CONF}{cv.STAGED_SUFFIX} ||") for c in cmds)


def test_new_certificate_is_checked_and_reloaded_and_the_old_one_removed(
        tmp_path: Path, uploads: dict[str, dict[str, bytes]]) -> None:
    responses = converged_responses(tmp_path)
    cluster = cluster_from_inventory(make_state(tmp_path).inventory)
    init_pki(cluster, force=frozenset({"edge/server"}))
    state = run(make_state(tmp_path, responses), d.edge)
    cmds = commands(state, "m3")
    assert cmds.pop() == "ip -4 -o addr show dev eth0"  # the VIP check after a change
    ups = uploads["@fake/m3"]
    assert set(ups) == {p for p in ups if p.startswith(r.NGINX_DIR)} | {r.NGINX_CONF + cv.STAGED_SUFFIX}
    check = next(i for i, c in enumerate(cmds) if c.startswith("nginx -t -q -c"))
    assert check < cmds.index(f"mv -f {r.NGINX_CONF}{cv.STAGED_SUFFIX} {r.NGINX_CONF}") < cmds.index(
        "systemctl reload nginx.service")
    assert cmds.index("systemctl reload nginx.service") < cmds.index(d.HEALTH_WAIT)
    assert cmds[-1].startswith(f"find {r.NGINX_DIR} -maxdepth 1 -name 'edge-*.pem*' ! -name edge-")
    assert "keepalived.service" not in " ".join(cmds)


def test_operators_own_certificate_is_served(tmp_path: Path, uploads: dict[str, dict[str, bytes]]) -> None:
    cert, key = tmp_path / "edge.crt", tmp_path / "edge.key"
    cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nOWN\n-----END CERTIFICATE-----\n")
    key.write_bytes(fake_pem(b"PRIVATE KEY", b"OWNKEY"))
    run(make_state(tmp_path, edge_cert_file=str(cert), edge_key_file=str(key)), d.edge)
    (bundle,) = [v for p, v in uploads["@fake/m1"].items() if p.startswith(r.NGINX_DIR)]
    assert b"OWN\n" in bundle and b"OWNKEY" in bundle
    assert not (tmp_path / "pki").exists()  # nothing issued when the operator brings a certificate


def test_missing_operator_certificate_stops_before_any_host(tmp_path: Path) -> None:
    state = make_state(tmp_path, edge_cert_file=str(tmp_path / "nope.crt"),
                       edge_key_file=str(tmp_path / "nope.key"))
    with pytest.raises(DeployError, match=r"nope\.crt"):
        run(state, d.edge)
    assert all(commands(state, n, facts=True) == [] for n in (*MASTERS, *WORKERS))
