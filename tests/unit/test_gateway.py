"""The pure parts of ctl.dcs.gateway, gateway_transport and httpconn: request building and response parsing.

Network behaviour is in tests/integration/test_views.py.
"""

from __future__ import annotations

import socket

import pytest

from ctl.config import EtcdSettings
from ctl.dcs import gateway_transport
from ctl.dcs.gateway import EtcdGateway, b64, parse_range_response, unb64
from ctl.dcs.httpconn import HttpConnection, HttpError
from ctl.errors import ConfigError, DcsError
from tests.support.patroni_dumps import load_range_json

SETTINGS = EtcdSettings(hosts=(("127.0.0.1", 2379), ("127.0.0.2", 2380)))


def test_base64_round_trip() -> None:
    assert b64("/service/demo/") == "L3NlcnZpY2UvZGVtby8="
    assert unb64(b64("ünï")) == "ünï" and unb64(None) == "" and unb64("") == ""


def test_parse_range_response_of_a_real_gateway_answer() -> None:
    kvs, revision = parse_range_response(load_range_json())
    assert revision == 41 and len(kvs) == 7
    leader = next(kv for kv in kvs if kv.key == "/service/demo/leader")
    assert leader.value == "node1" and leader.lease == 8252743046955289862 and leader.mod_revision == 8
    config = next(kv for kv in kvs if kv.key.endswith("/config"))
    assert config.lease is None and config.create_revision == 7
    assert parse_range_response({"header": {"revision": "5"}}) == ([], 5)  # no kvs key when nothing matched


def test_compare_targets() -> None:
    assert EtcdGateway._compare("/k", 12, False) == [
        {"key": b64("/k"), "target": "MOD", "mod_revision": "12", "result": "EQUAL"}]
    assert EtcdGateway._compare("/k", None, True) == [
        {"key": b64("/k"), "target": "CREATE", "create_revision": "0", "result": "EQUAL"}]
    assert EtcdGateway._compare("/k", None, False) == []


@pytest.mark.parametrize("timeout", [0, -1, 10.5, 60])
def test_timeout_is_bounded(timeout: float) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        EtcdGateway(SETTINGS, timeout=timeout)


def test_endpoints_and_refusing_to_delete_everything() -> None:
    g = EtcdGateway(SETTINGS, timeout=10)
    assert g.endpoints == ("http://127.0.0.1:2379", "http://127.0.0.2:2380")
    with pytest.raises(DcsError, match="whole keyspace"):
        g.delete_prefix("/")


def test_tls_context_uses_the_configured_ca_not_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "does-not-exist.pem"))
    s = EtcdSettings(hosts=(("h", 2379),), protocol="https", cacert=str(tmp_path / "missing-ca.pem"))
    with pytest.raises(ConfigError, match="missing-ca.pem"):
        EtcdGateway(s)
    ok = EtcdGateway(EtcdSettings(hosts=(("h", 2379),), protocol="https"))  # system store, env ignored
    assert ok._transport.ssl_context is not None


def test_transport_errors_are_described_briefly() -> None:
    describe, refusal = gateway_transport._describe_transport, gateway_transport._describe_refusal
    assert describe(socket.timeout()) == "timed out"
    assert describe(ConnectionRefusedError(111, "Connection refused")) == "connection refused"
    assert refusal("etcdserver: user name is empty").startswith("authentication is enabled")
    assert refusal("etcdserver: permission denied") == "permission denied"


def _answer(raw: bytes) -> tuple[int, bytes, HttpConnection]:
    """Feed a canned HTTP answer through a socketpair (no network) and read it with the gateway's client."""
    ours, theirs = socket.socketpair()
    conn = HttpConnection("127.0.0.1", 2379)
    conn.sock = ours
    theirs.sendall(raw)
    theirs.shutdown(socket.SHUT_WR)
    import time

    try:
        status, body = conn.post("/v3/kv/range", b"{}", {}, time.monotonic() + 2)
        request = theirs.recv(65536)
    finally:
        theirs.close()
    assert request.startswith(b"POST /v3/kv/range HTTP/1.1\r\nHost: 127.0.0.1:2379\r\nContent-Length: 2\r\n")
    return status, body, conn


def test_http_client_reads_chunked_answers_with_trailers() -> None:
    raw = (b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
           b"Trailer: Grpc-Trailer-Content-Type\r\n\r\n5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n"
           b"Grpc-Trailer-Content-Type: application/grpc\r\n\r\n")
    status, body, conn = _answer(raw)
    assert (status, body) == (401, b'{"a": 1}')
    assert conn.sock is not None  # kept alive for the next request
    conn.close()


def test_http_client_content_length_and_close_delimited_bodies() -> None:
    status, body, conn = _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{}\r\nEXTRA")
    assert (status, body) == (200, b"{}\r\n")
    conn.close()
    status, body, conn = _answer(b"HTTP/1.0 200 OK\r\n\r\n{\"x\": 1}")
    assert (status, body) == (200, b'{"x": 1}') and conn.sock is None  # HTTP/1.0: not kept alive


def test_http_client_rejects_garbage() -> None:
    with pytest.raises(HttpError, match="not an HTTP answer"):
        _answer(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    with pytest.raises(HttpError, match="closed in the middle"):
        _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{}")
