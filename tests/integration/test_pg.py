"""ctl.pg against real PostgreSQL: bootstrap, clone, stream, promote, rewind, fencing, stop/adopt.

The tests in this module share one small two-node setup (n1, n2) and run in file order: the state each test
leaves is the next one's starting point. The fencing tests use their own node.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

import psycopg
import pytest

from ctl.config import PgUser, PostgresqlSettings
from ctl.errors import PgCommandError
from ctl.pg import Postgres, ensure_os_user
from ctl.pg.conf import build_conninfo
from ctl.pg.process import pid_alive
from tests.support.procs import free_port, pg_bin_dir, require_binary, wait_for

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUPER = PgUser("postgres", "su-secret-1")
REPL = PgUser("replicator", "repl-secret-2")
REWIND = PgUser("rewinder", "rewind-secret-3")
HBA = ["host all all 127.0.0.1/32 md5", "host replication replicator 127.0.0.1/32 md5"]
PARAMS = {"shared_buffers": "16MB", "fsync": "off", "max_connections": 20, "synchronous_commit": "off"}


def _settings(root: str, name: str, port: int) -> PostgresqlSettings:
    return PostgresqlSettings(
        listen=f"127.0.0.1:{port}", connect_address=f"127.0.0.1:{port}", data_dir=os.path.join(root, name, "data"),
        superuser=SUPER, replication=REPL, rewind=REWIND, parameters=PARAMS, pg_hba=tuple(HBA), use_pg_rewind=True,
    )


class Nodes:
    """The Postgres objects a test module created, for cleanup by PID."""

    def __init__(self, bin_dir: str) -> None:
        self.bin_dir = bin_dir
        self.root = tempfile.mkdtemp(prefix="hactl-pg-")
        os.chmod(self.root, 0o755)  # the postgres OS user must traverse it
        self.nodes: list[Postgres] = []
        self.procs: list[subprocess.Popen] = []

    def new(self, name: str) -> Postgres:
        pg = Postgres(_settings(self.root, name, free_port()), name, bin_dir=self.bin_dir)
        self.nodes.append(pg)
        return pg

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for pg in self.nodes:
            try:
                pg.stop(mode="immediate", timeout=10)
            except PgCommandError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def dump_logs(self) -> str:
        out = []
        for pg in self.nodes:
            try:
                with open(pg.log_file, encoding="utf-8", errors="replace") as f:
                    out.append(f"--- {pg.name} ---\n" + f.read()[-3000:])
            except OSError:
                pass
        return "\n".join(out)


@pytest.fixture(scope="module")
def nodes():
    bin_dir = require_binary(pg_bin_dir(), "PostgreSQL server binaries", "Debian postgresql-15")
    if os.geteuid() == 0:
        ensure_os_user("postgres")
    n = Nodes(bin_dir)
    yield n
    n.cleanup()


@pytest.fixture(autouse=True)
def _logs_on_failure(request, nodes):
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        print(nodes.dump_logs())


@pytest.fixture(scope="module")
def pair(nodes):
    """{"n1": primary, "n2": not yet created replica} shared by the ordered tests below."""
    return {"n1": nodes.new("n1"), "n2": nodes.new("n2")}


def _sql(pg: Postgres, query: str, user: PgUser = SUPER) -> list[tuple]:
    with psycopg.connect(**pg.conninfo(user=user), autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


def _remote(pg: Postgres, user: PgUser) -> str:
    return build_conninfo(host=pg.host, port=pg.connect_port, user=user.username, password=user.password,
                          dbname="postgres")


def _bootstrap(pg: Postgres) -> None:
    pg.initdb(["data-checksums", {"encoding": "UTF8"}])
    pg.write_config(PARAMS, HBA, standby=False)
    pg.start()
    pg.create_users(SUPER, REPL, REWIND)


def _streaming(pg: Postgres) -> bool:
    state = pg.probe()
    return state.streaming and state.in_recovery is True


def test_initdb_start_write_probe_primary(pair):
    n1 = pair["n1"]
    assert n1.data_dir_empty()
    _bootstrap(n1)
    assert n1.owns_process
    n1.execute("CREATE TABLE t (id int PRIMARY KEY, note text)")
    n1.execute("INSERT INTO t VALUES (%s, %s)", (1, "before"))
    state = n1.probe()
    assert state.running and state.error is None
    assert state.in_recovery is False and state.is_primary
    assert state.timeline == 1
    assert state.wal_lsn and state.wal_lsn > 0
    assert state.server_version and state.server_version >= 150000
    assert state.system_identifier == n1.system_identifier() == n1.controldata()["Database system identifier"]
    with open(n1.log_file, encoding="utf-8", errors="replace") as f:
        text = f.read()
    assert SUPER.password not in text and REPL.password not in text and REWIND.password not in text


def test_basebackup_replica_streams_through_slot(pair):
    n1, n2 = pair["n1"], pair["n2"]
    assert n1.ensure_slots(["n2"]) == ["n2"]
    n2.basebackup(_remote(n1, REPL), slot="n2")
    n2.write_config(PARAMS, HBA, standby=True, primary_conninfo=_remote(n1, REPL), primary_slot_name="n2")
    hactl_conf = os.path.join(n2.data_dir, "postgresql.hactl.conf")
    st = os.stat(hactl_conf)  # it holds the replication password: private to the OS user
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == n2.os_user.uid
    with open(hactl_conf, encoding="utf-8") as f:
        text = f.read()
    assert "application_name=n2" in text and "primary_slot_name = 'n2'" in text
    assert os.path.exists(os.path.join(n2.data_dir, "standby.signal"))
    n2.start()
    wait_for(lambda: _streaming(n2), timeout=20, what="n2 streaming")
    assert _sql(n2, "SELECT note FROM t WHERE id = 1") == [("before",)]
    n1.execute("INSERT INTO t VALUES (2, 'streamed')")
    wait_for(lambda: _sql(n2, "SELECT count(*) FROM t")[0][0] == 2, timeout=10, what="row 2 on n2")
    state = n2.probe()
    assert state.in_recovery is True and state.streaming
    assert state.upstream == f"127.0.0.1:{n1.port}"
    assert state.received_lsn and state.replayed_lsn and state.wal_lsn == max(state.received_lsn,
                                                                               state.replayed_lsn)
    assert state.timeline == 1
    assert state.system_identifier == n1.system_identifier()
    primary = n1.probe()
    assert [(r["application_name"], r["state"], r["client_addr"], r["usename"]) for r in primary.replication] == [
        ("n2", "streaming", "127.0.0.1", "replicator")]
    assert n1.replication_slots()["n2"]["active"] is True


def test_pending_restart_is_reported(pair):
    n1 = pair["n1"]
    assert n1.write_config(PARAMS, HBA, standby=False) is False  # unchanged: nothing rewritten, no reload needed
    assert n1.write_config({**PARAMS, "shared_buffers": "24MB"}, HBA, standby=False) is True
    n1.reload()
    wait_for(lambda: "shared_buffers" in n1.probe().pending_restart, timeout=10, what="pending_restart")
    assert n1.probe().pending_restart["shared_buffers"] == {"old_value": "16MB", "new_value": "24MB"}
    n1.write_config(PARAMS, HBA, standby=False)
    n1.reload()
    wait_for(lambda: not n1.probe().pending_restart, timeout=10, what="pending_restart cleared")


def test_promote_replica(pair):
    n2 = pair["n2"]
    n2.promote()
    state = n2.probe()
    assert state.in_recovery is False and state.timeline == 2
    n2.execute("INSERT INTO t VALUES (3, 'on new primary')")


def test_rewind_diverged_crashed_old_primary(pair):
    n1, n2 = pair["n1"], pair["n2"]
    n1.execute("INSERT INTO t VALUES (100, 'diverged on old primary')")  # n1 is still writable: divergence
    n1.stop(mode="immediate")  # as after a crash: rewind must do crash recovery first
    assert n1.controldata()["Database cluster state"] == "in production"
    assert n1.rewind(_remote(n2, REWIND)) is True
    assert os.path.exists(os.path.join(n1.data_dir, "standby.signal"))
    n1.write_config(PARAMS, HBA, standby=True, primary_conninfo=_remote(n2, REPL))
    n1.start()
    wait_for(lambda: _streaming(n1), timeout=30, what="n1 streaming from n2")
    assert n1.probe().upstream == f"127.0.0.1:{n2.port}"
    n2.execute("INSERT INTO t VALUES (4, 'after rewind')")
    wait_for(lambda: _sql(n1, "SELECT count(*) FROM t WHERE id = 4")[0][0] == 1, timeout=10, what="row 4 on n1")
    assert [r[0] for r in _sql(n1, "SELECT id FROM t ORDER BY id")] == [1, 2, 3, 4]
    assert n1.probe().timeline == 2


def test_rewind_failure_returns_false(pair):
    n1 = pair["n1"]
    bad = build_conninfo(host="127.0.0.1", port=free_port(), user="rewinder", password="x", dbname="postgres")
    assert n1.rewind(bad) is False
    assert not n1.is_running()


def test_stop_keeps_data_and_restart(pair):
    n1, n2 = pair["n1"], pair["n2"]
    n1.write_config(PARAMS, HBA, standby=True, primary_conninfo=_remote(n2, REPL))
    n1.start()
    wait_for(lambda: _streaming(n1), timeout=30, what="n1 streaming again")
    n1.stop()
    assert not n1.is_running() and n1.probe().running is False
    assert n1.controldata()["Database cluster state"] == "shut down in recovery"
    n1.start()
    assert [r[0] for r in _sql(n1, "SELECT id FROM t ORDER BY id")] == [1, 2, 3, 4]
    n2.stop(checkpoint=True)
    assert n2.controldata()["Database cluster state"] == "shut down"
    n2.start()
    assert n2.probe().is_primary


def test_slots_dropped_except_kept(pair):
    n2 = pair["n2"]
    n2.ensure_slots(["Node-1", "n.3"])
    assert {"node_1", "n_3"} <= set(n2.replication_slots())
    assert n2.drop_slots_except(["node-1"]) == ["n_3"]
    assert "node_1" in n2.replication_slots()


def test_standby_without_hot_standby_starts(pair):
    n1, n2 = pair["n1"], pair["n2"]
    n1.write_config({**PARAMS, "hot_standby": "off"}, HBA, standby=True, primary_conninfo=_remote(n2, REPL))
    n1.restart(timeout=20)  # returns although the server never accepts connections
    state = n1.probe()
    assert state.running and not state.accepting and "not accepting connections" in (state.error or "")
    n1.write_config(PARAMS, HBA, standby=True, primary_conninfo=_remote(n2, REPL))
    n1.restart()
    assert n1.probe().in_recovery is True


def test_start_failure_reports_log_tail(nodes):
    pg = nodes.new("bad")
    pg.initdb()
    pg.write_config({**PARAMS, "shared_buffers": "not-a-size"}, HBA, standby=False)
    with pytest.raises(PgCommandError, match="shared_buffers"):
        pg.start(timeout=20)
    assert not pg.is_running()


# -------------------------------------------------------------------------------------------- fencing

_AGENT = """
import sys, time
from ctl.config import PgUser, PostgresqlSettings
from ctl.pg import Postgres
s = PostgresqlSettings(listen=sys.argv[1], data_dir=sys.argv[2], superuser=PgUser("postgres", sys.argv[3]))
pg = Postgres(s, "fenced", bin_dir=sys.argv[4])
if sys.argv[5] == "start":
    pg.start()
pg.set_fence(sys.argv[6] == "armed")
print(pg.pid, flush=True)
time.sleep(600)
"""


def _start_agent(nodes: Nodes, pg: Postgres, mode: str = "start", fence: str = "armed") -> tuple[subprocess.Popen,
                                                                                                  int]:
    """A stand-in agent process: starts (or adopts) the postmaster and arms (or disarms) its fence."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _AGENT, f"127.0.0.1:{pg.port}", pg.data_dir, SUPER.password, nodes.bin_dir, mode,
         fence],
        cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    nodes.procs.append(proc)
    line = proc.stdout.readline().decode().strip()
    assert line.isdigit(), f"agent did not report a postmaster pid: {line!r}"
    return proc, int(line)


@pytest.fixture(scope="module")
def fenced(nodes):
    pg = nodes.new("fenced")
    _bootstrap(pg)
    pg.stop()
    return pg


def _can_connect(pg: Postgres) -> bool:
    try:
        with psycopg.connect(**pg.conninfo(connect_timeout=2)) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def test_fencing_postmaster_dies_with_its_agent(nodes, fenced):
    agent, pid = _start_agent(nodes, fenced)
    assert pid_alive(pid) and _can_connect(fenced)
    held = psycopg.connect(**fenced.conninfo(), autocommit=True)  # an open session must die too
    try:
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=10)
        started = time.monotonic()
        wait_for(lambda: not pid_alive(pid), timeout=2.0, interval=0.005, what="postmaster gone after agent kill -9")
        elapsed = time.monotonic() - started
        print(f"postmaster gone {elapsed * 1000:.0f} ms after the agent's kill -9")
        assert elapsed < 2.0
        assert not _can_connect(fenced)
        with pytest.raises(psycopg.Error):
            held.execute("SELECT 1")
    finally:
        held.close()
    assert not fenced.is_running()


def _kill9_and_time(agent: subprocess.Popen, pid: int) -> float | None:
    """kill -9 the stand-in agent; seconds until its postmaster was gone, None if still alive after 2 s."""
    agent.send_signal(signal.SIGKILL)
    agent.wait(timeout=10)
    started = time.monotonic()
    try:
        wait_for(lambda: not pid_alive(pid), timeout=2.0, interval=0.005, what="postmaster gone")
    except TimeoutError:
        return None
    return time.monotonic() - started


def test_disarmed_fence_keeps_postgres_and_an_adopted_postmaster_is_fenced(nodes, fenced):
    """Pause: kill -9 of a disarmed agent leaves PostgreSQL running; the next agent adopts it and fences it."""
    agent, pid = _start_agent(nodes, fenced, "start", "disarmed")
    held = psycopg.connect(**fenced.conninfo(), autocommit=True)
    try:
        assert _kill9_and_time(agent, pid) is None, "a disarmed fence stopped PostgreSQL"
        held.execute("SELECT 1")  # sessions survive too
    finally:
        held.close()
    # a restarted agent adopts the same postmaster (no restart) with an armed fence
    agent, adopted = _start_agent(nodes, fenced, "adopt", "armed")
    assert adopted == pid and _can_connect(fenced)
    elapsed = _kill9_and_time(agent, pid)
    assert elapsed is not None, "the adopted postmaster outlived its agent: " + open(fenced.log_file).read()[-3000:]
    print(f"adopted postmaster gone {elapsed * 1000:.0f} ms after the agent's kill -9")
    assert not fenced.is_running()


def test_fence_rearm_and_restart_in_process(fenced):
    """The fence follows set_fence(); a killed fence is replaced on the next call; a stop retires it."""
    fenced.start()
    try:
        assert fenced.fenced and fenced.owns_process
        first = fenced.fence_pid
        assert first is not None and pid_alive(first)
        fenced.set_fence(False)
        fenced.set_fence(True)
        assert fenced.fence_pid == first  # same fence, re-armed
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not fenced.fenced, timeout=5, interval=0.02, what="fence death noticed")
        fenced.set_fence(True)
        assert fenced.fenced and fenced.fence_pid not in (None, first)
        second = fenced.fence_pid
    finally:
        fenced.stop()
    assert fenced.fence_pid is None
    wait_for(lambda: not pid_alive(second), timeout=3, interval=0.02, what="fence gone after stop")


def test_adopted_postmaster_can_be_probed_and_stopped(nodes, fenced):
    agent, pid = _start_agent(nodes, fenced)  # started by another "agent": not our child
    other = Postgres(fenced.settings, "fenced", bin_dir=nodes.bin_dir)
    assert other.is_running() and other.pid == pid and not other.owns_process
    assert other.probe().is_primary
    other.stop()
    assert not pid_alive(pid) and not other.is_running()
    agent.kill()
    agent.wait(timeout=10)
    # a fresh start after the crash of the first agent: fenced again, data intact
    other.start()
    assert other.owns_process and other.probe().is_primary
    other.stop()


def test_stop_escalates_to_immediate_after_timeout(fenced):
    fenced.start()
    held = psycopg.connect(**fenced.conninfo(), autocommit=True)  # a smart shutdown waits for this session
    try:
        started = time.monotonic()
        fenced.stop(mode="smart", timeout=1)
        assert time.monotonic() - started < 10
        assert not fenced.is_running()
        with pytest.raises(psycopg.Error):
            held.execute("SELECT 1")
    finally:
        held.close()


def test_start_ignores_a_stale_postmaster_pid(fenced):
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file = os.path.join(fenced.data_dir, "postmaster.pid")
    with open(pid_file, "w") as f:
        f.write(f"{dead.pid}\n{fenced.data_dir}\n")
    assert not fenced.is_running()
    fenced.start()
    assert fenced.owns_process and fenced.probe().is_primary
    fenced.stop()


def test_guards_on_running_and_stopped_servers(fenced):
    assert fenced.probe().running is False
    with pytest.raises(PgCommandError, match="not running"):
        fenced.reload()
    with pytest.raises(PgCommandError):
        fenced.execute("SELECT 1")
    fenced.start()
    try:
        with pytest.raises(PgCommandError, match="running"):
            fenced.remove_data_dir()
        with pytest.raises(PgCommandError, match="running"):
            fenced.basebackup("host=127.0.0.1 port=1")
        with pytest.raises(PgCommandError, match="relation"):
            fenced.execute("SELECT * FROM no_such_table")
        fenced.start()  # already running: no-op
        assert fenced.owns_process
    finally:
        fenced.stop()
    assert os.path.exists(os.path.join(fenced.data_dir, "PG_VERSION"))


def test_failed_basebackup_leaves_an_empty_data_dir(nodes):
    pg = nodes.new("clone-fails")
    with pytest.raises(PgCommandError, match="pg_basebackup failed"):
        pg.basebackup(build_conninfo(host="127.0.0.1", port=free_port(), user="replicator", password="pw"),
                      timeout=30)
    assert pg.data_dir_empty()


@pytest.mark.skipif(os.geteuid() != 0, reason="the OS-user reachability check applies when running as root")
def test_unreachable_data_dir_is_reported_with_a_hint(nodes):
    private = os.path.join(nodes.root, "private")
    os.makedirs(private, mode=0o700)
    pg = Postgres(_settings(private, "hidden", free_port()), "hidden", bin_dir=nodes.bin_dir)
    with pytest.raises(PgCommandError, match="cannot reach .*chmod o\\+x"):
        pg.initdb()


def test_start_from_a_short_lived_thread_outlives_the_thread(fenced):
    # PR_SET_PDEATHSIG follows the forking *thread*; the keeper thread makes this safe for any caller
    worker = threading.Thread(target=fenced.start)
    worker.start()
    worker.join()
    time.sleep(0.5)
    try:
        assert fenced.owns_process and fenced.probe().is_primary
    finally:
        fenced.stop()


def test_start_fails_fast_when_the_superuser_is_refused(nodes, fenced):
    wrong = dataclasses.replace(fenced.settings, superuser=PgUser("postgres", "not-the-password"))
    pg = Postgres(wrong, "fenced", bin_dir=nodes.bin_dir)
    started = time.monotonic()
    try:
        with pytest.raises(PgCommandError, match="refuses the superuser.*authentication failed") as info:
            pg.start(timeout=30)
        assert time.monotonic() - started < 10
        assert "not-the-password" not in str(info.value)
        assert pg.is_running()  # left running, as documented
    finally:
        pg.stop()
