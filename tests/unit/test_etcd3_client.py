"""Endpoint choice of the agent's etcd connection (ctl/dcs/etcd3_client.py): fixed order, each endpoint once,
at most majority(n) timeouts, sticky to the endpoint that answered. The calls are fakes: no RPC is sent."""

from __future__ import annotations

import etcd3.exceptions as etcd3_exc
import grpc
import pytest

from ctl.config import EtcdSettings
from ctl.dcs.etcd3_client import EtcdConnection, majority
from ctl.errors import DcsError, DcsUnavailable

HOSTS = (("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3))
A, B, C = (f"127.0.0.1:{p}" for p in (1, 2, 3))


@pytest.fixture
def conn():
    c = EtcdConnection(EtcdSettings(hosts=HOSTS), timeout=1.0)
    yield c
    c.close()


def call(conn: EtcdConnection, behaviour: dict[str, BaseException | None]) -> tuple[list[str], object]:
    """Run one call; `behaviour[label]` is raised on that endpoint (None: it answers). Returns (tried, result)."""
    tried: list[str] = []

    def fn(client):
        label = client._current_ep_label
        tried.append(label)
        exc = behaviour.get(label)
        if exc is not None:
            raise exc
        return label

    try:
        return tried, conn.call("get", fn)
    except DcsError as exc:
        return tried, exc


def test_majority():
    assert [majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


def test_a_dead_first_endpoint_moves_the_call_on_and_the_next_call_stays(conn):
    failed = []
    conn.on_endpoint_failed = failed.append
    tried, result = call(conn, {A: etcd3_exc.ConnectionFailedError()})
    assert tried == [A, B] and result == B and failed == [A]
    tried, result = call(conn, {A: etcd3_exc.ConnectionFailedError()})
    assert tried == [B] and result == B  # sticky: the dead one is not tried again


def test_the_others_are_tried_in_configured_order(conn):
    call(conn, {A: etcd3_exc.ConnectionFailedError()})  # now on B
    tried, result = call(conn, {B: etcd3_exc.ConnectionFailedError(), A: etcd3_exc.ConnectionFailedError()})
    assert tried == [B, A, C] and result == C


def test_a_majority_of_timeouts_ends_the_call(conn):
    tried, result = call(conn, {A: etcd3_exc.ConnectionTimeoutError(), B: etcd3_exc.ConnectionTimeoutError()})
    assert tried == [A, B] and isinstance(result, DcsUnavailable)  # C untried: no quorum to wait for


def test_fast_failures_try_every_endpoint_once(conn):
    dead = etcd3_exc.ConnectionFailedError()
    tried, result = call(conn, {A: dead, B: dead, C: dead})
    assert tried == [A, B, C] and isinstance(result, DcsUnavailable)


def test_a_refusal_is_not_retried_elsewhere(conn):
    import grpc

    class RpcError(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.PERMISSION_DENIED

        def details(self):
            return "permission denied"

    tried, result = call(conn, {A: RpcError()})
    assert tried == [A] and isinstance(result, DcsError) and not isinstance(result, DcsUnavailable)


def test_one_endpoint_gets_a_second_chance_only_after_a_fast_failure():
    single = EtcdConnection(EtcdSettings(hosts=HOSTS[:1]), timeout=1.0)
    try:
        tried, result = call(single, {A: etcd3_exc.ConnectionFailedError()})
        assert tried == [A, A] and isinstance(result, DcsUnavailable)
        tried, result = call(single, {A: etcd3_exc.ConnectionTimeoutError()})
        assert tried == [A] and isinstance(result, DcsUnavailable)
    finally:
        single.close()


def test_last_failure_is_per_thread_and_cleared_by_an_answer(conn):
    """The HA loop asks whether its own last call found etcd (ctl/agent/dcsfail.py): a REST thread's call must not
    hide the loop's failure, nor fake one."""
    import threading

    timeout = etcd3_exc.ConnectionTimeoutError()
    assert conn.last_failure() is None
    call(conn, {A: timeout, B: timeout})
    assert conn.last_failure() is not None
    other: list[object] = []
    t = threading.Thread(target=lambda: (call(conn, {}), other.append(conn.last_failure())))
    t.start()
    t.join()
    assert other == [None] and conn.last_failure() is not None  # the other thread's answer is its own
    call(conn, {})
    assert conn.last_failure() is None
    call(conn, {A: timeout, B: timeout})
    tried, result = call(conn, {A: Refused(), B: Refused(), C: Refused()})
    assert isinstance(result, DcsError) and conn.last_failure() is None  # etcd answered, with a refusal


class Refused(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.PERMISSION_DENIED

    def details(self):
        return "permission denied"
