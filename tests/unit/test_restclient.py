"""ctl.restclient with httpx.MockTransport: endpoints, errors, concurrency, credentials."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from ctl.config import build
from ctl.errors import RestError
from ctl.model import Member
from ctl.restclient import RestClient

M1 = Member("m1", api_url="http://10.0.0.1:8008/patroni")
M2 = Member("m2", api_url="https://10.0.0.2:8009/patroni")
M3 = Member("m3", api_url="http://10.0.0.3:8010/patroni")


def client(handler, raw: dict | None = None, **kwargs) -> RestClient:
    return RestClient(build(raw or {}), transport=httpx.MockTransport(handler), **kwargs)


def test_get_patroni_uses_the_api_base_of_the_member() -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"patroni": {"version": "4.1.5"}})

    assert client(handler).get_patroni(M2) == {"patroni": {"version": "4.1.5"}}
    assert seen == ["https://10.0.0.2:8009/patroni"]


@pytest.mark.parametrize("response,needle", [
    (httpx.Response(503, json={}), "HTTP 503"),
    (httpx.Response(200, text="<html>"), "did not return JSON"),
    (httpx.Response(200, json=[1, 2]), "expected an object"),
])
def test_bad_answers_become_rest_errors(response: httpx.Response, needle: str) -> None:
    with pytest.raises(RestError, match=needle):
        client(lambda request: response).get_patroni(M1)


def test_transport_errors_and_timeouts_become_rest_errors() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(RestError, match=r"^http://10.0.0.1:8008/patroni: connection refused$"):
        client(refused).get_patroni(M1)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(RestError, match="no answer within 2s"):
        client(slow, timeout=2).get_patroni(M1)
    with pytest.raises(RestError, match="no api_url"):
        client(slow).get_patroni(Member("x"))


def test_map_is_concurrent_keeps_order_and_isolates_failures() -> None:
    active, peak = 0, 0
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        if request.url.port == 8009:
            raise httpx.ConnectError("Connection refused", request=request)
        return httpx.Response(200, json={"port": request.url.port})

    rc = client(handler)
    results = rc.map(rc.get_patroni, [M1, M2, M3])
    assert results[0] == {"port": 8008} and results[2] == {"port": 8010}
    assert isinstance(results[1], RestError)
    assert peak >= 2
    assert rc.map(rc.get_patroni, []) == []


def test_basic_auth_prefers_ctl_then_restapi_and_is_not_sent_on_get() -> None:
    both = {"ctl": {"authentication": {"username": "c", "password": "cp"}},
            "restapi": {"authentication": {"username": "r", "password": "rp"}}}
    assert client(lambda r: httpx.Response(200, json={}), both).basic_auth == ("c", "cp")
    only_rest = {"restapi": {"authentication": {"username": "r", "password": "rp"}}}
    assert client(lambda r: httpx.Response(200, json={}), only_rest).basic_auth == ("r", "rp")
    assert client(lambda r: httpx.Response(200, json={})).basic_auth is None

    def handler(request: httpx.Request) -> httpx.Response:
        assert "authorization" not in request.headers
        return httpx.Response(200, json={})

    client(handler, both).get_patroni(M1)


def test_unsafe_requests_carry_basic_auth() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"auth": request.headers.get("authorization")})

    rc = client(handler, {"ctl": {"authentication": {"username": "u", "password": "p"}}})
    resp = rc._request("POST", M1, "/restart", json_body={}, unsafe=True)
    assert resp.json() == {"auth": "Basic dTpw"}


def test_tls_files_errors_do_not_leak_secrets(tmp_path) -> None:
    rc = RestClient(build({"ctl": {"cacert": str(tmp_path / "nope.pem"), "keyfile_password": "s3cret"}}))
    with pytest.raises(Exception) as exc:
        rc._ssl_context()
    assert "s3cret" not in str(exc.value)
    insecure = RestClient(build({"ctl": {"cacert": str(tmp_path / "nope.pem")}}), insecure=True)
    assert insecure._ssl_context().verify_mode == 0  # ssl.CERT_NONE
