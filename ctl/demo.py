"""A local demo cluster: one etcd and N agents on 127.0.0.1, with generated patroni.yml files.

Every process it starts is recorded by PID in `<dir>/state.json`; `down` stops exactly those.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from ctl.errors import CtlError, OperationTimeout

SCOPE = "demo"


def default_dir() -> str:
    # not under $HOME: when run as root, PostgreSQL runs as `postgres`, which must be able to reach its data dir
    return os.environ.get("HACTL_DEMO_DIR") or os.path.join(tempfile.gettempdir(), "hactl-demo")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _etcd_binary() -> str:
    path = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
    if not path:
        raise CtlError("etcd not found: install it (Debian: apt-get install etcd-server)")
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _state_path(directory: str) -> str:
    return os.path.join(directory, "state.json")


def _load_state(directory: str) -> dict[str, Any] | None:
    try:
        with open(_state_path(directory), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _save_state(directory: str, state: dict[str, Any]) -> None:
    tmp = _state_path(directory) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, _state_path(directory))


def node_config(directory: str, name: str, etcd_port: int, pg_port: int, api_port: int, bin_dir: str,
                passwords: dict[str, str]) -> dict[str, Any]:
    return {
        "scope": SCOPE,
        "namespace": "/service/",
        "name": name,
        "restapi": {"listen": f"127.0.0.1:{api_port}", "connect_address": f"127.0.0.1:{api_port}"},
        "etcd3": {"hosts": [f"127.0.0.1:{etcd_port}"]},
        "bootstrap": {
            "dcs": {
                "ttl": 30,
                "loop_wait": 10,
                "retry_timeout": 10,
                "maximum_lag_on_failover": 1048576,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {"max_connections": 100, "wal_keep_size": "128MB", "shared_buffers": "32MB"},
                },
            },
            "initdb": [{"encoding": "UTF8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{pg_port}",
            "connect_address": f"127.0.0.1:{pg_port}",
            "data_dir": os.path.join(directory, name, "data"),
            "bin_dir": bin_dir,
            "authentication": {
                "superuser": {"username": "postgres", "password": passwords["superuser"]},
                "replication": {"username": "replicator", "password": passwords["replication"]},
                "rewind": {"username": "rewind_user", "password": passwords["rewind"]},
            },
            "pg_hba": [
                "local all all trust",
                "host replication replicator 127.0.0.1/32 md5",
                "host all all 127.0.0.1/32 md5",
            ],
        },
        "tags": {},
    }


def _start_etcd(directory: str, client: int, peer: int) -> subprocess.Popen:
    url, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    log = open(os.path.join(directory, "etcd.log"), "ab")
    proc = subprocess.Popen(
        [_etcd_binary(), "--name", "demo", "--data-dir", os.path.join(directory, "etcd"),
         "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", purl,
         "--initial-advertise-peer-urls", purl, "--initial-cluster", f"demo={purl}", "--log-level", "warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if b"true" in r.read():
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise CtlError(f"etcd did not start; see {os.path.join(directory, 'etcd.log')}")


def _start_agent(directory: str, name: str) -> subprocess.Popen:
    cfg = os.path.join(directory, f"{name}.yml")
    log = open(os.path.join(directory, f"{name}.log"), "ab")
    proc = subprocess.Popen([sys.executable, "-m", "ctl", "agent", "-c", cfg], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=directory)
    log.close()
    return proc


def _healthy(state: dict[str, Any]) -> tuple[bool, str]:
    """One leader and every other member streaming, read from the DCS with the agent's own codec."""
    from ctl.config import EtcdSettings
    from ctl.dcs.etcd3 import Etcd3Dcs

    dcs = Etcd3Dcs(EtcdSettings(hosts=(("127.0.0.1", state["etcd_port"]),)), "/service/", SCOPE, timeout=2)
    try:
        cluster = dcs.get_cluster()
    finally:
        dcs.close()
    if cluster.leader is None:
        return False, "waiting for a leader"
    streaming = [m.name for m in cluster.members if m.replication_state == "streaming"]
    want = len(state["nodes"]) - 1
    return len(streaming) >= want, f"leader {cluster.leader.name}, {len(streaming)}/{want} replicas streaming"


def up(nodes: int = 3, directory: str | None = None, timeout: float = 180.0) -> int:
    """Start the demo cluster and print `hactl list`.

    Raises:
        CtlError: a missing binary or a cluster that does not become healthy in time.
    """
    from ctl.pg.binaries import find_bin_dir

    directory = os.path.abspath(directory or default_dir())
    state = _load_state(directory)
    if state and any(_alive(p) for p in state.get("pids", {}).values()):
        print(f"demo cluster already running in {directory}")
        return _print_list(directory)
    bin_dir = find_bin_dir(None)
    etcd = _etcd_binary()
    os.makedirs(directory, exist_ok=True)
    os.chmod(directory, 0o755)
    import yaml

    passwords = {k: secrets.token_urlsafe(12) for k in ("superuser", "replication", "rewind")}
    state = {"etcd_port": _free_port(), "etcd_peer_port": _free_port(), "nodes": {}, "pids": {}, "etcd": etcd}
    for i in range(1, nodes + 1):
        name = f"node{i}"
        pg_port, api_port = _free_port(), _free_port()
        cfg = node_config(directory, name, state["etcd_port"], pg_port, api_port, bin_dir, passwords)
        os.makedirs(os.path.join(directory, name), exist_ok=True)
        os.chmod(os.path.join(directory, name), 0o755)
        path = os.path.join(directory, f"{name}.yml")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        state["nodes"][name] = {"config": path, "pg_port": pg_port, "api_port": api_port}
    etcd_proc = _start_etcd(directory, state["etcd_port"], state["etcd_peer_port"])
    state["pids"]["etcd"] = etcd_proc.pid
    _save_state(directory, state)
    print(f"etcd started on 127.0.0.1:{state['etcd_port']} (pid {etcd_proc.pid})")
    for name in state["nodes"]:
        proc = _start_agent(directory, name)
        state["pids"][name] = proc.pid
        _save_state(directory, state)
        print(f"{name}: agent started (pid {proc.pid}), log {os.path.join(directory, name + '.log')}")
        if name == "node1":
            time.sleep(1.0)  # let node1 win the bootstrap race so the demo is predictable
    deadline = time.monotonic() + timeout
    detail = "starting"
    while time.monotonic() < deadline:
        try:
            ok, detail = _healthy(state)
        except CtlError as exc:
            ok, detail = False, str(exc)
        if ok:
            break
        time.sleep(1.0)
    else:
        raise OperationTimeout(f"demo cluster not healthy after {timeout:.0f}s ({detail}); logs in {directory}")
    print()
    rc = _print_list(directory)
    print(f"\nUse: hactl -c {state['nodes']['node1']['config']} list")
    where = "" if directory == os.path.abspath(default_dir()) else f" --dir {directory}"
    print(f"Stop: hactl demo down{where} [--purge]")
    return rc


def _print_list(directory: str) -> int:
    state = _load_state(directory) or {}
    first = next(iter(state.get("nodes", {}).values()), None)
    if not first:
        return 1
    return subprocess.call([sys.executable, "-m", "ctl", "-c", first["config"], "list"])


def down(directory: str | None = None, purge: bool = False) -> int:
    """Stop the demo's agents, then etcd, by PID; with purge, remove the directory."""
    directory = os.path.abspath(directory or default_dir())
    state = _load_state(directory)
    if state is None:
        print(f"no demo cluster in {directory}")
        if purge and os.path.isdir(directory):
            shutil.rmtree(directory, ignore_errors=True)
        return 0
    pids: dict[str, int] = state.get("pids", {})
    agents = {n: p for n, p in pids.items() if n != "etcd"}
    for name, pid in agents.items():
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    _wait_gone(agents, 60)
    if "etcd" in pids and _alive(pids["etcd"]):
        os.kill(pids["etcd"], signal.SIGTERM)
        _wait_gone({"etcd": pids["etcd"]}, 15)
    print(f"stopped {len(pids)} processes")
    if purge:
        shutil.rmtree(directory, ignore_errors=True)
        print(f"removed {directory}")
    else:
        state["pids"] = {}
        _save_state(directory, state)
    return 0


def _wait_gone(pids: dict[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.2)
    for name, pid in pids.items():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
