"""The RestClient methods of the unsafe endpoints, with httpx.MockTransport: paths, bodies, credentials, and the
difference between "not sent" (RestUnreachable, safe to fall back) and "sent, no answer" (RestError)."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from ctl.config import build
from ctl.errors import RestError
from ctl.model import Member
from ctl.restclient import RestAnswer, RestClient, RestUnreachable

M = Member("node1", api_url="http://10.0.0.1:8008/patroni")


def client(handler, raw: dict | None = None) -> RestClient:
    return RestClient(build(raw or {}), transport=httpx.MockTransport(handler))


def recorder(response: httpx.Response | None = None):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return response or httpx.Response(200, text="ok")

    return seen, handler


@pytest.mark.parametrize("call,method,path,body", [
    (lambda c: c.post_switchover(M, "node1", "node2"), "POST", "/switchover", {"leader": "node1",
                                                                               "candidate": "node2"}),
    (lambda c: c.post_switchover(M, "node1", None, "2030-01-01T00:00:00+00:00"), "POST", "/switchover",
     {"leader": "node1", "candidate": None, "scheduled_at": "2030-01-01T00:00:00+00:00"}),
    (lambda c: c.post_failover(M, "node3"), "POST", "/failover", {"candidate": "node3"}),
    (lambda c: c.post_failover(M, "node3", leader="node1"), "POST", "/failover", {"candidate": "node3",
                                                                                  "leader": "node1"}),
    (lambda c: c.delete_switchover(M), "DELETE", "/switchover", None),
    (lambda c: c.post_restart(M, {"restart_pending": True}), "POST", "/restart", {"restart_pending": True}),
    (lambda c: c.post_restart(M), "POST", "/restart", None),
    (lambda c: c.delete_restart(M), "DELETE", "/restart", None),
    (lambda c: c.post_reload(M), "POST", "/reload", None),
    (lambda c: c.post_reinitialize(M, force=True), "POST", "/reinitialize", {"force": True, "from_leader": False}),
    (lambda c: c.patch_config(M, {"pause": None}), "PATCH", "/config", {"pause": None}),
])
def test_unsafe_endpoints_send_patronis_paths_and_bodies_with_credentials(call, method, path, body) -> None:
    seen, handler = recorder()
    answer = call(client(handler, {"ctl": {"authentication": {"username": "u", "password": "p"}}}))
    assert answer == RestAnswer(200, "ok", None)
    (request,) = seen
    assert (request.method, request.url.path) == (method, path)
    assert (json.loads(request.content) if request.content else None) == body
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()


def test_restapi_credentials_are_the_fallback_and_gets_carry_none() -> None:
    seen, handler = recorder(httpx.Response(200, json={"state": "running"}))
    c = client(handler, {"restapi": {"authentication": {"username": "r", "password": "q"}}})
    c.post_reload(M)
    assert seen[-1].headers["authorization"] == "Basic " + base64.b64encode(b"r:q").decode()
    assert c.get_health(M, "/primary") == 200 and "authorization" not in seen[-1].headers
    assert seen[-1].url.path == "/primary"


def test_answers_keep_status_text_and_json() -> None:
    _, handler = recorder(httpx.Response(412, text="candidate does not exists\n"))
    assert client(handler).post_switchover(M, "node1", "x") == RestAnswer(412, "candidate does not exists")
    _, handler = recorder(httpx.Response(200, json={"ttl": 30, "pause": True}))
    answer = client(handler).patch_config(M, {"pause": True})
    assert answer.ok and answer.data == {"ttl": 30, "pause": True}


def test_not_sent_versus_no_answer() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(RestUnreachable, match="connection refused"):
        client(refused).post_switchover(M, "node1", "node2")

    def connect_timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with pytest.raises(RestUnreachable, match="cannot connect within"):
        client(connect_timeout).post_failover(M, "node2")

    def read_timeout(request: httpx.Request) -> httpx.Response:
        assert request.extensions["timeout"]["read"] == 42  # the wait for a switchover's outcome, not the default
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(RestError, match="no answer within 42s") as exc:
        client(read_timeout).post_switchover(M, "node1", "node2", timeout=42)
    assert not isinstance(exc.value, RestUnreachable)
    with pytest.raises(RestUnreachable, match="no api_url"):
        client(read_timeout).post_reload(Member("x"))
