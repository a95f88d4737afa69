"""The README's first command: `hactl demo up` starts etcd + 3 agents + PostgreSQL and prints `hactl list`;
`hactl demo down --purge` stops every process it started and removes the directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from tests.support.agents import REPO, pg_bin_dir
from tests.support.procs import etcd_binary, require_binary

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def hactl(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctl", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_demo_up_prints_a_healthy_cluster_and_down_stops_everything():
    require_binary(etcd_binary(), "etcd", "Debian etcd-server")
    require_binary(pg_bin_dir() and pg_bin_dir() + "/postgres", "PostgreSQL", "Debian postgresql-15")
    directory = tempfile.mkdtemp(prefix="hactl-demo-test-")
    pids: dict[str, int] = {}
    try:
        up = hactl("demo", "up", "--dir", directory)
        state = json.load(open(os.path.join(directory, "state.json"), encoding="utf-8"))
        pids = dict(state["pids"])
        assert up.returncode == 0, up.stdout + up.stderr
        lines = up.stdout.splitlines()
        table = [ln for ln in lines if ln.startswith("| node")]
        roles = sorted(ln.split("|")[3].strip() for ln in table)
        assert roles == ["Leader", "Replica", "Replica"], up.stdout
        assert sum("streaming" in ln for ln in table) == 2
        assert any(ln.startswith("+ Cluster: demo (") for ln in lines)
        assert f"Use: hactl -c {directory}/node1.yml list" in up.stdout
        again = hactl("-c", os.path.join(directory, "node1.yml"), "list", "-f", "json")
        assert again.returncode == 0 and len(json.loads(again.stdout)) == 3
        down = hactl("demo", "down", "--dir", directory, "--purge", timeout=120)
        assert down.returncode == 0, down.stderr
        assert not any(_alive(p) for p in pids.values()), "demo down left processes running"
        assert not os.path.exists(directory)
    finally:
        for pid in pids.values():  # by PID, only what this demo started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
