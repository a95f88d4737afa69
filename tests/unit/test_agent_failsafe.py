"""failsafe_mode, the agent's side: the key exactly as Patroni writes it, and the POST /failsafe handler's codes."""

from __future__ import annotations

from ctl.agent.failsafe import encode_key, key_value
from ctl.model import Cluster, Member


def test_the_failsafe_key_is_compact_json_of_every_member_and_the_leader():
    c = Cluster(scope="bars", members=(Member("node1", api_url="http://127.0.0.1:28033/patroni"),
                                       Member("node2", api_url="http://127.0.0.1:28034/patroni"),
                                       Member("node3")))
    value = key_value(c, "node3", "http://127.0.0.1:28035/patroni")
    assert encode_key(value) == ('{"node1":"http://127.0.0.1:28033/patroni","node2":"http://127.0.0.1:28034/patroni",'
                                 '"node3":"http://127.0.0.1:28035/patroni"}')


class _Agent:
    def __init__(self, enabled: bool, role: str) -> None:
        from ctl.ha.state import HaSettings
        from ctl.model import DynamicConfig, NodeStatus

        self.name = "node2"
        self.good_config = DynamicConfig({"failsafe_mode": enabled}, mod_revision=2)
        self.settings = HaSettings(ttl=30)
        self.node = NodeStatus(name="node2", scope="bars", version="x", state="running", role=role,
                               replayed_location=1234)

    def status(self):
        return self.node


class _Request:
    def __init__(self, data):
        self.data = data


def test_post_failsafe_answers_as_patroni():
    from ctl.agent.failsafe import Failsafe

    off = Failsafe(_Agent(False, "replica"))  # type: ignore[arg-type]
    assert off.post_failsafe(_Request({"name": "node1"})).status == 502
    primary = Failsafe(_Agent(True, "primary"))  # type: ignore[arg-type]
    r = primary.post_failsafe(_Request({"name": "node1"}))
    assert (r.status, r.body) == (500, "Running as a leader")
    replica = Failsafe(_Agent(True, "replica"))  # type: ignore[arg-type]
    assert replica._recent_leader() is None and not replica.is_active()
    r = replica.post_failsafe(_Request({"name": "node1", "api_url": "http://x/patroni"}))
    assert (r.status, r.body, dict(r.headers)) == (200, "Accepted", {"lsn": "1234"})
    assert replica._recent_leader() == "node1" and replica.is_active()


def test_a_patroni_leaders_slots_are_accepted_and_kept_and_ours_carry_our_slot_at_our_wal_position():
    from ctl.agent.failsafe import Failsafe
    from ctl.ha.state import PgView

    replica = Failsafe(_Agent(True, "replica"))  # type: ignore[arg-type]
    body = {"name": "node-1", "conn_url": "postgres://h:5432/postgres", "api_url": "http://h:8008/patroni",
            "slots": {"node_1": 50331968, "logical_x": 50331648, "bad": "0/3000060", "neg": -1, "flag": True}}
    assert replica.post_failsafe(_Request(body)).status == 200
    assert replica.received_slots == {"node_1": 50331968, "logical_x": 50331648}
    assert replica.post_failsafe(_Request({"name": "node-1", "slots": None})).status == 200
    assert replica.received_slots == {}

    leader = _Agent(True, "primary")
    leader.name, leader.conn_url, leader.api_url = "node-1", "postgres://h:5432/postgres", "http://h:8008/patroni"
    fs = Failsafe(leader)  # type: ignore[arg-type]
    assert fs.payload(PgView(running=True, in_recovery=False, wal_lsn=50331968)) == {
        "name": "node-1", "conn_url": "postgres://h:5432/postgres", "api_url": "http://h:8008/patroni",
        "slots": {"node_1": 50331968}}  # Patroni's slot_name_from_member_name: '-' -> '_'
    assert "slots" not in fs.payload(PgView(running=True, in_recovery=False))


def test_answers_are_due_retry_timeout_before_anyone_could_take_over():
    """ttl 8, retry_timeout 3: the lease and the replicas' failsafe window end ttl after max(last keepalive, last
    passed exchange); answers count until 3 s before that, and never longer than Patroni's 2 x 2 s."""
    from types import SimpleNamespace

    from ctl.agent.failsafe import Failsafe
    from ctl.ha.state import HaSettings

    agent = SimpleNamespace(settings=HaSettings(ttl=8, loop_wait=1, retry_timeout=3),
                            node=SimpleNamespace(last_lock_renewal=100.0))
    fs = Failsafe(agent)  # type: ignore[arg-type]
    assert fs.answers_due(102.0) == 105.0  # 8 - 3 after the keepalive
    assert fs.answers_due(100.5) == 104.5  # 2 x POST_TIMEOUT
    fs._passed_at = 104.0
    assert fs.answers_due(106.0) == 109.0  # a passed exchange extends the window, as it does for the replicas
    agent.node.last_lock_renewal = None
    fs._passed_at = 0.0
    assert fs.answers_due(50.0) == 54.0
