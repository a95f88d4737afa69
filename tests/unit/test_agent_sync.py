"""The agent's sync-key writes (ctl.agent.sync.SyncKeeper) against a fake etcd: compare-and-set on the revision
read, a second write in the same loop on the revision of the first, a lost race ends the list."""

from __future__ import annotations

from ctl.agent.node import NodeState
from ctl.agent.sync import SyncKeeper
from ctl.config import build
from ctl.dcs.codec import KeyValue
from ctl.ha.state import HaSettings
from ctl.model import Cluster, SyncState

RAW = {
    "scope": "demo", "name": "node1", "etcd3": {"hosts": ["127.0.0.1:2379"]},
    "restapi": {"listen": "127.0.0.1:8008"},
    "postgresql": {"listen": "127.0.0.1:5432", "data_dir": "/tmp/none"},
}


class FakeEtcd:
    """One key space with etcd's revision counter and compare-and-set semantics."""

    def __init__(self) -> None:
        self.revision = 10
        self.kv: dict[str, KeyValue] = {}

    def put(self, key: str, value: str, *, mod_revision: int | None = None, create: bool = False) -> bool:
        cur = self.kv.get(key)
        if create and cur is not None:
            return False
        if mod_revision is not None and (cur is None or cur.mod_revision != mod_revision):
            return False
        self.revision += 1
        self.kv[key] = KeyValue(key, value, self.revision)
        return True

    def get(self, key: str) -> KeyValue | None:
        return self.kv.get(key)

    def delete(self, key: str, *, mod_revision: int | None = None) -> bool:
        cur = self.kv.get(key)
        if cur is None or (mod_revision is not None and cur.mod_revision != mod_revision):
            return False
        del self.kv[key]
        return True


def keeper(dcs: FakeEtcd, sync: SyncState | None) -> SyncKeeper:
    node = NodeState("node1", settings=HaSettings(synchronous_mode="on"))
    node.cluster = Cluster(scope="demo", sync=sync)
    return SyncKeeper(build(RAW, "node1.yml"), node, dcs, None)


def test_first_write_creates_the_key_and_a_second_write_chains_on_its_revision() -> None:
    dcs = FakeEtcd()
    k = keeper(dcs, None)
    assert k.write_sync('{"leader":"node1","quorum":0,"sync_standby":null}')
    assert k.write_sync('{"leader":"node1","quorum":0,"sync_standby":"node2"}')
    assert dcs.kv["sync"].value == '{"leader":"node1","quorum":0,"sync_standby":"node2"}'


def test_a_write_on_a_stale_revision_fails_and_leaves_the_key_alone() -> None:
    dcs = FakeEtcd()
    dcs.put("sync", '{"leader":"node3","quorum":0,"sync_standby":"node2"}')
    k = keeper(dcs, SyncState(leader="node3", sync_standby=("node2",), mod_revision=5))  # read before a change
    assert not k.write_sync('{"leader":"node1","quorum":0,"sync_standby":null}')
    assert dcs.kv["sync"].value == '{"leader":"node3","quorum":0,"sync_standby":"node2"}'


def test_someone_writing_between_our_two_writes_makes_the_second_fail() -> None:
    dcs = FakeEtcd()
    k = keeper(dcs, None)
    assert k.write_sync('{"leader":"node1","quorum":0,"sync_standby":null}')
    dcs.put("sync", '{"leader":"node2","quorum":0,"sync_standby":null}')
    assert not k.write_sync('{"leader":"node1","quorum":0,"sync_standby":"node2"}')


def test_delete_is_compare_and_set_too() -> None:
    dcs = FakeEtcd()
    dcs.put("sync", '{"leader":"node1","quorum":0,"sync_standby":null}')
    stale = keeper(dcs, SyncState(leader="node1", mod_revision=3))
    assert not stale.delete_sync() and "sync" in dcs.kv
    fresh = keeper(dcs, SyncState(leader="node1", mod_revision=dcs.kv["sync"].mod_revision))
    assert fresh.delete_sync() and "sync" not in dcs.kv
