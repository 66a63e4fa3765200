"""The etcd deploys through pyinfra's API against ``@fake`` hosts: which operations a run makes
for bare, converged and half-converged masters, and what it ships. (Real machines:
tests/lab/test_etcd.py.)"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops
from pyinfra.connectors.fake import FakeConnector

from metalseed.deploys import etcd as d
from metalseed.deploys.converge import converged_snapshot, parse_snapshot, plan
from metalseed.deploys.etcd import backup, deploy, replace, restore
from metalseed.errors import DeployError, HealthCheckError, ModelError
from metalseed.etcdclient import Member
from metalseed.model import cluster_from_inventory
from metalseed.pki.issue import init_pki, store_for
from metalseed.render import etcd as r

MASTERS = ("m1", "m2", "m3")


@pytest.fixture(autouse=True)
def _fake_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield


class Recorder:
    def __init__(self) -> None:
        self.gates = 0
        self.restarts: list[str] = []
        self.joins: list[str] = []
        self.uploads: dict[str, dict[str, bytes]] = {}


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()

    def gate(cluster: Any, timeout: float = 0, skip: str | None = None) -> None:
        rec.gates += 1

    def restart(state: Any, host: Any, cluster: Any, member: Any) -> None:
        rec.restarts.append(member.name)

    def joinable(state: Any, host: Any, cluster: Any, member: Any) -> None:
        rec.joins.append(member.name)

    def put_file(self: FakeConnector, src: Any, remote: str, *a: Any, **kw: Any) -> bool:
        data = src.getvalue() if isinstance(src, io.BytesIO) else Path(src).read_bytes()
        rec.uploads.setdefault(self.host.name, {})[remote] = data
        return True

    for module in (deploy, restore):
        monkeypatch.setattr(module, "wait_cluster_healthy", gate)
    monkeypatch.setattr(deploy, "_restart_member", restart)
    monkeypatch.setattr(deploy, "_check_joinable", joinable)
    monkeypatch.setattr(FakeConnector, "put_file", put_file)
    return rec


def make_state(tmp_path: Path, per_host: dict[str, dict[str, Any]] | None = None,
               **data: Any) -> State:
    common = {"cluster_name": "fake", "node_network": "10.20.0.0/24", "vip": "10.20.0.10",
              "pki_store": str(tmp_path / "pki"), "fake_delay": 0, "fake_delay_jitter": 0,
              "etcd_source": "debian", **data}
    hosts = []
    for i, name in enumerate(MASTERS, start=1):
        hosts.append((f"@fake/{name}", {**common, "address": f"10.20.0.{10 + i}",
                                         "node_name": name, **(per_host or {}).get(name, {})}))
    hosts.append(("@fake/w1", {**common, "address": "10.20.0.21", "node_name": "w1"}))
    inventory = Inventory(
        (hosts, {}),
        masters=([f"@fake/{n}" for n in MASTERS], {}),
        workers=(["@fake/w1"], {}),
    )
    state = State(inventory, Config())
    connect_all(state)
    return state


def run(state: State, deploy: Callable[..., Any], **kwargs: Any) -> State:
    add_deploy(state, deploy, **kwargs)
    run_ops(state)
    return state


GATE = "etcd | etcd: every member healthy over mutual TLS"


def op_names(state: State, host_name: str) -> list[str]:
    """Operation names of a host; the health gate, which runs once, is left out."""
    h = state.inventory.get_host(host_name)
    return [name for op in state.get_op_order() if op in state.ops[h]
            if (name := next(iter(state.get_op_meta(op).names))) != GATE]


def gate_hosts(state: State) -> list[str]:
    return [h.name for h in state.inventory for op in state.ops[h]
            if GATE in state.get_op_meta(op).names]


def changed_ops(state: State) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for h in state.inventory:
        for op in state.get_op_order():
            data = state.ops[h].get(op)
            if data is not None and data.operation_meta.did_change():
                out.setdefault(h.name, []).append(next(iter(state.get_op_meta(op).names)))
    return out


def commands(state: State, host_name: str) -> list[str]:
    return list(state.inventory.get_host(host_name).connector.executed_commands)


def converged_responses(state: State, name: str, **overrides: str) -> dict[Any, Any]:
    """Fake answers for a master on which the deploy has run before."""
    cluster = cluster_from_inventory(state.inventory)
    member = cluster.node(name)
    facts = {"data": "yes", "active": "active", "enabled": "enabled", "packaged": "masked",
             "binary": "yes", "user": "yes", **overrides}
    host_state = [f"{k}={v}" for k, v in facts.items()]
    host_state += [f"pkg={p}:ii " for p in r.DEBIAN_PACKAGES]
    return {"dpkg-query -W": host_state,
            "echo '[sha]'": converged_snapshot(deploy.host_spec(cluster, member, None))}


def converged_state(tmp_path: Path, changes: dict[str, dict[str, str]] | None = None,
                    **data: Any) -> State:
    """A state whose masters answer as if the deploy had run on them before (with the files
    rendered for ``data``; ``changes`` overrides facts per master)."""
    before = make_state(tmp_path)
    init_pki(cluster_from_inventory(before.inventory))
    per_host = {name: {"fake_responses": converged_responses(before, name,
                                                              **(changes or {}).get(name, {}))}
                for name in MASTERS}
    return make_state(tmp_path, per_host=per_host, **data)


# ---------------------------------------------------------------------------------------------


def test_bare_masters_get_everything_and_bootstrap_a_new_cluster(tmp_path: Path,
                                                                 rec: Recorder) -> None:
    state = run(make_state(tmp_path), d.etcd)
    changed = changed_ops(state)
    for name in MASTERS:
        assert changed[f"@fake/{name}"] == [
            "etcd | Install etcd",
            "etcd | etcd files (config, unit, certificates)",
            "etcd | Start etcd",
        ]
    assert "@fake/w1" not in changed and op_names(state, "@fake/w1") == []
    cmds = commands(state, "@fake/m1")
    mask = next(i for i, c in enumerate(cmds) if "systemctl mask --now etcd.service" in c)
    install = next(i for i, c in enumerate(cmds) if "apt-get install" in c)
    assert mask < install  # the packaged unit can never start a stray single-member etcd
    assert len(gate_hosts(state)) == 1
    assert rec.gates == 1 and rec.restarts == [] and rec.joins == []
    ups = rec.uploads["@fake/m2"]
    bootstrap = ups[r.BOOTSTRAP_FILE + ".metalseed-new"].decode()
    assert "ETCD_INITIAL_CLUSTER_STATE=new" in bootstrap
    assert "ETCD_INITIAL_CLUSTER=m1=https://10.20.0.11:2380," in bootstrap
    assert "ETCD_NAME=m2" in ups[r.ENV_FILE + ".metalseed-new"].decode()


def test_only_own_keys_are_shipped_and_never_the_ca_key(tmp_path: Path, rec: Recorder) -> None:
    state = run(make_state(tmp_path), d.etcd)
    cluster = cluster_from_inventory(state.inventory)
    store = store_for(cluster)
    ca_key = store.key_path("etcd/ca").read_bytes()
    for name in MASTERS:
        ups = rec.uploads[f"@fake/{name}"]
        assert ca_key not in ups.values()
        others = [m for m in MASTERS if m != name]
        for other in others:
            for kind in ("server", "peer"):
                assert store.key_path(f"etcd/{other}/{kind}").read_bytes() not in ups.values()
        assert ups[r.PKI.key + ".metalseed-new"] == store.key_path(
            f"etcd/{name}/server").read_bytes()
        assert ups[r.PKI.ca + ".metalseed-new"] == store.cert_path("etcd/ca").read_bytes()
    # Keys are created 0600 before their content arrives and moved into place owned by etcd.
    cmds = "\n".join(commands(state, "@fake/m1"))
    # A key is created empty, 0600 and owned by etcd before its content is uploaded into it.
    staged = f"{r.PKI.key}.metalseed-new"
    assert f"install -m 0600 -o etcd -g etcd /dev/null {staged}" in cmds
    assert f"mv -f {staged} {r.PKI.key}" in cmds
    assert cmds.index(f"install -m 0600 -o etcd -g etcd /dev/null {staged}") < cmds.index(
        f"mv -f {staged} {r.PKI.key}")
    assert f"install -d -m 0700 -o etcd -g etcd {cluster.etcd.data_dir}" in cmds


def test_second_run_on_a_converged_cluster_changes_nothing(tmp_path: Path, rec: Recorder) -> None:
    state = run(converged_state(tmp_path), d.etcd)
    assert changed_ops(state) == {}
    assert rec.uploads == {} and rec.restarts == []
    assert rec.gates == 1
    # One fact command and one file check per master: the whole cost of a no-change run.
    assert len(commands(state, "@fake/m1")) == 2


def test_changed_file_restarts_members_one_at_a_time(tmp_path: Path, rec: Recorder) -> None:
    # The masters run files rendered for the default election timeout.
    state = run(converged_state(tmp_path, etcd_election_ms=1000), d.etcd)
    assert sorted(rec.restarts) == ["m1", "m2", "m3"]
    restart_op = next(op for op in state.get_op_order()
                      if "Rolling restart" in next(iter(state.get_op_meta(op).names)))
    assert state.get_op_meta(restart_op).global_arguments["_serial"] is True
    assert set(rec.uploads["@fake/m1"]) == {r.ENV_FILE + ".metalseed-new"}
    assert changed_ops(state)["@fake/m1"] == ["etcd | etcd files (config, unit, certificates)",
                                              "etcd | Rolling restart of etcd (health-gated)"]


def test_a_master_without_data_beside_masters_with_data_must_be_expected(
        tmp_path: Path, rec: Recorder) -> None:
    state = run(converged_state(tmp_path, {"m3": {"data": "no", "active": "inactive"}}), d.etcd)
    assert rec.joins == ["m3"]
    bootstrap = rec.uploads["@fake/m3"][r.BOOTSTRAP_FILE + ".metalseed-new"].decode()
    assert "ETCD_INITIAL_CLUSTER_STATE=existing" in bootstrap
    assert "etcd | Start etcd" in changed_ops(state)["@fake/m3"]
    assert "@fake/m1" not in rec.uploads and rec.restarts == []


def test_tarball_source_is_downloaded_with_its_sha256(tmp_path: Path, rec: Recorder) -> None:
    sha = "0123456789abcdef" * 4
    state = run(make_state(tmp_path, etcd_source="tarball",
                           etcd_tarball_url="https://mirror.internal/etcd-v3.4.23.tar.gz",
                           etcd_tarball_sha256=sha), d.etcd)
    cmds = "\n".join(commands(state, "@fake/m1"))
    tgz = r.tarball_path(cluster_from_inventory(state.inventory))
    assert "apt-get" not in cmds and "systemctl mask" not in cmds
    assert "curl -fsSL --retry 3 -o" in cmds and "https://mirror.internal/etcd-v3.4.23.tar.gz" in cmds
    # Checked before it gets its final name, and unpacked only after that.
    assert cmds.index(f"echo '{sha}  {tgz}.part' | sha256sum -c") < cmds.index("tar -xzf")
    assert "useradd --system" in cmds
    unit = rec.uploads["@fake/m1"][r.UNIT_PATH + ".metalseed-new"].decode()
    assert f"ExecStart=/opt/metalseed/etcd/{sha[:16]}/etcd" in unit


def test_backup_runs_once(tmp_path: Path, rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    taken: list[int] = []
    monkeypatch.setattr(backup, "_take_backup", lambda state, host, cluster, retention:
                        taken.append(retention))
    run(make_state(tmp_path, etcd_backup_retention=3), d.etcd_backup)
    assert taken == [3]
    run(make_state(tmp_path), d.etcd_backup)
    assert taken == [3, 7]  # the playbook's data_defaults
    with pytest.raises(ModelError, match="etcd_backup_retention: found 0"):
        run(make_state(tmp_path, etcd_backup_retention=0), d.etcd_backup)


def test_restore_refuses_without_a_snapshot(tmp_path: Path, rec: Recorder,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DeployError, match="no snapshot"):
        run(make_state(tmp_path, etcd_backup_dir=str(tmp_path / "backups")), d.etcd_restore)


def test_restore_stops_every_master_when_the_precheck_fails(
        tmp_path: Path, rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    snap = tmp_path / "s.db"
    snap.write_bytes(b"x")
    calls = []

    def precheck(cluster: Any, snapshot: Path, force: bool) -> None:
        calls.append(1)
        raise DeployError("etcd still has a quorum")

    monkeypatch.setattr(restore, "_restore_precheck", precheck)
    state = run(make_state(tmp_path, etcd_snapshot=str(snap)), d.etcd_restore)
    assert calls == [1]  # computed once, failed for every master
    assert {h.name for h in state.failed_hosts} == {f"@fake/{n}" for n in MASTERS}
    for name in MASTERS:
        assert not any("snapshot restore" in c for c in commands(state, f"@fake/{name}"))


# ---------------------------------------------------------------------------------------------
# Pure planning


def test_a_converged_master_plans_nothing_and_owner_drift_is_a_chown(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    init_pki(cluster)
    spec = deploy.host_spec(cluster, cluster.masters[0], None)
    st = parse_snapshot(converged_snapshot(spec))
    assert plan(spec, st) == []
    st.stats[r.PKI.key] = (0o600, "root", "root")
    assert plan(spec, st) == [f"chown etcd:etcd {r.PKI.key} && chmod 0600 {r.PKI.key}"]


def _members() -> list[Member]:
    def m(i: int, name: str | None = None, learner: bool = False) -> Member:
        return Member(i, f"m{i}" if name is None else name, (f"https://10.20.0.{10 + i}:2380",),
                      (f"https://10.20.0.{10 + i}:2379",) if name != "" else (), learner)
    return [m(1), m(2), m(3)]


def _cluster(tmp_path: Path, **per_host: dict[str, Any]) -> Any:
    return cluster_from_inventory(make_state(tmp_path, per_host=per_host).inventory)


def healthy(*ids: int) -> set[str]:
    return {f"https://10.20.0.{10 + i}:2379" for i in ids}


def test_replacement_removes_the_dead_member_and_adds_the_new_one(tmp_path: Path) -> None:
    c = _cluster(tmp_path)
    plan = replace.plan_replacement(c, _members(), healthy(1, 3), "m2")
    assert plan.remove is not None and plan.remove.id == 2
    assert plan.already_added is None
    assert plan.initial_cluster == ("m1=https://10.20.0.11:2380,m3=https://10.20.0.13:2380,"
                                    "m2=https://10.20.0.12:2380")


def test_replacement_on_another_machine_with_a_new_name(tmp_path: Path) -> None:
    c = _cluster(tmp_path, m2={"node_name": "m4", "address": "10.20.0.14"})
    plan = replace.plan_replacement(c, _members(), healthy(1, 3), "m4")
    assert plan.remove is not None and plan.remove.name == "m2"
    assert plan.initial_cluster.endswith("m4=https://10.20.0.14:2380")


def test_replacement_refuses_to_remove_a_healthy_member(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="is healthy"):
        replace.plan_replacement(_cluster(tmp_path), _members(), healthy(1, 2, 3), "m2")


def test_replacement_refuses_when_another_member_is_down(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="every remaining member must be healthy"):
        replace.plan_replacement(_cluster(tmp_path), _members(), healthy(1), "m2")


def test_replacement_resumes_after_the_learner_was_added(tmp_path: Path) -> None:
    members = [m for m in _members() if m.id != 2]
    members.append(Member(9, "", ("https://10.20.0.12:2380",), (), True))
    plan = replace.plan_replacement(_cluster(tmp_path), members, healthy(1, 3), "m2")
    assert plan.remove is None
    assert plan.already_added is not None and plan.already_added.id == 9


def test_mirror_source_installs_the_mirrors_etcd_checked_against_its_manifest(
        tmp_path: Path, rec: Recorder) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    sha = {"etcd": "1" * 64, "etcdctl": "2" * 64}
    (mirror / "manifest.json").write_text(json.dumps({"schema": 1, "artifacts": [
        {"name": n, "version": "v3.6.16", "kind": "binary", "path": f"bin/{n}", "sha256": sha[n],
         "size": 1, "source": "built", "component": "etcd"} for n in sha]}))
    state = run(make_state(tmp_path, etcd_source="mirror", mirror_url="http://10.20.0.1:5080",
                           mirror_dir=str(mirror)), d.etcd)
    cmds = "\n".join(commands(state, "@fake/m1"))
    assert "--no-install-recommends etcd-server" not in cmds and "useradd --system" in cmds
    for name in sha:
        assert f"http://10.20.0.1:5080/files/bin/{name}" in cmds
        assert f'if [ "$actual" != {sha[name]} ]' in cmds  # checked before it is installed
    unit = rec.uploads["@fake/m1"][r.UNIT_PATH + ".metalseed-new"].decode()
    assert "ExecStart=/opt/metalseed/etcd/v3.6.16/etcd" in unit
    env = rec.uploads["@fake/m1"][r.ENV_FILE + ".metalseed-new"].decode()
    assert "ETCD_TLS_MIN_VERSION=TLS1.2" in env and "ETCD_ENABLE_V2" not in env


def test_a_rolling_restart_stops_at_its_first_failed_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    # The gate before m2's restart fails: m3's restart and the final gate fail at once with the
    # same reason, without waiting HEALTH_TIMEOUT again for the same cluster.
    from tests.unit.golden_render import lab_cluster

    c = lab_cluster()
    waits: list[str | None] = []

    def unhealthy(cluster: Any, timeout: float = 0, skip: str | None = None) -> None:
        waits.append(skip)
        raise HealthCheckError("m1 (https://10.0.0.11:2379): unreachable")

    monkeypatch.setattr(deploy, "wait_cluster_healthy", unhealthy)
    state: Any = type("RunState", (), {})()
    m2, m3 = c.masters[1], c.masters[2]
    with pytest.raises(HealthCheckError, match=r"stopped before m2.*m1 .*unreachable"):
        deploy._restart_member(state, None, c, m2)  # type: ignore[arg-type]
    with pytest.raises(HealthCheckError, match="not restarting m3: the rolling restart stopped "
                                               "before m2"):
        deploy._restart_member(state, None, c, m3)  # type: ignore[arg-type]
    monkeypatch.setattr(deploy, "current_host", type("H", (), {"state": state})())
    with pytest.raises(HealthCheckError, match="stopped before m2"):
        deploy._all_healthy(c)
    assert waits == ["m2"], "only the first gate waited"
    # Another run (a new state) waits again.
    with pytest.raises(HealthCheckError, match="stopped before m3"):
        deploy._restart_member(type("RunState", (), {})(), None, c, m3)  # type: ignore[arg-type]
    assert waits == ["m2", "m3"]
