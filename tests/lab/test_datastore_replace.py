"""A three-member tenant datastore loses a member's disk and gets it back without losing quorum:
deploys/datastore-replace-member.py on real etcd (m1 + d1-d3), python-etcd3 as every client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from metalseed import etcdclient  # noqa: F401  (first: it sets up protobuf for python-etcd3)
from metalseed.deploys.datastore import admin_client, datastore, datastore_replace_member
from metalseed.errors import DeployError
from metalseed.etcdprobe import run_deploy
from metalseed.lab import Lab
from metalseed.lab.inventory import pyinfra_inventory
from metalseed.model import Cluster, cluster_from_inventory
from metalseed.render import etcd as r
from tests.lab.labs import TEST_LAB, booted_lab
from tests.lab.test_datastore import denied, tenant

pytestmark = pytest.mark.lab
# Not test_datastore.py's lab name: pyinfra caches a known_hosts file per path for the life of the
# process, and a lab booted again under that name has machines its cache has not seen.
REPLACE_LAB = os.environ.get("METALSEED_TEST_DATASTORE_REPLACE_LAB") or f"{TEST_LAB}d3"
TENANTS = {"acme": {}, "acme2": {}}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with booted_lab(REPLACE_LAB, masters=1, workers=0, datastore=3) as the_lab:
        yield the_lab


def inventory(lab: Lab, **data: Any) -> Any:
    return pyinfra_inventory(lab.require_state(), kubernetes=True, tenants=TENANTS, **data)


def test_a_member_that_lost_its_data_is_replaced_without_losing_quorum(lab: Lab) -> None:
    inv = inventory(lab)
    cluster: Cluster = cluster_from_inventory(inv)
    run_deploy(inv, datastore)
    with admin_client(cluster) as root:
        for i in range(50):
            root.put(f"/acme/k{i}", str(i))
        before = {m.name: m.id for m in root.members()}
    assert sorted(before) == ["d1", "d2", "d3"]

    # d2's disk is gone: etcd stopped, its data directory emptied.
    lab.ssh("d2", f"systemctl stop {r.UNIT_NAME} && rm -rf {cluster.etcd.data_dir}/member",
            check=True)
    # Only a member that is gone is replaced: d3 is healthy, so it is refused.
    with pytest.raises(DeployError):
        run_deploy(inventory(lab, datastore_replace="d3"), datastore_replace_member)

    try:
        result = run_deploy(inventory(lab, datastore_replace="d2"), datastore_replace_member)
    except DeployError as e:
        logs = {n: lab.ssh(n, f"journalctl -u {r.UNIT_NAME} -n 25 --no-pager -o cat").stdout
                for n in ("d1", "d2", "d3")}
        raise AssertionError(f"{e}\n" + "\n".join(f"--- {n}:\n{t}" for n, t in logs.items())) from e
    assert "d2" in result.changed
    with admin_client(cluster) as root:
        health = root.wait_healthy(timeout=60)
        members = {m.name: m for m in root.members()}
        assert len(health) == 3 and all(h.healthy for h in health)
        assert sorted(members) == ["d1", "d2", "d3"]
        assert members["d2"].id != before["d2"] and not members["d2"].is_learner
        assert {n: m.id for n, m in members.items() if n != "d2"} == {
            n: i for n, i in before.items() if n != "d2"}
        assert cluster.datastore is not None
        d2 = r.member_client_url(cluster.datastore_view(), cluster.datastore.members[1])
        # The new member holds the data and the auth state it caught up with.
        assert root.get("/acme/k49", endpoint=d2) == b"49"
        assert root.users()["tenant-acme"] == ["tenant-acme"]
    acme = tenant(cluster, "acme")
    try:
        assert acme.get("/acme/k0")[0] == b"0"
        assert "permission denied" in denied(lambda: acme.get("/acme2/x")).lower()
    finally:
        acme.close()
    # The usual deploy afterwards changes nothing.
    assert run_deploy(inventory(lab), datastore).changed == {}
