"""Real Patroni 4.1.5 from PyPI in .cache/patroni-venv (kept between runs), for compatibility tests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.procs import in_ci

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATRONI = "patroni[etcd3,psycopg3]==4.1.5"
VENV = os.path.join(REPO, ".cache", "patroni-venv")


def patronictl_exe() -> str:
    """The patronictl executable, installing Patroni first if needed.

    Under CI=true an install failure fails the test; elsewhere it skips with the reason.
    """
    return _installed(VENV, sys.executable, "patronictl")


def _installed(venv: str, python: str, program: str) -> str:
    """`program` from Patroni installed into `venv` (created with `python`) once; a stamp file marks it done."""
    stamp = os.path.join(venv, ".installed-" + PATRONI.replace("/", "_"))
    if not os.path.exists(stamp):
        try:
            subprocess.run([python, "-m", "venv", "--clear", venv], check=True, capture_output=True, timeout=120)
            subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", PATRONI], check=True,
                           capture_output=True, text=True, timeout=600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            msg = f"cannot install {PATRONI} into {venv}: {str(detail).strip()[-500:]}"
            if in_ci():
                pytest.fail(msg)
            pytest.skip(msg)
        open(stamp, "w").close()
    return os.path.join(venv, "bin", program)


def clean_env() -> dict[str, str]:
    """The environment without PATRONI_*/PATRONICTL_* variables, so only the given config file counts."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PATRONI", "PATRONICTL"))}


# ----------------------------------------------------------------------------------------------- a real Patroni cluster

SYS_VENV = os.path.join(REPO, ".cache", "patroni-sysvenv")


def patroni_daemon_exe() -> str:
    """`patroni` in a venv of the system Python, so that an unprivileged OS user can run it (PostgreSQL refuses
    root, and the default interpreter may live under a private home directory)."""
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    return _installed(SYS_VENV, python, "patroni")


class PatroniCluster:
    """N real Patroni 4.1.5 agents (+ PostgreSQL) on 127.0.0.1 against a given etcd; run as `postgres` when root."""

    def __init__(self, etcd_hostport: str, names: tuple[str, ...] = ("node1", "node2")) -> None:
        import tempfile
        import uuid

        from tests.support.agents import pg_bin_dir
        from tests.support.procs import free_port

        self.exe = patroni_daemon_exe()
        self.scope = "p" + uuid.uuid4().hex[:8]
        self.namespace = "/hactl-patroni-" + uuid.uuid4().hex[:8] + "/"
        self.base = tempfile.mkdtemp(prefix="hactl-patroni-")
        self.password = "su-" + uuid.uuid4().hex[:12]
        self.procs: dict[str, subprocess.Popen] = {}
        self.configs: dict[str, str] = {}
        self.api_ports: dict[str, int] = {}
        self._user = self._os_user()
        os.chmod(self.base, 0o755)
        for name in names:
            node_dir = os.path.join(self.base, name)
            os.makedirs(node_dir, mode=0o700)
            pg_port, api_port = free_port(), free_port()
            self.api_ports[name] = api_port
            cfg = {
                "scope": self.scope, "namespace": self.namespace, "name": name,
                "restapi": {"listen": f"127.0.0.1:{api_port}", "connect_address": f"127.0.0.1:{api_port}"},
                "etcd3": {"hosts": [etcd_hostport]},
                "bootstrap": {"dcs": {"ttl": 20, "loop_wait": 1, "retry_timeout": 5,
                                      "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                                     "parameters": {"wal_log_hints": "on"}}},
                              "initdb": [{"encoding": "UTF8"}]},
                "postgresql": {
                    "listen": f"127.0.0.1:{pg_port}", "connect_address": f"127.0.0.1:{pg_port}",
                    "data_dir": os.path.join(node_dir, "data"), "bin_dir": pg_bin_dir(),
                    "pgpass": os.path.join(node_dir, "pgpass"),
                    "authentication": {"superuser": {"username": "postgres", "password": self.password},
                                       "replication": {"username": "replicator", "password": self.password},
                                       "rewind": {"username": "rewind_user", "password": self.password}},
                    "parameters": {"unix_socket_directories": node_dir, "shared_buffers": "16MB",
                                   "max_connections": 30, "fsync": "off"},
                    "pg_hba": ["local all all trust", "host replication replicator 127.0.0.1/32 md5",
                               "host all all 127.0.0.1/32 md5"],
                },
            }
            path = os.path.join(self.base, f"{name}.yml")
            import yaml

            with open(path, "w", encoding="utf-8") as f:
                yaml.safe_dump(cfg, f)
            os.chmod(path, 0o644)
            if self._user is not None:
                os.chown(node_dir, self._user[0], self._user[1])
            self.configs[name] = path

    @staticmethod
    def _os_user() -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        import pwd

        pw = pwd.getpwnam("postgres")
        return pw.pw_uid, pw.pw_gid

    def start(self, name: str) -> None:
        log = open(os.path.join(self.base, f"{name}.log"), "ab")
        kwargs: dict = {}
        if self._user is not None:
            kwargs.update(user=self._user[0], group=self._user[1], extra_groups=[])
        env = clean_env()
        env["HOME"] = os.path.join(self.base, name)
        self.procs[name] = subprocess.Popen([self.exe, self.configs[name]], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                                            cwd=self.base, **kwargs)
        log.close()

    def logs(self) -> str:
        parts = []
        for name in self.configs:
            try:
                with open(os.path.join(self.base, f"{name}.log"), encoding="utf-8", errors="replace") as f:
                    parts.append(f"===== patroni {name} =====\n" + "".join(f.readlines()[-60:]))
            except OSError:
                pass
        return "\n".join(parts)

    def cleanup(self) -> None:
        import shutil

        from tests.support.procs import stop_process

        for proc in self.procs.values():
            stop_process(proc, timeout=30)
        for name in self.configs:
            pid_file = os.path.join(self.base, name, "data", "postmaster.pid")
            try:
                with open(pid_file, encoding="ascii") as f:
                    pid = int(f.readline().strip())
                with open(f"/proc/{pid}/comm", encoding="ascii") as f:
                    if f.read().strip() in ("postgres", "postmaster"):
                        os.kill(pid, 9)
            except (OSError, ValueError):
                pass
        shutil.rmtree(self.base, ignore_errors=True)
