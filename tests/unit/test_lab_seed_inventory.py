"""inventory/lab-seed.py and `lab up --seed`, on a lab state written to a temporary directory
(no machines): the file loads as the pyinfra CLI loads it, with group_data/lab-seed.py."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from metalseed.cli import build_parser
from metalseed.errors import InventoryError, MetalseedError
from metalseed.lab import cli as labcli
from metalseed.lab import plan as planmod
from metalseed.lab import state as st
from metalseed.model import load_cluster

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventory" / "lab-seed.py"


def _write_lab(base: Path, datastore: int, tenant_workers: int = 1) -> None:
    p = planmod.plan_lab("seedy", 3, 2, ipaddress.IPv4Network("10.213.7.0/24"), datastore=datastore,
                         tenant_workers=tenant_workers)
    paths = st.lab_paths("seedy", base)
    st.save(paths, st.state_from_plan(p, paths.key))


@pytest.fixture
def lab_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("METALSEED_LAB_DIR", str(tmp_path))
    monkeypatch.setenv("METALSEED_LAB", "seedy")
    return tmp_path


def test_the_lab_seed_has_acme_and_globex_on_the_default_machines(lab_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    _write_lab(lab_dir, datastore=1)
    monkeypatch.chdir(REPO)
    c = load_cluster(INVENTORY, {"kubernetes": True})
    assert c.name == "seedy"
    assert [n.name for n in c.masters] == ["m1", "m2", "m3"]
    assert [n.name for n in c.workers] == ["w1", "w2"]
    assert c.datastore is not None
    assert c.datastore.client_urls() == ["https://10.213.7.51:2379"]
    assert [(t.name, t.profile) for t in c.tenants] == [("acme", "small"), ("globex", "small")]
    assert dict(c.tenant("acme").labels) == {"team": "payments"}
    assert c.tenant_endpoint("acme") == "acme.seedy.tenants.cluster.local"
    # acme's worker t1 is no seed node.
    assert c.tenant("acme").workers == ("t1",) and not c.tenant("globex").workers
    assert [(n.name, str(n.address)) for n in c.workers_of("acme")] == [("t1", "10.213.7.61")]
    assert "t1" not in {n.name for n in c.nodes}


def test_the_lab_seed_needs_kubernetes_for_its_tenants(lab_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _write_lab(lab_dir, datastore=1)
    monkeypatch.chdir(REPO)
    with pytest.raises(MetalseedError, match="kubernetes = True"):
        load_cluster(INVENTORY)


def test_a_lab_without_a_datastore_is_refused_with_how_to_boot_a_seed(lab_dir: Path) -> None:
    _write_lab(lab_dir, datastore=0)
    with pytest.raises(InventoryError, match=r"no datastore machine.*lab up --name seedy --seed"):
        load_cluster(INVENTORY, {"kubernetes": True})


def test_a_lab_without_a_tenant_worker_is_refused_with_how_to_boot_a_seed(lab_dir: Path) -> None:
    _write_lab(lab_dir, datastore=1, tenant_workers=0)
    with pytest.raises(InventoryError, match=r"no tenant worker.*lab up --name seedy --seed"):
        load_cluster(INVENTORY, {"kubernetes": True})


def test_lab_up_seed_boots_a_datastore_machine_and_a_tenant_worker() -> None:
    args = build_parser().parse_args(["lab", "up", "--seed"])
    assert args.seed and (args.masters, args.workers) == (3, 2)
    assert labcli.seed_datastore(args.datastore) == 1
    assert labcli.seed_datastore(3) == 3
    assert labcli.seed_tenant_workers(args.tenant_workers) == 1
    assert not build_parser().parse_args(["lab", "up"]).seed
