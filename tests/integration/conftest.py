"""Shared integration fixtures: a real etcd on a free port, and a unique DCS namespace per test."""

from __future__ import annotations

import uuid

import pytest

from tests.support.procs import EtcdServer


@pytest.fixture(scope="module")
def etcd() -> EtcdServer:
    """One single-member etcd for the test module, stopped by PID and removed afterwards."""
    server = EtcdServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def namespace() -> str:
    """A DCS namespace no other test uses."""
    return f"/test-{uuid.uuid4().hex[:10]}/"
