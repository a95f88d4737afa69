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
