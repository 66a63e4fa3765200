"""The operator-side etcd client without a server: codec, error translation, argument checks.
(The same client against real members: tests/lab/test_etcd.py.)"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from metalseed import etcdclient as ec
from metalseed.errors import EtcdError


def test_protobuf_varints_round_trip() -> None:
    for n in (0, 1, 127, 128, 300, 2**32, 2**63 + 5, 2**64 - 1):
        msg = ec._pb_field(1, n)
        assert ec._pb_decode(msg) == {1: [n]}


def test_member_add_request_and_member_decoding() -> None:
    req = ec._pb_field(1, "https://10.0.0.4:2380") + ec._pb_field(2, True)
    assert ec._pb_decode(req) == {1: [b"https://10.0.0.4:2380"], 2: [1]}
    member = (ec._pb_field(1, 2**63 + 7) + ec._pb_field(2, "m4")
              + ec._pb_field(3, "https://10.0.0.4:2380") + ec._pb_field(4, "https://10.0.0.4:2379")
              + ec._pb_field(5, True))
    resp = ec._pb_field(1, ec._pb_field(1, 99)) + ec._pb_field(2, member) + ec._pb_field(3, member)
    f = ec._pb_decode(resp)
    m = ec.Member._from_pb(ec._messages(f, 2)[0])
    assert m == ec.Member(2**63 + 7, "m4", ("https://10.0.0.4:2380",), ("https://10.0.0.4:2379",),
                          True)
    assert m.started


def test_unstarted_member_has_no_name() -> None:
    m = ec.Member._from_pb(ec._pb_decode(ec._pb_field(1, 5) + ec._pb_field(3, "https://x:2380")))
    assert not m.started and not m.is_learner and m.client_urls == ()


def test_status_decoding_reads_fields_python_etcd3_does_not_know() -> None:
    header = ec._pb_field(1, 11) + ec._pb_field(2, 22) + ec._pb_field(3, 33)
    body = (ec._pb_field(1, header) + ec._pb_field(2, "3.4.23") + ec._pb_field(4, 22)
            + ec._pb_field(5, 100) + ec._pb_field(8, "corrupt") + ec._pb_field(10, True))
    st = ec.Status._from_pb("https://a:2379", ec._pb_decode(body))
    assert (st.cluster_id, st.member_id, st.revision, st.leader) == (11, 22, 33, 22)
    assert st.version == "3.4.23" and st.raft_index == 100
    assert st.errors == ("corrupt",) and st.is_learner


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(("details", "cert", "expect"), [
    ("Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED",
     True, "not signed by the CA this client trusts"),
    ("Unwrap failed (TSI_DATA_CORRUPTED)", False, "requires a client certificate and none"),
    ("Unwrap failed (TSI_DATA_CORRUPTED)", True, "rejected the client certificate"),
    ("failed to connect to all addresses; Connection refused", True, "unreachable"),
    ("Deadline Exceeded", True, "no answer in time"),
    ("etcdserver: can only promote a learner member which is in sync with leader", True,
     "not caught up"),
])
def test_failures_are_explained(details: str, cert: bool, expect: str) -> None:
    msg = ec.explain("https://10.0.0.1:2379", FakeRpcError(grpc.StatusCode.UNAVAILABLE, details),
                     cert)
    assert msg.startswith("https://10.0.0.1:2379: ")
    assert expect in msg


def test_plain_http_refusal_is_explained() -> None:
    msg = ec.explain("http://10.0.0.1:2379",
                     FakeRpcError(grpc.StatusCode.UNAVAILABLE, "ipv4:10.0.0.1:2379: Socket closed"))
    assert "does not accept plain HTTP" in msg


def test_missing_files_and_half_credentials_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EtcdError, match=r"CA certificate .* does not exist"):
        ec.EtcdClient(["https://10.0.0.1:2379"], ec.TLSFiles(tmp_path / "ca.crt"))
    (tmp_path / "ca.crt").write_text("x")
    (tmp_path / "c.crt").write_text("x")
    with pytest.raises(EtcdError, match="together"):
        ec.EtcdClient(["https://10.0.0.1:2379"], ec.TLSFiles(tmp_path / "ca.crt", tmp_path / "c.crt"))
    with pytest.raises(EtcdError, match="no etcd endpoints"):
        ec.EtcdClient([], None)


def test_https_endpoint_without_tls_files_is_refused() -> None:
    with ec.EtcdClient(["https://10.0.0.1:2379"], None) as c, pytest.raises(EtcdError,
                                                                           match="needs TLS"):
        c.status("https://10.0.0.1:2379")
