"""A real 3-member etcd cluster on 127.0.0.1 for integration tests: kill, freeze and restart one member by PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass, field

from tests.support.procs import etcd_binary, free_port, require_binary, stop_process, wait_for


@dataclass
class EtcdMember:
    name: str
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    frozen: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and not self.frozen


class EtcdCluster:
    """n members with a shared initial cluster; `url`/`client_port` name a member that is up (for test reads)."""

    def __init__(self, n: int = 3) -> None:
        self.base = tempfile.mkdtemp(prefix="hactl-etcd3m-")
        self.members = [EtcdMember(f"e{i}") for i in range(n)]
        self.binary = require_binary(etcd_binary(), "etcd", "Debian etcd-server")

    def _initial(self) -> str:
        return ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)

    def _spawn(self, m: EtcdMember, state: str) -> None:
        peer = f"http://127.0.0.1:{m.peer_port}"
        with open(os.path.join(self.base, f"{m.name}.log"), "ab") as log:
            m.proc = subprocess.Popen(
                [self.binary, "--name", m.name, "--data-dir", os.path.join(self.base, m.name),
                 "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", self._initial(), "--initial-cluster-state", state,
                 "--initial-cluster-token", os.path.basename(self.base), "--log-level", "warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        m.frozen = False

    def start(self) -> "EtcdCluster":
        for m in self.members:
            self._spawn(m, "new")
        for m in self.members:
            wait_for(lambda m=m: self.healthy(m), timeout=30, what=f"etcd member {m.name}")
        return self

    def healthy(self, m: EtcdMember) -> bool:
        with urllib.request.urlopen(m.url + "/health", timeout=1) as r:
            return b"true" in r.read()

    def _status(self, m: EtcdMember) -> dict:
        req = urllib.request.Request(m.url + "/v3/maintenance/status", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=2) as r:
            return json.loads(r.read())

    def raft_leader(self) -> EtcdMember:
        """The member that currently leads raft."""
        for m in self.members:
            if not m.up:
                continue
            status = self._status(m)
            leader = str(status.get("leader"))
            for other in self.members:
                if other.up and str(self._status(other)["header"]["member_id"]) == leader:
                    return other
        raise RuntimeError("no raft leader")

    @property
    def up_member(self) -> EtcdMember:
        return next(m for m in self.members if m.up)

    @property
    def url(self) -> str:
        return self.up_member.url

    @property
    def client_port(self) -> int:
        return self.up_member.client_port

    def kill(self, m: EtcdMember) -> None:
        assert m.proc is not None
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(timeout=10)

    def freeze(self, m: EtcdMember) -> None:
        assert m.proc is not None
        m.proc.send_signal(signal.SIGSTOP)
        m.frozen = True

    def thaw(self, m: EtcdMember) -> None:
        assert m.proc is not None
        m.proc.send_signal(signal.SIGCONT)
        m.frozen = False

    def restart(self, m: EtcdMember) -> None:
        """Start a killed member again on its data directory and wait until it is healthy."""
        self._spawn(m, "existing")
        wait_for(lambda: self.healthy(m), timeout=30, what=f"etcd member {m.name} back")

    def cleanup(self) -> None:
        for m in self.members:
            if m.proc is not None:
                if m.frozen:
                    self.thaw(m)
                stop_process(m.proc)
        shutil.rmtree(self.base, ignore_errors=True)
