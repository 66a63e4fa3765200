"""Each tenant's keys in the shared datastore etcd: the prefix ``/<name>/`` and the half-open key
range ``[prefix, range_end)`` its etcd role may read and write.

The range end is the prefix with its last byte incremented (etcd's ``GetPrefixRangeEnd``):
``/acme/`` → ``/acme0``, so the role covers exactly the keys that start with ``/acme/``, and never
``/acme2/…`` or any later tenant's keys (Kamaji's roles ended at ``\\0`` until 2024 and covered every
later tenant).
"""

from __future__ import annotations

CA_ID = "datastore/ca"
"""Store id of the datastore's CA: ``pki/<seed>/datastore/ca.crt`` (what a tenant's API server
trusts is its bundle, ``datastore/ca-bundle.crt``, which also holds a CA being rotated in)."""
CA_BUNDLE_ID = "datastore/ca-bundle"
ROOT_CLIENT_ID = "datastore/root"
"""metalseed's own administration certificate (CN ``root``, etcd's superuser)."""
USER_PREFIX = "tenant-"
"""Every tenant's etcd user and role is ``tenant-<name>``: never a name of etcd's own (a tenant
called ``root`` must not become etcd's superuser), and metalseed manages exactly the users and roles
with this prefix, so ``root`` is never touched by a convergence."""


def user(tenant: str) -> str:
    """The tenant's etcd user name, role name and client certificate CN."""
    return f"{USER_PREFIX}{tenant}"


def client_id(tenant: str) -> str:
    """Store id of the tenant's datastore client pair:
    ``pki/<seed>/tenants/<name>/datastore-client.crt`` and ``.key``."""
    return f"tenants/{tenant}/datastore-client"


def etcd_prefix(tenant: str) -> str:
    """The tenant kube-apiserver's ``--etcd-prefix``: its keys are then ``/<name>/...``."""
    return f"/{tenant}"


def prefix(tenant: str) -> bytes:
    return f"/{tenant}/".encode()


def range_end(key_prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``key_prefix``.

    Trailing 0xff bytes cannot be incremented: they are dropped and the byte before them is
    incremented; an all-0xff (or empty) prefix has no end, which etcd writes as ``b"\\0"``.
    """
    key = bytearray(key_prefix)
    while key and key[-1] == 0xFF:
        key.pop()
    if not key:
        return b"\0"
    key[-1] += 1
    return bytes(key)


def covers(key_prefix: bytes, key: bytes) -> bool:
    """Whether the role range of ``key_prefix`` includes ``key`` (what etcd's check does)."""
    end = range_end(key_prefix)
    return key_prefix <= key and (end == b"\0" or key < end)
