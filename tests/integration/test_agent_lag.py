"""A replica that lags past maximum_lag_on_failover is never promoted, even when it is the only one left."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.agents import AgentCluster, running_cluster
from tests.support.procs import wait_for

pytestmark = pytest.mark.integration

MAX_LAG = 1024 * 1024


@pytest.fixture
def two_nodes(request):
    with running_cluster(request, ("node1", "node2"), maximum_lag_on_failover=MAX_LAG) as c:
        yield c


def test_lagging_replica_is_never_promoted(two_nodes: AgentCluster):
    c = two_nodes
    assert c.leader() == "node1"
    receiver = c.sql("node2", "SELECT pid FROM pg_stat_wal_receiver")[0][0]
    # node2 stops receiving WAL but keeps running. The receiver stays stopped until the end: once resumed it
    # would read what the dead leader had already sent into its socket buffer and legitimately catch up.
    os.kill(receiver, signal.SIGSTOP)
    try:
        c.sql("node1", "CREATE TABLE big AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g")
        received = c.member("node2").get("xlog_location", 0)

        def optime_far_ahead() -> bool:
            status = c.dcs().get("status", "{}")
            import json

            return json.loads(status).get("optime", 0) - received > MAX_LAG

        wait_for(optime_far_ahead, timeout=20, what="the leader to publish an optime past node2 + max lag")
        c.crash("node1")
        # the lock expires after ttl; node2 must stay a replica well past that
        wait_for(lambda: c.leader() is None, timeout=c.ttl + 5, what="the leader key to expire")
        deadline = time.monotonic() + c.ttl + 4
        while time.monotonic() < deadline:
            assert c.leader() is None, f"{c.leader()} took the leader lock"
            assert not c.writable("node2"), "the lagging replica was promoted"
            time.sleep(0.5)
    finally:
        os.kill(receiver, signal.SIGCONT)
    with open(c.nodes["node2"].log_path, encoding="utf-8") as f:
        assert "exceeds maximum_lag_on_failover" in f.read()
