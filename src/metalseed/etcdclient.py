"""The operator-side etcd client: the only module that imports etcd3 (python-etcd3) or talks grpc.

python-etcd3 0.12 carries protobuf code generated for protobuf 3; with a newer protobuf it imports
only under the pure-python protobuf implementation, which must be chosen before protobuf is first
imported -- so this module sets it at import time and must be imported before anything else pulls
protobuf in (nothing else in metalseed does).

python-etcd3 predates learners (etcd 3.4) and reads only the protobuf fields it knows, so the
Cluster and Maintenance.Status calls go over the same grpc channel with a small hand-written codec
for their few messages (see ``_pb_*``). Every grpc / python-etcd3 failure leaves this module as an
:class:`~metalseed.errors.EtcdError` that says which endpoint failed and the likely cause.
"""

from __future__ import annotations

import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
# grpc's C core logs every failed handshake to stderr; we translate those failures ourselves.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import contextlib
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import grpc

from metalseed.errors import EtcdError, HealthCheckError

T = TypeVar("T")

_etcd3: Any = None
_gevent_ready = False
_import_lock = threading.Lock()


def _load_etcd3() -> Any:
    global _etcd3
    with _import_lock:
        if _etcd3 is None:
            try:
                # Its generated protobuf code uses descriptor calls newer protobuf deprecates.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    import etcd3
            except TypeError as e:  # protobuf's "Descriptors cannot be created directly"
                raise EtcdError(
                    "python-etcd3 cannot be imported with this protobuf: something imported "
                    "protobuf before metalseed.etcdclient set "
                    "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python. Import metalseed.etcdclient "
                    f"first, or set that variable in the environment ({e})"
                ) from e
            _etcd3 = etcd3
    return _etcd3


def _prepare_grpc_for_gevent() -> None:
    """grpc's C core blocks gevent's hub (and hangs streams) unless told about gevent; the pyinfra
    CLI monkey-patches with gevent, so a client made inside a pyinfra run needs this -- once,
    before the first channel."""
    global _gevent_ready
    if _gevent_ready:
        return
    try:
        from gevent import monkey
    except ImportError:
        return
    if monkey.is_module_patched("socket"):
        import grpc.experimental.gevent as grpc_gevent

        grpc_gevent.init_gevent()
    _gevent_ready = True


# ---------------------------------------------------------------------------------------------
# Credentials and errors


@dataclass(frozen=True)
class TLSFiles:
    """Files of the operator-side client: the etcd CA and, normally, etcd/healthcheck-client."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def check(self) -> None:
        for what, p in (("CA certificate", self.ca), ("client certificate", self.cert),
                        ("client key", self.key)):
            if p is not None and not Path(p).is_file():
                raise EtcdError(f"etcd {what} {str(p)!r} does not exist (run `metalseed pki init`)")
        if (self.cert is None) != (self.key is None):
            raise EtcdError("etcd client certificate and key must be given together")


def explain(endpoint: str, err: BaseException, client_cert: bool = True) -> str:
    """One line naming the endpoint and the likely cause of a failed call."""
    code = err.code() if isinstance(err, grpc.RpcError) and hasattr(err, "code") else None
    details = ""
    if isinstance(err, grpc.RpcError) and hasattr(err, "details"):
        details = err.details() or ""
    text = (details or str(err) or type(err).__name__).strip()
    low = text.lower()
    plain = endpoint.startswith("http://")
    if "certificate_verify_failed" in low or "certificate verify failed" in low:
        cause = ("the member's certificate is not signed by the CA this client trusts "
                 "(wrong CA file, or the member runs with another cluster's certificate)")
    elif any(s in low for s in ("certificate_required", "certificate required", "unknown_ca",
                                "unknown ca", "bad_certificate", "bad certificate",
                                "tsi_data_corrupted", "certificate_unknown")):
        # Under TLS 1.3 the server checks the client certificate after the client considers
        # the handshake done, so both cases surface as a failed first read.
        cause = ("the member requires a client certificate and none was given" if not client_cert
                 else "the member rejected the client certificate (not signed by the etcd CA)")
    elif plain and "socket closed" in low:
        cause = "the member does not accept plain HTTP (it serves clients over TLS only)"
    elif "handshake" in low or "wrong_version" in low:
        cause = "the TLS handshake failed (plain HTTP endpoint, or no common TLS version/cipher)"
    elif "permission denied" in low:
        cause = "etcd denied the request (authentication or RBAC)"
    elif "in sync with leader" in low:
        cause = "the learner has not caught up with the leader yet"
    elif "learner" in low:
        cause = "the member is a learner, which does not serve this request"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED or "deadline" in low or "timed out" in low:
        cause = "no answer in time (member down, partitioned, or without a leader)"
    elif any(s in low for s in ("connection refused", "failed to connect", "no route", "unreachable",
                                "connect failed", "connection reset", "socket closed")):
        cause = "the member is unreachable (not running, or the network is cut)"
    elif "leader" in low:
        cause = "the member has no leader (election in progress or quorum lost)"
    elif code == grpc.StatusCode.UNAVAILABLE:
        cause = "the member is unavailable"
    else:
        cause = "etcd refused the request"
    return f"{endpoint}: {cause} [{text}]"


# ---------------------------------------------------------------------------------------------
# A minimal protobuf codec for the few etcdserverpb messages python-etcd3 does not know.


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb_field(num: int, value: int | bytes | str | bool) -> bytes:
    if isinstance(value, (bytes, str)):
        data = value.encode() if isinstance(value, str) else value
        return _pb_varint(num << 3 | 2) + _pb_varint(len(data)) + data
    return _pb_varint(num << 3) + _pb_varint(int(value))


def _pb_decode(data: bytes) -> dict[int, list[int | bytes]]:
    """Fields of one message: number -> values (varints as int, length-delimited as bytes)."""
    out: dict[int, list[int | bytes]] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(data):
        key = varint()
        num, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value = varint()
        elif wire == 2:
            n = varint()
            value = data[i:i + n]
            i += n
        elif wire == 1:
            value = int.from_bytes(data[i:i + 8], "little")
            i += 8
        elif wire == 5:
            value = int.from_bytes(data[i:i + 4], "little")
            i += 4
        else:
            raise EtcdError(f"cannot decode etcd response (wire type {wire})")
        out.setdefault(num, []).append(value)
    return out


def _first_int(fields: dict[int, list[int | bytes]], num: int) -> int:
    v = fields.get(num, [0])[0]
    return v if isinstance(v, int) else 0


def _strings(fields: dict[int, list[int | bytes]], num: int) -> list[str]:
    return [v.decode() for v in fields.get(num, []) if isinstance(v, bytes)]


def _messages(fields: dict[int, list[int | bytes]], num: int) -> list[dict[int, list[int | bytes]]]:
    return [_pb_decode(v) for v in fields.get(num, []) if isinstance(v, bytes)]


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool

    @property
    def started(self) -> bool:
        """An added member has no name until it has started and published itself."""
        return bool(self.name)

    @classmethod
    def _from_pb(cls, f: dict[int, list[int | bytes]]) -> Member:
        return cls(
            id=_first_int(f, 1),
            name=(_strings(f, 2) or [""])[0],
            peer_urls=tuple(_strings(f, 3)),
            client_urls=tuple(_strings(f, 4)),
            is_learner=bool(_first_int(f, 5)),
        )


@dataclass(frozen=True)
class Status:
    endpoint: str
    member_id: int
    cluster_id: int
    leader: int
    raft_index: int
    raft_term: int
    revision: int
    version: str
    db_size: int
    is_learner: bool
    errors: tuple[str, ...]

    @classmethod
    def _from_pb(cls, endpoint: str, f: dict[int, list[int | bytes]]) -> Status:
        header = (_messages(f, 1) or [{}])[0]
        return cls(
            endpoint=endpoint,
            cluster_id=_first_int(header, 1),
            member_id=_first_int(header, 2),
            revision=_first_int(header, 3),
            version=(_strings(f, 2) or [""])[0],
            db_size=_first_int(f, 3),
            leader=_first_int(f, 4),
            raft_index=_first_int(f, 5),
            raft_term=_first_int(f, 6),
            errors=tuple(_strings(f, 8)),
            is_learner=bool(_first_int(f, 10)),
        )


@dataclass(frozen=True)
class Health:
    endpoint: str
    healthy: bool
    took: float
    error: str = ""
    status: Status | None = None


@dataclass
class _Conn:
    endpoint: str
    client: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


def _identity(b: bytes) -> bytes:
    return b


# ---------------------------------------------------------------------------------------------


class EtcdClient:
    """Mutual-TLS client for a set of etcd endpoints (``https://10.0.0.11:2379``).

    Requests go to one endpoint at a time; :meth:`put` and :meth:`get` move on to the next
    endpoint when one fails, the others address one endpoint explicitly.
    """

    def __init__(self, endpoints: Sequence[str], tls: TLSFiles | None,
                 timeout: float = 5.0) -> None:
        if not endpoints:
            raise EtcdError("no etcd endpoints given")
        if tls is not None:
            tls.check()
        self.endpoints = list(endpoints)
        self.tls = tls
        self.timeout = timeout
        self._conns: dict[str, _Conn] = {}
        self._preferred = 0

    # -- connections

    def _conn(self, endpoint: str) -> _Conn:
        conn = self._conns.get(endpoint)
        if conn is None:
            _prepare_grpc_for_gevent()
            etcd3 = _load_etcd3()
            u = urlsplit(endpoint)
            if u.hostname is None or u.scheme not in ("http", "https"):
                raise EtcdError(f"{endpoint!r} is not an etcd endpoint URL (https://HOST:PORT)")
            tls = self.tls if u.scheme == "https" else None
            if u.scheme == "https" and tls is None:
                raise EtcdError(f"{endpoint}: an https endpoint needs TLS files")
            options = [
                # Fail fast and come back fast: a member that was down is retried within a
                # quarter second instead of grpc's default backoff of up to two minutes.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.enable_retries", 0),
                ("grpc.keepalive_time_ms", 10000),
            ]
            try:
                client = etcd3.client(
                    host=u.hostname, port=u.port or 2379,
                    ca_cert=str(tls.ca) if tls else None,
                    cert_cert=str(tls.cert) if tls and tls.cert else None,
                    cert_key=str(tls.key) if tls and tls.key else None,
                    timeout=self.timeout, grpc_options=options,
                )
            except (OSError, ValueError) as e:
                raise EtcdError(f"{endpoint}: cannot set up the client: {e}") from e
            conn = self._conns[endpoint] = _Conn(endpoint, client)
        return conn

    def close(self) -> None:
        for conn in self._conns.values():
            # Closing a broken channel must not mask the error that broke it.
            with contextlib.suppress(Exception):
                conn.client.close()
        self._conns.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, endpoint: str, fn: Callable[[Any], T]) -> T:
        conn = self._conn(endpoint)
        try:
            return fn(conn.client)
        except EtcdError:
            raise
        except Exception as e:  # python-etcd3 turns grpc codes into its own exception classes
            cause = e
            if not isinstance(e, grpc.RpcError) and isinstance(e.__context__, grpc.RpcError):
                cause = e.__context__
            has_cert = self.tls is not None and self.tls.cert is not None
            raise EtcdError(explain(endpoint, cause, has_cert)) from None

    def _raw(self, endpoint: str, method: str, request: bytes,
             timeout: float | None = None) -> dict[int, list[int | bytes]]:
        def call(client: Any) -> dict[int, list[int | bytes]]:
            stub = client.channel.unary_unary(
                method, request_serializer=_identity, response_deserializer=_identity)
            return _pb_decode(stub(request, timeout=timeout or self.timeout))

        return self._call(endpoint, call)

    def _failover(self, fn: Callable[[Any], T], timeout: float | None) -> T:
        """Try each endpoint once, starting with the last one that worked."""
        errors = []
        n = len(self.endpoints)
        for k in range(n):
            i = (self._preferred + k) % n
            ep = self.endpoints[i]
            try:
                result = self._call(ep, fn)
            except EtcdError as e:
                errors.append(str(e))
                continue
            self._preferred = i
            return result
        raise EtcdError("every etcd endpoint failed:\n  " + "\n  ".join(errors))

    # -- key/value

    def put(self, key: str, value: str | bytes, timeout: float | None = None) -> int:
        """Write through whichever member answers; returns the revision of the write."""
        t = timeout or self.timeout

        def put(c: Any) -> int:
            req = c._build_put_request(key, value)
            resp = c.kvstub.Put(req, t, credentials=c.call_credentials, metadata=c.metadata)
            return int(resp.header.revision)

        return self._failover(put, t)

    def put_at(self, endpoint: str, key: str, value: str | bytes,
               timeout: float | None = None) -> int:
        t = timeout or self.timeout

        def put(c: Any) -> int:
            req = c._build_put_request(key, value)
            resp = c.kvstub.Put(req, t, credentials=c.call_credentials, metadata=c.metadata)
            return int(resp.header.revision)

        return self._call(endpoint, put)

    def get(self, key: str, endpoint: str | None = None, serializable: bool = False) -> bytes | None:
        """Linearizable read (``serializable=True``: the member's local copy, as a learner can)."""
        def get(c: Any) -> bytes | None:
            value, _meta = c.get(key, serializable=serializable)
            return bytes(value) if value is not None else None

        if endpoint is not None:
            return self._call(endpoint, get)
        return self._failover(get, None)

    def get_prefix(self, prefix: str, endpoint: str | None = None,
                   serializable: bool = False) -> dict[str, bytes]:
        def get(c: Any) -> dict[str, bytes]:
            return {meta.key.decode(): bytes(value)
                    for value, meta in c.get_prefix(prefix, serializable=serializable)}

        if endpoint is not None:
            return self._call(endpoint, get)
        return self._failover(get, None)

    def delete_prefix(self, prefix: str) -> None:
        self._failover(lambda c: c.delete_prefix(prefix), None)

    # -- maintenance

    def status(self, endpoint: str, timeout: float | None = None) -> Status:
        f = self._raw(endpoint, "/etcdserverpb.Maintenance/Status", b"", timeout)
        return Status._from_pb(endpoint, f)

    def alarms(self, endpoint: str) -> list[str]:
        names = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}
        # AlarmRequest{action: GET(0)}: an empty message.
        f = self._raw(endpoint, "/etcdserverpb.Maintenance/Alarm", b"")
        out = []
        for a in _messages(f, 2):
            out.append(f"{names.get(_first_int(a, 2), _first_int(a, 2))} on member "
                       f"{_first_int(a, 1):x}")
        return out

    def health(self, endpoint: str, timeout: float = 2.0) -> Health:
        """Healthy: the member answers Status over mutual TLS, knows a leader, has no alarm and
        (unless it is a learner, which cannot) serves a linearizable read -- the read goes
        through Raft, so it proves the member is in a quorum, not just alive."""
        start = time.monotonic()
        try:
            st = self.status(endpoint, timeout)
            if st.errors:
                raise EtcdError(f"{endpoint}: member reports errors: {'; '.join(st.errors)}")
            if st.leader == 0:
                raise EtcdError(f"{endpoint}: the member has no leader")
            if not st.is_learner:
                def read(c: Any) -> None:
                    req = c._build_get_range_request(b"health", serializable=False)
                    c.kvstub.Range(req, timeout, credentials=c.call_credentials,
                                   metadata=c.metadata)

                self._call(endpoint, read)
            alarms = self.alarms(endpoint)
            if alarms:
                raise EtcdError(f"{endpoint}: alarm raised: {', '.join(alarms)}")
        except EtcdError as e:
            return Health(endpoint, False, time.monotonic() - start, str(e))
        return Health(endpoint, True, time.monotonic() - start, status=st)

    def snapshot(self, endpoint: str, dest: Path) -> int:
        """Stream a snapshot of one member's backend to ``dest``; returns its size in bytes."""
        tmp = dest.with_name(dest.name + ".part")

        def save(c: Any) -> int:
            with open(tmp, "wb") as f:
                c.snapshot(f)
            return tmp.stat().st_size

        try:
            size = self._call(endpoint, save)
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return size

    # -- membership

    def members(self, endpoint: str | None = None) -> list[Member]:
        def call(ep: str) -> list[Member]:
            f = self._raw(ep, "/etcdserverpb.Cluster/MemberList", b"")
            return [Member._from_pb(m) for m in _messages(f, 2)]

        if endpoint is not None:
            return call(endpoint)
        errors = []
        for ep in self._ordered():
            try:
                return call(ep)
            except EtcdError as e:
                errors.append(str(e))
        raise EtcdError("no member answered the member list:\n  " + "\n  ".join(errors))

    def _ordered(self) -> Iterator[str]:
        n = len(self.endpoints)
        for k in range(n):
            yield self.endpoints[(self._preferred + k) % n]

    def _on_any(self, method: str, request: bytes) -> dict[int, list[int | bytes]]:
        errors = []
        for ep in self._ordered():
            try:
                return self._raw(ep, method, request)
            except EtcdError as e:
                errors.append(str(e))
                # A refusal by the cluster (not a connection problem) is final; a learner's
                # is not the cluster's (it serves no member change), so the next member is asked.
                if not any(w in str(e) for w in ("unreachable", "no answer", "learner")):
                    break
        raise EtcdError(f"{method.rsplit('/', 1)[-1]} failed:\n  " + "\n  ".join(errors))

    def add_learner(self, peer_urls: Iterable[str]) -> tuple[Member, list[Member]]:
        """Add a non-voting member: it catches up without counting towards quorum."""
        req = b"".join(_pb_field(1, u) for u in peer_urls) + _pb_field(2, True)
        f = self._on_any("/etcdserverpb.Cluster/MemberAdd", req)
        member = Member._from_pb(_messages(f, 2)[0])
        return member, [Member._from_pb(m) for m in _messages(f, 3)]

    def promote(self, member_id: int) -> list[Member]:
        f = self._on_any("/etcdserverpb.Cluster/MemberPromote", _pb_field(1, member_id))
        return [Member._from_pb(m) for m in _messages(f, 2)]

    def remove(self, member_id: int) -> list[Member]:
        try:
            f = self._on_any("/etcdserverpb.Cluster/MemberRemove", _pb_field(1, member_id))
        except EtcdError as e:
            # A removal that timed out on one member may have been applied all the same; the
            # next member then answers "member not found" (seen at load 40): it is done.
            text = str(e)
            if "no answer" in text and "member not found" in text:
                members = self.members()
                if all(m.id != member_id for m in members):
                    return members
            raise
        return [Member._from_pb(m) for m in _messages(f, 2)]

    # -- health gates

    def cluster_health(self, endpoints: Sequence[str] | None = None,
                       timeout: float = 2.0) -> list[Health]:
        eps = list(endpoints or self.endpoints)
        results: list[Health | None] = [None] * len(eps)

        def check(i: int) -> None:
            results[i] = self.health(eps[i], timeout)

        # One thread per member so that a dead member's timeout is paid once, not per member.
        threads = [threading.Thread(target=check, args=(i,), daemon=True) for i in range(len(eps))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [r for r in results if r is not None]

    def wait_healthy(self, timeout: float = 60.0, endpoints: Sequence[str] | None = None,
                     names: dict[str, str] | None = None, interval: float = 0.25) -> list[Health]:
        """Wait until every endpoint is healthy; else HealthCheckError naming each unhealthy
        member (``names`` maps endpoint -> member name for the message)."""
        deadline = time.monotonic() + timeout
        while True:
            results = self.cluster_health(endpoints, timeout=min(2.0, max(0.5, timeout / 4)))
            bad = [h for h in results if not h.healthy]
            if not bad:
                return results
            if time.monotonic() >= deadline:
                names = names or {}
                lines = [f"{names.get(h.endpoint, h.endpoint)} ({h.endpoint}): {h.error}"
                         for h in bad]
                raise HealthCheckError(
                    f"etcd is not healthy after {timeout:.0f}s; unhealthy member(s):\n  "
                    + "\n  ".join(lines)
                )
            time.sleep(interval * (1 + random.random() / 4))


# ---------------------------------------------------------------------------------------------
# Authentication and RBAC (the tenant datastore): python-etcd3's generated Auth stubs, over the
# same mutual-TLS channel. With --client-cert-auth, etcd takes the user name from the client
# certificate's CN, so no password or token is ever involved.

READ, WRITE, READWRITE = 0, 1, 2
"""authpb.Permission.Type."""


@dataclass(frozen=True)
class Permission:
    type: int
    key: bytes
    range_end: bytes


class AuthClient(EtcdClient):
    """An :class:`EtcdClient` that also reads and changes etcd's users, roles and auth state."""

    def _auth(self, method: str, request: Any) -> Any:
        def call(c: Any) -> Any:
            stub = _load_etcd3().etcdrpc.AuthStub(c.channel)
            return getattr(stub, method)(request, self.timeout)

        return self._failover(call, None)

    def _rpc(self) -> Any:
        return _load_etcd3().etcdrpc

    def auth_enabled(self) -> bool:
        """AuthStatus (etcd >= 3.5; python-etcd3's stubs predate it): field 2 is ``enabled``."""
        def call(c: Any) -> dict[int, list[int | bytes]]:
            stub = c.channel.unary_unary("/etcdserverpb.Auth/AuthStatus",
                                         request_serializer=_identity,
                                         response_deserializer=_identity)
            return _pb_decode(stub(b"", timeout=self.timeout))

        return bool(_first_int(self._failover(call, None), 2))

    def auth_enable(self) -> None:
        self._auth("AuthEnable", self._rpc().AuthEnableRequest())

    def users(self) -> dict[str, list[str]]:
        """Every user and its roles."""
        names = list(self._auth("UserList", self._rpc().AuthUserListRequest()).users)
        return {n: list(self._auth("UserGet", self._rpc().AuthUserGetRequest(name=n)).roles)
                for n in names}

    def roles(self) -> dict[str, list[Permission]]:
        """Every role and its permissions."""
        names = list(self._auth("RoleList", self._rpc().AuthRoleListRequest()).roles)
        out = {}
        for n in names:
            perms = self._auth("RoleGet", self._rpc().AuthRoleGetRequest(role=n)).perm
            out[n] = [Permission(int(p.permType), bytes(p.key), bytes(p.range_end)) for p in perms]
        return out

    def user_add(self, name: str) -> None:
        """A user without a password: it can authenticate only by its client certificate.
        ``options`` (field 3, UserAddOptions{no_password: true}) postdates python-etcd3's
        message, so it is appended to the serialized request."""
        request = (self._rpc().AuthUserAddRequest(name=name).SerializeToString()
                   + _pb_field(3, _pb_field(1, True)))

        def call(c: Any) -> None:
            stub = c.channel.unary_unary("/etcdserverpb.Auth/UserAdd",
                                         request_serializer=_identity,
                                         response_deserializer=_identity)
            stub(request, timeout=self.timeout)

        self._failover(call, None)

    def user_delete(self, name: str) -> None:
        self._auth("UserDelete", self._rpc().AuthUserDeleteRequest(name=name))

    def user_grant_role(self, user: str, role: str) -> None:
        self._auth("UserGrantRole", self._rpc().AuthUserGrantRoleRequest(user=user, role=role))

    def user_revoke_role(self, user: str, role: str) -> None:
        self._auth("UserRevokeRole", self._rpc().AuthUserRevokeRoleRequest(name=user, role=role))

    def role_add(self, name: str) -> None:
        self._auth("RoleAdd", self._rpc().AuthRoleAddRequest(name=name))

    def role_delete(self, name: str) -> None:
        self._auth("RoleDelete", self._rpc().AuthRoleDeleteRequest(role=name))

    def role_grant(self, role: str, perm: Permission) -> None:
        rpc = self._rpc()
        p = rpc.auth_pb2.Permission(permType=perm.type, key=perm.key, range_end=perm.range_end)
        self._auth("RoleGrantPermission", rpc.AuthRoleGrantPermissionRequest(name=role, perm=p))

    def role_revoke(self, role: str, perm: Permission) -> None:
        self._auth("RoleRevokePermission", self._rpc().AuthRoleRevokePermissionRequest(
            role=role, key=perm.key, range_end=perm.range_end))

    def delete_range(self, key: bytes, range_end: bytes) -> int:
        """Delete every key in [key, range_end); returns how many there were."""
        def call(c: Any) -> int:
            req = self._rpc().DeleteRangeRequest(key=key, range_end=range_end)
            resp = c.kvstub.DeleteRange(req, self.timeout, credentials=c.call_credentials,
                                        metadata=c.metadata)
            return int(resp.deleted)

        return self._failover(call, None)

    def count_range(self, key: bytes, range_end: bytes) -> int:
        def call(c: Any) -> int:
            req = self._rpc().RangeRequest(key=key, range_end=range_end, count_only=True)
            resp = c.kvstub.Range(req, self.timeout, credentials=c.call_credentials,
                                  metadata=c.metadata)
            return int(resp.count)

        return self._failover(call, None)

    def range_size(self, key: bytes, range_end: bytes, page: int = 500) -> tuple[int, int]:
        """(keys, bytes of keys and values) in [key, range_end), read ``page`` keys at a time so
        a large range never sits in memory whole (etcd keeps no size per prefix)."""
        keys = size = 0
        start = key
        while True:
            def call(c: Any, start: bytes = start) -> Any:
                req = self._rpc().RangeRequest(key=start, range_end=range_end, limit=page)
                return c.kvstub.Range(req, self.timeout, credentials=c.call_credentials,
                                      metadata=c.metadata)

            resp = self._failover(call, None)
            for kv in resp.kvs:
                keys += 1
                size += len(kv.key) + len(kv.value)
            if not resp.more or not resp.kvs:
                return keys, size
            start = bytes(resp.kvs[-1].key) + b"\0"
