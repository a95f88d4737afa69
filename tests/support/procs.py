"""Process helpers for integration tests: free ports, readiness polling, stop by PID, a real etcd."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(path: str | None, what: str, install_hint: str) -> str:
    """Return the binary, or skip (outside CI) / fail (under CI=true) with a reason."""
    if path and os.path.exists(path):
        return path
    msg = f"{what} not found; install {install_hint} (make deps)"
    if in_ci():
        pytest.fail(msg + " -- integration tests must not skip under CI=true")
    pytest.skip(msg)
    raise AssertionError("unreachable")


def etcd_binary() -> str | None:
    return shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - polling tolerates transient errors
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """SIGTERM (or `sig`), wait, then SIGKILL. Only ever by PID."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@dataclass
class EtcdServer:
    """A single-member etcd on 127.0.0.1 with a throwaway data dir."""

    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    data_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="hactl-etcd-"))
    proc: subprocess.Popen | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, binary: str | None = None) -> "EtcdServer":
        binary = binary or require_binary(etcd_binary(), "etcd", "Debian etcd-server")
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.log_path = os.path.join(self.data_dir, "etcd.log")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, "--name", "default", "--data-dir", os.path.join(self.data_dir, "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"default={peer}", "--log-level", "warn", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        wait_for(self.healthy, timeout=20, what=f"etcd on {self.url}")
        return self

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"etcd exited with {self.proc.returncode}: {self.log()}")
        with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
            return b"true" in r.read()

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def pg_bin_dir() -> str | None:
    """The newest /usr/lib/postgresql/<major>/bin holding the server binaries, else PATH's; None when absent."""
    import glob

    def has_server(path: str) -> bool:
        return all(os.access(os.path.join(path, b), os.X_OK) for b in ("postgres", "initdb", "pg_basebackup"))

    def major(path: str) -> int:
        version = os.path.basename(os.path.dirname(path))
        return int(version) if version.isdigit() else -1

    for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True):
        if has_server(path):
            return path
    found = shutil.which("initdb")
    if found and has_server(os.path.dirname(os.path.realpath(found))):
        return os.path.dirname(os.path.realpath(found))
    return None
