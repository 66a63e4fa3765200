"""The tenant datastore: its etcd cluster (the etcd deploy, on the ``datastore`` group),
authentication, and each tenant's etcd user and role.  (``deploys/datastore.py``)

Administration goes over python-etcd3's generated Auth stubs on the operator's machine, over mutual
TLS with the store's ``datastore/root`` certificate (CN ``root``: etcd takes the user name from the
client certificate's CN under ``--client-cert-auth``), like every other etcd call metalseed makes:
no etcdctl output to parse, no credentials on a command line, and one client for the health gates,
the permissions and the key deletions.

:func:`plan_tenants` is pure: from what the datastore holds (auth state, users with their roles,
roles with their permissions) and the tenant names of the data, the steps that make them match,
in order. Metalseed manages the users and roles named ``tenant-<name>`` and the ``root`` user; it
never touches any other user or role.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pyinfra import host as current_host
from pyinfra import logger
from pyinfra.api import FunctionCommand, deploy, operation

from metalseed.deploys.etcd.backup import DEFAULTS as BACKUP_DEFAULTS
from metalseed.deploys.etcd.backup import backup
from metalseed.deploys.etcd.common import tls_files
from metalseed.deploys.etcd.deploy import converge_etcd
from metalseed.deploys.etcd.replace import replace_member
from metalseed.deploys.etcd.restore import DEFAULTS as RESTORE_DEFAULTS
from metalseed.deploys.etcd.restore import restore
from metalseed.deploys.gates import shared
from metalseed.errors import EtcdError
from metalseed.etcdclient import READWRITE, AuthClient, Permission
from metalseed.model import DATASTORE_ROOT_USER, Cluster, cluster_from_inventory, playbook_inputs
from metalseed.tenants import datastore as ds

T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    """One change to the datastore: ``method(*args)`` of :class:`AuthClient`."""

    what: str
    method: str
    args: tuple[Any, ...] = ()


def tenant_permission(tenant: str) -> Permission:
    """READWRITE on exactly [``/<name>/``, its range end)."""
    key = ds.prefix(tenant)
    return Permission(READWRITE, key, ds.range_end(key))


def _managed(name: str) -> bool:
    return name.startswith(ds.USER_PREFIX)


def plan_tenants(tenants: Iterable[str], auth_enabled: bool, users: dict[str, list[str]],
                 roles: dict[str, list[Permission]]) -> list[Step]:
    """The steps that make the datastore's auth match ``tenants``; none when it does."""
    steps: list[Step] = []
    root = DATASTORE_ROOT_USER
    if root not in users:
        steps.append(Step(f"add user {root} (no password: its certificate authenticates it)",
                          "user_add", (root,)))
    if root not in users.get(root, []):
        # etcd's root role is built in: it is granted, never added.
        steps.append(Step(f"grant role {root} to user {root}", "user_grant_role", (root, root)))
    if not auth_enabled:
        steps.append(Step("enable authentication", "auth_enable"))

    wanted = {ds.user(t): t for t in tenants}
    for name, tenant in sorted(wanted.items()):
        perm = tenant_permission(tenant)
        steps += _exactly("role", name, roles.get(name), perm, _describe,
                          grant="role_grant", revoke="role_revoke")
        steps += _exactly("user", name, users.get(name), name, lambda r: f"role {r}",
                          grant="user_grant_role", revoke="user_revoke_role")

    gone = sorted({n for n in (*users, *roles) if _managed(n) and n not in wanted})
    for name in gone:
        tenant = name[len(ds.USER_PREFIX):]
        key = ds.prefix(tenant)
        # The order Kamaji settled on: nothing can write under the prefix once the role is off
        # the user, so the deletion leaves it empty; then the role and the user.
        for r in users.get(name, []):
            steps.append(Step(f"revoke role {r} from user {name}", "user_revoke_role", (name, r)))
        steps.append(Step(f"delete every key under {key.decode()}", "delete_range",
                          (key, ds.range_end(key))))
        if name in roles:
            steps.append(Step(f"delete role {name}", "role_delete", (name,)))
        if name in users:
            steps.append(Step(f"delete user {name}", "user_delete", (name,)))
    return steps


def _exactly(kind: str, name: str, have: list[T] | None, want: T, describe: Callable[[T], str],
             grant: str, revoke: str) -> list[Step]:
    """Steps that leave role or user ``name`` existing and holding exactly ``want`` (a role's
    one permission, a user's one role): added if missing, anything else revoked."""
    steps = []
    if have is None:
        steps.append(Step(f"add {kind} {name}", f"{kind}_add", (name,)))
        have = []
    for x in have:
        if x != want:
            steps.append(Step(f"revoke {describe(x)} from {kind} {name}", revoke, (name, x)))
    if want not in have:
        steps.append(Step(f"grant {describe(want)} to {kind} {name}", grant, (name, want)))
    return steps


def _describe(p: Permission) -> str:
    kind = {0: "READ", 1: "WRITE", 2: "READWRITE"}.get(p.type, str(p.type))
    return f"{kind} [{p.key.decode(errors='replace')}, {p.range_end.decode(errors='replace')})"


def admin_client(cluster: Cluster, timeout: float = 15.0) -> AuthClient:
    """The datastore's root client (``datastore/root`` over mutual TLS). 15 s per call: a TLS
    handshake alone was seen to take over 5 s at a load average of 13 on two cores."""
    view = cluster.datastore_view()
    return AuthClient(_urls(cluster), tls_files(view), timeout=timeout)


def _urls(cluster: Cluster) -> list[str]:
    assert cluster.datastore is not None
    return cluster.datastore.client_urls()


def apply(client: AuthClient, steps: Sequence[Step]) -> list[str]:
    """Run ``steps`` in order; returns what each did (``delete_range`` with its key count)."""
    done = []
    for s in steps:
        result = getattr(client, s.method)(*s.args)
        done.append(f"{s.what} ({result} deleted)" if s.method == "delete_range" else s.what)
    return done


def converge_tenants(cluster: Cluster, tenants: Iterable[str] | None = None) -> list[str]:
    """Make the datastore's users, roles and permissions match the tenants (those of the model
    unless ``tenants`` names others); returns what changed, empty when nothing did."""
    names = [t.name for t in cluster.tenants] if tenants is None else list(tenants)
    with admin_client(cluster) as c:
        steps = plan_tenants(names, c.auth_enabled(), c.users(), c.roles())
        return apply(c, steps)


@dataclass(frozen=True)
class TenantUsage:
    keys: int
    bytes: int
    """Keys and values under the tenant's prefix (not etcd's on-disk size, which it keeps only
    for the whole datastore)."""


def tenant_usage(cluster: Cluster, tenants: Iterable[str] | None = None
                 ) -> dict[str, TenantUsage]:
    """What each tenant holds in the datastore (for ``tenants status``), read as root."""
    names = [t.name for t in cluster.tenants] if tenants is None else list(tenants)
    out = {}
    with admin_client(cluster) as c:
        for name in names:
            key = ds.prefix(name)
            out[name] = TenantUsage(*c.range_size(key, ds.range_end(key)))
    return out


PENDING_TIMEOUT = 90.0


def _pending(cluster: Cluster) -> list[Step]:
    """The steps, from reads alone, retried until PENDING_TIMEOUT: on the lab seed with a client
    writing through a tenant's API (so into the datastore), the first TLS handshake with d1 was
    seen to miss the client's 15 s twice at load 30-60 ('Handshake read failed'), while the same
    run's later calls succeeded. A read is safe to repeat; the last error is raised."""
    names = [t.name for t in cluster.tenants]
    deadline = time.monotonic() + PENDING_TIMEOUT
    with admin_client(cluster) as c:
        while True:
            try:
                return plan_tenants(names, c.auth_enabled(), c.users(), c.roles())
            except EtcdError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)


def _apply_and_report(cluster: Cluster) -> None:
    for line in converge_tenants(cluster):
        logger.info(f"datastore: {line}")


TENANT_ACCESS_OP = "datastore: authentication, tenant users and roles"


@operation()
def tenant_access(cluster: Cluster) -> Generator[Any, None, None]:
    """Authentication and the tenants' users and roles, decided when the run executes (the
    datastore may not exist while it is prepared): a change only when a step is pending."""
    if not current_host.state.is_executing:
        return
    pending = shared(current_host.state, "datastore-pending", lambda: _pending(cluster))
    if pending:
        yield FunctionCommand(lambda *_a: _apply_and_report(cluster), (), {})


@deploy("Tenant datastore")
def datastore() -> None:
    """The datastore's etcd on its members, health-gated; then, once, its tenants' access."""
    cluster = cluster_from_inventory(current_host.inventory)
    if cluster.datastore is None or not cluster.is_datastore_host(current_host.name):
        return
    converge_etcd(cluster.datastore_view(), cluster)
    tenant_access(name=TENANT_ACCESS_OP, cluster=cluster, _run_once=True)



@deploy("Tenant datastore backup", data_defaults=BACKUP_DEFAULTS)
def datastore_backup() -> None:
    """A consistent snapshot of the datastore from one healthy member (a follower when there is
    one), fetched to ``<etcd_backup_dir>/<seed>/datastore/`` with its manifest; keeps the newest
    ``etcd_backup_retention``."""
    cluster = cluster_from_inventory(current_host.inventory)
    inputs = playbook_inputs(cluster, current_host.data, BACKUP_DEFAULTS)
    if cluster.datastore is None or not cluster.is_datastore_host(current_host.name):
        return
    backup(cluster.datastore_view(), inputs)


@deploy("Tenant datastore restore", data_defaults=RESTORE_DEFAULTS)
def datastore_restore() -> None:
    """Rebuild every datastore member from one snapshot (the newest in
    ``<etcd_backup_dir>/<seed>/datastore/`` by default; refused while a quorum is healthy unless
    ``etcd_restore_force``), then make the restored users and roles match the tenants of the data
    again: the snapshot holds the auth state as it was when it was taken."""
    cluster = cluster_from_inventory(current_host.inventory)
    inputs = playbook_inputs(cluster, current_host.data, RESTORE_DEFAULTS)
    if cluster.datastore is None or not cluster.is_datastore_host(current_host.name):
        return
    restore(cluster.datastore_view(), cluster, inputs)
    tenant_access(name=TENANT_ACCESS_OP, cluster=cluster, _run_once=True)


REPLACE_DEFAULTS = {"datastore_replace": None}
"""The replacement playbook's input: the name of the datastore member to replace; required."""


@deploy("Tenant datastore replace member", data_defaults=REPLACE_DEFAULTS)
def datastore_replace_member() -> None:
    """Bring datastore member ``datastore_replace`` up on the machine the inventory now gives it
    (a fresh one, or the same one after it lost its data) without losing quorum: the old member
    removed, the new one added as a learner, started, promoted once it caught up (the auth state
    comes with the data)."""
    cluster = cluster_from_inventory(current_host.inventory)
    name = playbook_inputs(cluster, current_host.data, REPLACE_DEFAULTS)["datastore_replace"]
    if cluster.datastore is None or not cluster.is_datastore_host(current_host.name):
        return
    replace_member(cluster.datastore_view(), cluster, name)
