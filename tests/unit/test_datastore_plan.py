"""plan_tenants: the steps that make the datastore's auth match the tenants of the data."""

from __future__ import annotations

from metalseed.deploys.datastore import Step, plan_tenants, tenant_permission
from metalseed.etcdclient import READ, READWRITE, Permission


def methods(steps: list[Step]) -> list[tuple[object, ...]]:
    return [(s.method, *s.args) for s in steps]


def converged(*tenants: str) -> tuple[dict[str, list[str]], dict[str, list[Permission]]]:
    users = {"root": ["root"], **{f"tenant-{t}": [f"tenant-{t}"] for t in tenants}}
    roles = {f"tenant-{t}": [tenant_permission(t)] for t in tenants}
    return users, roles


def test_permission_is_exactly_the_prefix() -> None:
    assert tenant_permission("acme") == Permission(READWRITE, b"/acme/", b"/acme0")


def test_fresh_datastore_gets_root_auth_then_tenants() -> None:
    steps = plan_tenants(["globex", "acme"], False, {}, {})
    assert methods(steps) == [
        ("user_add", "root"), ("user_grant_role", "root", "root"), ("auth_enable",),
        ("role_add", "tenant-acme"), ("role_grant", "tenant-acme", tenant_permission("acme")),
        ("user_add", "tenant-acme"), ("user_grant_role", "tenant-acme", "tenant-acme"),
        ("role_add", "tenant-globex"),
        ("role_grant", "tenant-globex", tenant_permission("globex")),
        ("user_add", "tenant-globex"), ("user_grant_role", "tenant-globex", "tenant-globex"),
    ]


def test_converged_datastore_needs_nothing() -> None:
    users, roles = converged("acme", "acme2")
    assert plan_tenants(["acme2", "acme"], True, users, roles) == []


def test_a_wrong_permission_is_replaced_and_a_stray_role_revoked() -> None:
    users, roles = converged("acme")
    kamaji = Permission(READWRITE, b"/acme/", b"\0")  # every later key
    roles["tenant-acme"] = [kamaji, Permission(READ, b"/", b"\0")]
    users["tenant-acme"] = ["tenant-acme", "tenant-other"]
    users["tenant-other"] = []
    roles["tenant-other"] = []
    steps = methods(plan_tenants(["acme", "other"], True, users, roles))
    assert steps == [
        ("role_revoke", "tenant-acme", kamaji),
        ("role_revoke", "tenant-acme", Permission(READ, b"/", b"\0")),
        ("role_grant", "tenant-acme", tenant_permission("acme")),
        ("user_revoke_role", "tenant-acme", "tenant-other"),
        ("role_grant", "tenant-other", tenant_permission("other")),
        ("user_grant_role", "tenant-other", "tenant-other"),
    ]


def test_a_removed_tenant_is_revoked_emptied_then_deleted() -> None:
    users, roles = converged("acme", "globex")
    steps = methods(plan_tenants(["acme"], True, users, roles))
    assert steps == [
        ("user_revoke_role", "tenant-globex", "tenant-globex"),
        ("delete_range", b"/globex/", b"/globex0"),
        ("role_delete", "tenant-globex"),
        ("user_delete", "tenant-globex"),
    ]


def test_users_and_roles_not_ours_are_never_touched() -> None:
    users, roles = converged()
    users["operator"] = ["reader"]
    roles["reader"] = [Permission(READ, b"/", b"\0")]
    assert plan_tenants([], True, users, roles) == []


def test_a_tenant_named_root_is_not_etcds_root() -> None:
    users, roles = converged()
    steps = methods(plan_tenants(["root"], True, users, roles))
    assert ("user_add", "tenant-root") in steps and ("user_add", "root") not in steps


def test_datastore_backups_land_beside_the_seeds_not_among_them() -> None:
    from pathlib import Path

    from metalseed.deploys.etcd.backup import backup_dir
    from metalseed.model import _HostInput, build_cluster

    base = {"cluster_name": "seed", "node_network": "10.20.0.0/24", "vip": "10.20.0.10"}
    c = build_cluster([_HostInput("m1", ("masters",), {**base, "ssh_hostname": "10.20.0.11"}),
                       _HostInput("d1", ("datastore",), {**base, "ssh_hostname": "10.20.0.51"})])
    assert backup_dir(c) == Path("backups/seed")
    assert backup_dir(c.datastore_view()) == Path("backups/seed/datastore")


def test_the_datastore_ca_is_refused_by_the_ca_rotation() -> None:
    import pytest

    from metalseed.deploys.rotation import check_ca
    from metalseed.errors import ModelError
    from metalseed.model import _HostInput, build_cluster

    base = {"cluster_name": "seed", "node_network": "10.20.0.0/24", "vip": "10.20.0.10"}
    c = build_cluster([_HostInput("m1", ("masters",), {**base, "ssh_hostname": "10.20.0.11"}),
                       _HostInput("d1", ("datastore",), {**base, "ssh_hostname": "10.20.0.51"})])
    check_ca(c, ("etcd/ca",))
    with pytest.raises(ModelError, match="cannot be rotated yet"):
        check_ca(c, ("etcd/ca", "datastore/ca"))


def test_datastore_replace_names_a_datastore_member() -> None:
    import pytest

    from metalseed.deploys.datastore import REPLACE_DEFAULTS
    from metalseed.errors import ModelError
    from metalseed.model import _HostInput, build_cluster, playbook_inputs

    base = {"cluster_name": "seed", "node_network": "10.20.0.0/24", "vip": "10.20.0.10"}
    c = build_cluster([_HostInput("m1", ("masters",), {**base, "ssh_hostname": "10.20.0.11"})]
                      + [_HostInput(f"d{i}", ("datastore",),
                                    {**base, "ssh_hostname": f"10.20.0.{50 + i}"})
                         for i in (1, 2, 3)])
    assert playbook_inputs(c, {"datastore_replace": "d2"}, REPLACE_DEFAULTS) == {
        "datastore_replace": "d2"}
    for wrong in ({"datastore_replace": "m1"}, {}):
        with pytest.raises(ModelError, match="d1, d2, d3"):
            playbook_inputs(c, wrong, REPLACE_DEFAULTS)
