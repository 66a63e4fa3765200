"""inventory/lab.py data, inventory/vagrant.py and the Vagrantfile, without machines."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metalseed.errors import LabError
from metalseed.lab import inventory as inv
from metalseed.lab import plan as planmod
from metalseed.lab import state as st
from metalseed.model import KNOWN_KEYS, cluster_from_inventory, is_foreign_key

REPO = Path(__file__).resolve().parents[2]


def sample() -> st.LabState:
    p = planmod.plan_lab("lab", 3, 2, ipaddress.IPv4Network("10.213.7.0/24"))
    return st.state_from_plan(p, Path("/var/lib/metalseed/lab/lab/id_ed25519"))


def test_groups_use_only_keys_the_model_knows() -> None:
    g = inv.groups(sample())
    keys = set(g["all"][1])
    for _name, data in g["masters"] + g["workers"]:
        keys |= set(data)
    assert all(k in KNOWN_KEYS or is_foreign_key(k) for k in keys), keys


def test_groups_build_a_valid_cluster() -> None:
    cluster = cluster_from_inventory(inv.pyinfra_inventory(sample()))
    assert cluster.name == "lab"
    assert str(cluster.vip) == "10.213.7.250"
    assert cluster.vip_interface == "eth0"
    assert str(cluster.node_network) == "10.213.7.0/24"
    assert [n.name for n in cluster.masters] == ["m1", "m2", "m3"]
    assert [str(n.address) for n in cluster.workers] == ["10.213.7.21", "10.213.7.22"]


def test_host_data_points_ssh_at_the_lab_key() -> None:
    s = sample()
    name, data = inv.groups(s)["masters"][0]
    assert name == "m1"
    assert data == {
        "ssh_hostname": "10.213.7.11",
        "ssh_user": "root",
        "ssh_key": "/var/lib/metalseed/lab/lab/id_ed25519",
        "ssh_known_hosts_file": "/var/lib/metalseed/lab/lab/known_hosts",
        "ssh_strict_host_key_checking": "yes",
    }


def test_a_lab_that_is_not_up_says_how_to_start_it(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"lab 'nope' is not up.*metalseed lab up --name nope"):
        inv.load_groups("nope", tmp_path)


def test_lab_name_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(inv.ENV_LAB, raising=False)
    assert inv.lab_name_from_env() == "lab"
    monkeypatch.setenv(inv.ENV_LAB, "test")
    assert inv.lab_name_from_env() == "test"


# In a fresh interpreter, so the inventory file's code runs apart from this test process.
VAGRANT_PROBE = """
import ipaddress, json, sys
from metalseed.model import load_cluster
c = load_cluster(sys.argv[1])
print(json.dumps({"nodes": {n.name: [str(n.address), n.role] for n in c.nodes},
                  "vip_in_network": ipaddress.ip_address(c.vip) in c.node_network,
                  "vip_interface": c.vip_interface}))
"""


def test_vagrant_inventory_matches_the_vagrantfile() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", VAGRANT_PROBE, str(REPO / "inventory" / "vagrant.py")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    cluster = json.loads(proc.stdout)
    text = (REPO / "vagrant" / "Vagrantfile").read_text()
    network = re.search(r'NETWORK = "([\d.]+)"', text)
    assert network
    machines = dict(re.findall(r'"([mw]\d)" => (\d+)', text))
    assert cluster["nodes"] == {
        name: [f"{network.group(1)}.{host}", "master" if name[0] == "m" else "worker"]
        for name, host in machines.items()
    }
    assert list(cluster["nodes"]) == ["m1", "m2", "m3", "w1", "w2"]
    assert cluster["vip_in_network"]
    assert cluster["vip_interface"] == "eth1"
    for provider in ("virtualbox", "libvirt"):
        assert f'config.vm.provider "{provider}"' in text


@pytest.mark.skipif(not shutil.which("ruby"), reason="ruby is not installed")
def test_vagrantfile_syntax() -> None:
    proc = subprocess.run(["ruby", "-c", str(REPO / "vagrant" / "Vagrantfile")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Syntax OK" in proc.stdout


def test_datastore_machines_form_the_datastore_group() -> None:
    p = planmod.plan_lab("lab", 1, 0, ipaddress.IPv4Network("10.213.7.0/24"), datastore=1)
    s = st.state_from_plan(p, Path("/var/lib/metalseed/lab/lab/id_ed25519"))
    assert [(m.name, m.role, str(m.address)) for m in p.datastore] == [
        ("d1", "datastore", "10.213.7.51")]
    assert planmod.machine_role("d1") == "datastore"
    assert planmod.netns_pattern("lab").match(p.datastore[0].netns)
    assert planmod.veth_pattern("lab").match(p.datastore[0].veth)
    g = inv.groups(s)
    assert [n for n, _ in g["datastore"]] == ["d1"] and "d1" in g["all"][0]
    cluster = cluster_from_inventory(inv.pyinfra_inventory(s))
    assert cluster.datastore is not None
    assert cluster.datastore.client_urls() == ["https://10.213.7.51:2379"]
    assert [n.name for n in cluster.nodes] == ["m1"]
    # The default lab has no datastore group at all.
    assert "datastore" not in inv.groups(sample())
    assert cluster_from_inventory(inv.pyinfra_inventory(sample())).datastore is None
    with pytest.raises(LabError, match="datastore"):
        planmod.plan_lab("lab", 1, 0, datastore=6)
