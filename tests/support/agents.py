"""A real hactl cluster for integration tests: etcd + N agents (+ PostgreSQL each), all on 127.0.0.1.

Each agent reaches etcd through its own TcpProxy, so a test can cut one node off etcd. Processes are stopped by
PID; the temp dir and every process go away in `cleanup()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import yaml

from tests.support.procs import EtcdServer, free_port, stop_process, wait_for
from tests.support.tcpproxy import TcpProxy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUPERUSER_PASSWORD = "su-" + uuid.uuid4().hex[:12]
REPLICATION_PASSWORD = "rep-" + uuid.uuid4().hex[:12]
REWIND_PASSWORD = "rew-" + uuid.uuid4().hex[:12]


def pg_bin_dir() -> str | None:
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return os.path.dirname(found[-1]) if found else None


@dataclass
class Node:
    name: str
    config_path: str
    pg_port: int
    api_port: int
    log_path: str
    proxy: TcpProxy
    proc: subprocess.Popen | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


@dataclass
class AgentCluster:
    etcd: EtcdServer
    nodes: dict[str, Node] = field(default_factory=dict)
    scope: str = field(default_factory=lambda: "t" + uuid.uuid4().hex[:8])
    namespace: str = field(default_factory=lambda: "/hactl-test-" + uuid.uuid4().hex[:8] + "/")
    base: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="hactl-cluster-"))
    ttl: int = 8
    loop_wait: int = 1
    retry_timeout: int = 3
    maximum_lag_on_failover: int = 1048576
    etcd_hosts: tuple[str, ...] = ()  # agents list these etcd endpoints (e.g. a 3-member etcd) instead of a proxy
    bootstrap_dcs: dict[str, Any] = field(default_factory=dict)  # extra bootstrap.dcs keys (synchronous_mode ...)

    # ------------------------------------------------------------------------------------------ set-up
    def add_node(self, name: str, tags: dict[str, Any] | None = None, use_pg_rewind: bool = True,
                 postgresql: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Node:
        """`postgresql`: more keys of the node's local `postgresql` section (e.g. `basebackup`); `extra` is merged
        into the whole file (e.g. postgresql.callbacks, bootstrap.dcs keys)."""
        os.chmod(self.base, 0o755)
        node_dir = os.path.join(self.base, name)
        os.makedirs(node_dir, exist_ok=True)
        os.chmod(node_dir, 0o755)
        proxy = TcpProxy(self.etcd.client_port)
        pg_port, api_port = free_port(), free_port()
        cfg = {
            "scope": self.scope,
            "namespace": self.namespace,
            "name": name,
            "restapi": {"listen": f"127.0.0.1:{api_port}", "connect_address": f"127.0.0.1:{api_port}"},
            "etcd3": {"hosts": list(self.etcd_hosts) or [proxy.hostport]},
            "bootstrap": {
                "dcs": {
                    "ttl": self.ttl,
                    "loop_wait": self.loop_wait,
                    "retry_timeout": self.retry_timeout,
                    "maximum_lag_on_failover": self.maximum_lag_on_failover,
                    **self.bootstrap_dcs,
                    "postgresql": {
                        "use_pg_rewind": use_pg_rewind,
                        "use_slots": True,
                        "parameters": {"shared_buffers": "16MB", "max_connections": 30, "fsync": "off",
                                       "wal_keep_size": "64MB"},
                    },
                },
                "initdb": [{"encoding": "UTF8"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{pg_port}",
                "connect_address": f"127.0.0.1:{pg_port}",
                "data_dir": os.path.join(node_dir, "data"),
                "bin_dir": pg_bin_dir(),
                "authentication": {
                    "superuser": {"username": "postgres", "password": SUPERUSER_PASSWORD},
                    "replication": {"username": "replicator", "password": REPLICATION_PASSWORD},
                    "rewind": {"username": "rewind_user", "password": REWIND_PASSWORD},
                },
                "pg_hba": ["local all all trust", "host replication replicator 127.0.0.1/32 md5",
                           "host all all 127.0.0.1/32 md5"],
            },
            "tags": tags or {},
        }
        cfg["postgresql"].update(postgresql or {})
        _deep_merge(cfg, extra or {})
        path = os.path.join(self.base, f"{name}.yml")
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(cfg, f)
        node = Node(name, path, pg_port, api_port, os.path.join(self.base, f"{name}.log"), proxy)
        self.nodes[name] = node
        return node

    def start(self, name: str) -> Node:
        node = self.nodes[name]
        log = open(node.log_path, "ab")
        node.proc = subprocess.Popen([sys.executable, "-m", "ctl", "agent", "-c", node.config_path],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                                     start_new_session=True)
        log.close()
        return node

    def start_all(self) -> None:
        names = list(self.nodes)
        self.start(names[0])
        wait_for(lambda: self.leader() == names[0], timeout=60, what=f"{names[0]} to bootstrap")
        for name in names[1:]:
            self.start(name)

    def heal(self, timeout: float = 120, no_failover_key: bool = False) -> str:
        """Start every agent a test killed or stopped and wait until the cluster is healthy; returns the leader.

        With `no_failover_key`, also wait until no switchover/failover key is left pending.
        """
        for name, node in self.nodes.items():
            if node.proc is None or node.proc.poll() is not None:
                self.start(name)
        leader = self.wait_healthy(timeout=timeout)
        if no_failover_key:
            wait_for(lambda: self.dcs().get("failover") in (None, "{}"), timeout=20, what="no pending failover key")
        return leader

    # ------------------------------------------------------------------------------------------ observation
    def dcs(self) -> dict[str, Any]:
        """Raw keys of the cluster prefix via the etcd JSON gateway: {relative key: value}."""
        import base64

        prefix = (self.namespace.rstrip("/") + "/" + self.scope + "/").encode()
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        body = json.dumps({"key": base64.b64encode(prefix).decode(),
                           "range_end": base64.b64encode(end).decode()}).encode()
        req = urllib.request.Request(self.etcd.url + "/v3/kv/range", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=3) as r:
            data = json.loads(r.read())
        out = {}
        for kv in data.get("kvs", []):
            out[base64.b64decode(kv["key"]).decode()[len(prefix):]] = base64.b64decode(kv.get("value", "")).decode()
        return out

    def put_key(self, key: str, value: str) -> None:
        """Write one key under the cluster prefix (as patronictl's DCS fallback would)."""
        import base64

        full = (self.namespace.rstrip("/") + "/" + self.scope + "/" + key).encode()
        body = json.dumps({"key": base64.b64encode(full).decode(),
                           "value": base64.b64encode(value.encode()).decode()}).encode()
        req = urllib.request.Request(self.etcd.url + "/v3/kv/put", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=3) as r:
            r.read()

    def leader(self) -> str | None:
        try:
            return self.dcs().get("leader")
        except OSError:
            return None

    def member(self, name: str) -> dict[str, Any]:
        raw = self.dcs().get(f"members/{name}")
        return json.loads(raw) if raw else {}

    def rest(self, name: str, path: str = "/patroni") -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.nodes[name].api + path, timeout=2) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body)
            except ValueError:
                return e.code, body
        except OSError:
            return 0, None

    def streaming(self) -> set[str]:
        return {n for n in self.nodes if self.member(n).get("replication_state") == "streaming"}

    def wait_healthy(self, timeout: float = 90, expect: int | None = None) -> str:
        """Until there is a leader and every other running node streams; returns the leader."""
        want = expect if expect is not None else len(self.nodes) - 1

        def ok() -> bool:
            leader = self.leader()
            return bool(leader) and len(self.streaming() - {leader}) >= want and self.writable(leader)

        wait_for(ok, timeout=timeout, interval=0.3, what=f"healthy cluster ({want} streaming replicas)")
        return self.leader() or ""

    # ------------------------------------------------------------------------------------------ SQL
    def connect(self, name: str, timeout: int = 2):
        import psycopg

        node = self.nodes[name]
        return psycopg.connect(host="127.0.0.1", port=node.pg_port, user="postgres", password=SUPERUSER_PASSWORD,
                               dbname="postgres", connect_timeout=timeout, autocommit=True)

    def sql(self, name: str, query: str, params: tuple = ()) -> list[tuple]:
        with self.connect(name) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def writable(self, name: str) -> bool:
        try:
            return self.sql(name, "SELECT pg_is_in_recovery()")[0][0] is False
        except Exception:  # noqa: BLE001
            return False

    # ------------------------------------------------------------------------------------------ faults
    def postmaster_pid(self, name: str) -> int | None:
        data_dir = os.path.join(self.base, name, "data")
        try:
            with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8") as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def kill_agent(self, name: str, sig: int = signal.SIGKILL) -> None:
        node = self.nodes[name]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(sig)

    def crash(self, name: str) -> None:
        """kill -9 of the node's agent and of its postmaster: the host died."""
        pm = self.postmaster_pid(name)
        self.kill_agent(name, signal.SIGKILL)
        if pm:
            try:
                os.kill(pm, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop_agent(self, name: str, timeout: float = 30) -> None:
        node = self.nodes[name]
        if node.proc is not None:
            stop_process(node.proc, timeout=timeout)

    # ------------------------------------------------------------------------------------------ teardown
    def logs(self) -> str:
        parts = []
        for node in self.nodes.values():
            try:
                with open(node.log_path, encoding="utf-8", errors="replace") as f:
                    parts.append(f"===== {node.name} =====\n" + "".join(f.readlines()[-80:]))
            except OSError:
                pass
        return "\n".join(parts)

    def cleanup(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None:
                stop_process(node.proc, timeout=30)
            pid = self.postmaster_pid(node.name)
            if pid:
                _kill_if_postgres(pid)
            node.proxy.close()
        shutil.rmtree(self.base, ignore_errors=True)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


@contextlib.contextmanager
def running_cluster(request, names: tuple[str, ...] = ("node1", "node2", "node3"),
                    postgresql: dict[str, Any] | None = None, **settings: Any) -> Iterator[AgentCluster]:
    """A bootstrapped, healthy cluster for a test module; its agents' logs are printed when a test failed.
    `postgresql` goes into every node's local `postgresql` section."""
    from tests.support.procs import etcd_binary, require_binary

    require_binary(etcd_binary(), "etcd", "Debian etcd-server")
    require_binary(pg_bin_dir() and pg_bin_dir() + "/postgres", "PostgreSQL", "Debian postgresql-15")
    etcd = EtcdServer().start()
    c = AgentCluster(etcd, **settings)
    for name in names:
        c.add_node(name, postgresql=postgresql)
    try:
        c.start_all()
        c.wait_healthy(timeout=120)
        yield c
    finally:
        if request.session.testsfailed:
            print("\n" + c.logs())
        c.cleanup()
        etcd.cleanup()


def _kill_if_postgres(pid: int) -> None:
    """A postmaster left behind (it should not be: fencing) is stopped by PID, after checking it is postgres."""
    try:
        with open(f"/proc/{pid}/comm", encoding="ascii") as f:
            if f.read().strip() not in ("postgres", "postmaster"):
                return
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass
