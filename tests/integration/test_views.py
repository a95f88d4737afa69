"""The read-only commands as whole `hactl` processes against a real etcd seeded with Patroni 4.1.5 keys."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ctl.config import EtcdSettings
from ctl.dcs import keys
from ctl.dcs.gateway import EtcdGateway, b64
from ctl.errors import CasFailed, DcsError, DcsUnavailable, ExitCode
from tests.support.patroni_dumps import fixture_path, load_dump, observed_stdout
from tests.support.procs import EtcdServer, free_port, require_binary, wait_for

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ("etcd3", "grpc", "psycopg", "ctl.agent", "ctl.pg", "ctl.ha", "ctl.dcs.etcd3")


def gateway(server: EtcdServer, **kw) -> EtcdGateway:
    return EtcdGateway(EtcdSettings(hosts=(("127.0.0.1", server.client_port),), **kw), timeout=5)


def seed(server: EtcdServer, namespace: str, scope: str = "demo", dump: str = "dcs_sync_mode",
         api_ports: dict[str, int] | None = None, **kw) -> None:
    """Write a real Patroni dump under /<namespace>/<scope>/, optionally pointing api_urls at local ports."""
    kvs, _ = load_dump(dump)
    with gateway(server, **kw) as g:
        for kv in kvs:
            value = kv.value
            name = kv.key[len("/service/demo/"):]
            if api_ports and name.startswith("members/"):
                data = json.loads(value)
                data["api_url"] = f"http://127.0.0.1:{api_ports[name[8:]]}/patroni"
                value = json.dumps(data)
            g.put(keys.key(namespace, scope, name), value)


def write_config(tmp_path, namespace: str, hosts: list[str], scope: str = "demo", extra: str = "") -> str:
    path = tmp_path / "patroni.yml"
    host_lines = "".join(f"    - {h}\n" for h in hosts)
    path.write_text(f"scope: {scope}\nnamespace: {namespace}\netcd3:\n  hosts:\n{host_lines}{extra}")
    return str(path)


def hactl(*args: str, config: str | None = None, timeout: float = 30, env: dict | None = None):
    """Run `python -m ctl` as a user would; returns (CompletedProcess, wall seconds)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PATRONI", "PATRONICTL", "DCS_URL"))}
    full_env.pop("NO_COLOR", None)
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "ctl"] + (["-c", config] if config else []) + list(args)
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=full_env)
    return proc, time.monotonic() - start


@pytest.fixture
def cluster(etcd, namespace, tmp_path) -> str:
    seed(etcd, namespace)
    seed(etcd, namespace, scope="other", dump="dcs_scheduled_switchover")
    return write_config(tmp_path, namespace, [etcd.hostport])


# ------------------------------------------------------------------------------------------------ every command


def test_list_pretty_matches_patronictl_byte_for_byte(cluster) -> None:
    proc, _ = hactl("list", config=cluster)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == observed_stdout("list_sync_mode.txt")
    assert proc.stderr == ""


def test_list_every_format(cluster) -> None:
    rows = json.loads(hactl("list", "-f", "json", config=cluster)[0].stdout)
    assert [r["Member"] for r in rows] == ["node1", "node2", "node3"]
    assert rows[2]["Role"] == "Sync Standby" and rows[2]["Receive Lag"] == 0 and rows[2]["receive_lag_bytes"] == 0
    import yaml

    assert yaml.safe_load(hactl("list", "-f", "yaml", config=cluster)[0].stdout) == rows
    assert yaml.safe_load(hactl("list", "-f", "yml", config=cluster)[0].stdout) == rows
    tsv = hactl("list", "-f", "tsv", config=cluster)[0].stdout.splitlines()
    assert tsv[0] == "Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag"
    assert tsv[2] == "demo\tnode2\t127.0.0.1:5434\tLeader\trunning\t18\t\t\t\t"
    ext = hactl("list", "-e", "other", "demo", config=cluster)[0].stdout
    assert ext.count("+ Cluster: ") == 2 and "Pending restart" in ext
    assert " Switchover scheduled at: 2026-11-25T16:46:16+00:00\n                    from: node1\n" in ext
    ts = hactl("list", "-t", config=cluster)[0].stdout.splitlines()[0]
    assert len(ts) == 19 and ts[10] == " "


def test_topology_history_show_config_dsn(cluster) -> None:
    proc, _ = hactl("topology", "other", config=cluster)
    assert proc.returncode == 0
    assert "| + node2 | 127.0.0.1:5434 | Replica | streaming |" in proc.stdout
    hist = json.loads(hactl("history", "-f", "json", config=cluster)[0].stdout)
    assert len(hist) == 17 and hist[-1]["New Leader"] == "node2" and hist[0]["LSN"] == 67417816
    assert "| 17 | 101306704 |" in hactl("history", config=cluster)[0].stdout
    assert hactl("history", "other", "-f", "json", config=cluster)[0].stdout == "[]\n"
    conf = hactl("show-config", config=cluster)[0].stdout
    assert conf.startswith("loop_wait: 10\nmaximum_lag_on_failover: 1048576\n") and "synchronous_mode: true" in conf
    assert json.loads(hactl("show-config", "-f", "json", config=cluster)[0].stdout)["ttl"] == 30
    assert hactl("dsn", config=cluster)[0].stdout == "host=127.0.0.1 port=5434\n"
    assert hactl("dsn", "-r", "replica", config=cluster)[0].stdout == "host=127.0.0.1 port=5433\n"
    assert hactl("dsn", "other", "-m", "node3", config=cluster)[0].stdout == "host=127.0.0.1 port=5435\n"


def test_unknown_cluster_and_bad_input_are_one_line_errors(cluster, namespace) -> None:
    proc, _ = hactl("list", "nope", config=cluster)
    assert proc.returncode == ExitCode.NOT_FOUND
    assert proc.stderr == f"Error: cluster 'nope' not found; clusters in {namespace}: demo, other\n"
    for args, code in ((["list", "-f", "xml"], ExitCode.USAGE), (["dsn", "-m", "ghost"], ExitCode.NOT_FOUND),
                       (["list", "--nope"], ExitCode.USAGE), (["--timeout", "30", "list"], ExitCode.USAGE)):
        proc, _ = hactl(*args, config=cluster)
        assert proc.returncode == code, (args, proc.stderr)
        assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_config_errors(tmp_path, etcd, namespace) -> None:
    proc, _ = hactl("list", config=str(tmp_path / "missing.yml"))
    assert proc.returncode == ExitCode.CONFIG and "missing.yml" in proc.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("scope: x\netcd3:\n  hosts: [a\n")
    proc, _ = hactl("list", config=str(bad))
    assert proc.returncode == ExitCode.CONFIG
    assert proc.stderr.startswith(f"Error: malformed YAML in {bad}, line ") and ", column " in proc.stderr
    nodcs = tmp_path / "nodcs.yml"
    nodcs.write_text("scope: x\n")
    proc, _ = hactl("list", config=str(nodcs))
    assert proc.returncode == ExitCode.CONFIG and "no DCS configured" in proc.stderr
    # environment only, as patronictl: PATRONI_* variables and no file
    seed(etcd, namespace, scope="e1")
    proc, _ = hactl("list", "-f", "json", env={"PATRONI_ETCD3_HOSTS": etcd.hostport, "PATRONI_SCOPE": "e1",
                                               "PATRONI_NAMESPACE": namespace, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["Cluster"] == "e1"
    proc, _ = hactl("--dcs-url", f"etcd3://{etcd.hostport}{namespace}", "list", "e1", env={"HOME": str(tmp_path)})
    assert proc.returncode == 0 and "+ Cluster: e1 (" in proc.stdout


# ------------------------------------------------------------------------------------------------ version


class _PatroniStub(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path != "/patroni":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def patroni_stub():
    with open(fixture_path("rest_leader_patroni.json"), "rb") as f:
        _PatroniStub.body = f.read()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PatroniStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_version_asks_every_member_and_reports_the_unreachable_one(etcd, namespace, tmp_path, patroni_stub) -> None:
    dead = free_port()
    seed(etcd, namespace, api_ports={"node1": patroni_stub, "node2": dead, "node3": patroni_stub})
    config = write_config(tmp_path, namespace, [etcd.hostport])
    proc, wall = hactl("version", "demo", config=config)
    assert proc.stdout.splitlines() == [
        "hactl version 0.1.0", "",
        "node1: Patroni 4.1.5 PostgreSQL 15.18",
        f"node2: failed to get version: http://127.0.0.1:{dead}/patroni: connection refused",
        "node3: Patroni 4.1.5 PostgreSQL 15.18",
    ]
    assert proc.returncode == ExitCode.REST_UNAVAILABLE
    assert proc.stderr == "Error: no version from 1 of 3 members: node2\n"
    proc, _ = hactl("version", "demo", "node1", "-f", "json", config=config)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["members"] == [{"name": "node1", "patroni_version": "4.1.5",
                                                   "postgresql_version": "15.18"}]


def test_version_times_out_on_a_hung_member(etcd, namespace, tmp_path, patroni_stub) -> None:
    with socket.socket() as hung:  # accepts connections (backlog) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        port = hung.getsockname()[1]
        seed(etcd, namespace, api_ports={"node1": patroni_stub, "node2": port, "node3": port})
        config = write_config(tmp_path, namespace, [etcd.hostport])
        proc, wall = hactl("--timeout", "1", "version", "demo", config=config)
    assert proc.returncode == ExitCode.REST_UNAVAILABLE
    assert "node2: failed to get version: http://127.0.0.1:" in proc.stdout and "no answer within 1s" in proc.stdout
    assert "node1: Patroni 4.1.5" in proc.stdout
    assert wall < 4  # both hung members were asked at the same time


# ------------------------------------------------------------------------------------------------ etcd trouble


def test_etcd_down_fails_fast_with_exit_4(tmp_path, namespace) -> None:
    port = free_port()
    config = write_config(tmp_path, namespace, [f"127.0.0.1:{port}"])
    proc, wall = hactl("list", config=config)
    assert proc.returncode == ExitCode.DCS_UNAVAILABLE == 4
    assert proc.stderr == f"Error: cannot reach etcd at http://127.0.0.1:{port}: connection refused\n"
    assert wall < 5


def test_hung_etcd_is_bounded_by_timeout(tmp_path, namespace) -> None:
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        port = hung.getsockname()[1]
        config = write_config(tmp_path, namespace, [f"127.0.0.1:{port}"])
        proc, wall = hactl("--timeout", "1.5", "list", config=config)
    assert proc.returncode == ExitCode.DCS_UNAVAILABLE
    assert proc.stderr == f"Error: cannot reach etcd at http://127.0.0.1:{port}: timed out\n"
    assert 1.4 < wall < 1.5 + 2.5  # the bound, plus interpreter start-up on a busy 2-core machine


def test_dead_or_hung_first_endpoint_uses_the_next(etcd, namespace, tmp_path) -> None:
    seed(etcd, namespace)
    dead = free_port()
    config = write_config(tmp_path, namespace, [f"127.0.0.1:{dead}", etcd.hostport])
    proc, _ = hactl("list", "-f", "json", config=config)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 3
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        config = write_config(tmp_path, namespace, [f"127.0.0.1:{hung.getsockname()[1]}", etcd.hostport])
        proc, wall = hactl("--timeout", "4", "list", "-f", "json", config=config)
    assert proc.returncode == 0, proc.stderr
    assert wall < 4 + 2


def test_etcd_stopped_mid_watch_is_shown_and_the_watch_goes_on(tmp_path, namespace) -> None:
    server = EtcdServer().start()
    try:
        seed(server, namespace)
        config = write_config(tmp_path, namespace, [server.hostport])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PATRONI")}
        proc = subprocess.Popen([sys.executable, "-m", "ctl", "-c", config, "--timeout", "1", "list", "-w", "0.3",
                                 "-f", "tsv"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                env=env)
        try:
            time.sleep(1.5)
            server.stop()
            time.sleep(2.5)
            assert proc.poll() is None  # still watching
            proc.send_signal(2)  # Ctrl-C
            out, errtext = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, errtext
        assert out.count("Cluster\tMember") >= 2 and "Error: cannot reach etcd at" in out
        assert "Traceback" not in errtext
    finally:
        server.cleanup()


def test_ctrl_c_without_watch_exits_130_quietly(tmp_path, namespace) -> None:
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        config = write_config(tmp_path, namespace, [f"127.0.0.1:{hung.getsockname()[1]}"])
        proc = subprocess.Popen([sys.executable, "-m", "ctl", "-c", config, "--timeout", "8", "list"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        time.sleep(1.0)
        proc.send_signal(2)
        out, errtext = proc.communicate(timeout=10)
    assert proc.returncode == 130 and errtext == "" and out == ""


# ------------------------------------------------------------------------------------------------ auth


def _gw_post(port: int, path: str, body: dict, token: str | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Authorization": token} if token else {}
    conn.request("POST", path, body=json.dumps(body), headers=headers)
    resp = conn.getresponse()
    data = json.loads(resp.read() or b"{}")
    conn.close()
    assert resp.status == 200, data
    return data


@pytest.fixture(scope="module")
def auth_etcd():
    """An etcd with authentication on: root/rootpw and a read-only user for /auth-ns/."""
    server = EtcdServer().start()
    port = server.client_port
    seed(server, "/auth-ns/")
    _gw_post(port, "/v3/auth/user/add", {"name": "root", "password": "rootpw"})
    _gw_post(port, "/v3/auth/user/grant", {"user": "root", "role": "root"})
    _gw_post(port, "/v3/auth/enable", {})
    yield server
    server.cleanup()


def test_username_password_auth(auth_etcd, tmp_path) -> None:
    ok = write_config(tmp_path, "/auth-ns/", [auth_etcd.hostport], extra="  username: root\n  password: rootpw\n")
    proc, _ = hactl("list", "-f", "json", config=ok)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 3
    wrong = write_config(tmp_path, "/auth-ns/", [auth_etcd.hostport],
                         extra="  username: root\n  password: WrongSecret42\n")
    proc, _ = hactl("list", config=wrong)
    assert proc.returncode == ExitCode.FAILED
    assert proc.stderr.startswith("Error: etcd at http://127.0.0.1:") and "authentication failed" in proc.stderr
    assert "WrongSecret42" not in proc.stderr + proc.stdout
    anonymous = write_config(tmp_path, "/auth-ns/", [auth_etcd.hostport])
    proc, _ = hactl("list", config=anonymous)
    assert proc.returncode == ExitCode.FAILED and "authentication is enabled" in proc.stderr


def test_expired_token_is_renewed_once(auth_etcd) -> None:
    g = gateway(auth_etcd, username="root", password="rootpw")
    assert len(g.get_prefix("/auth-ns/demo/")[0]) == 10
    for endpoint in g._transport.endpoints:
        endpoint.token = "stale.token.1"
    assert len(g.get_prefix("/auth-ns/demo/")[0]) == 10
    assert g._transport.endpoints[0].token != "stale.token.1"
    g.close()


# ------------------------------------------------------------------------------------------------ gateway writes


def test_compare_and_set_writes(etcd, namespace) -> None:
    g = gateway(etcd)
    key = namespace + "c/config"
    rev = g.put(key, "v1", create=True)
    with pytest.raises(CasFailed):
        g.put(key, "v0", create=True)
    kvs, _ = g.get_prefix(namespace + "c/")
    assert [(kv.value, kv.mod_revision) for kv in kvs] == [("v1", rev)]
    rev2 = g.put(key, "v2", mod_revision=rev)
    with pytest.raises(CasFailed):
        g.put(key, "v3", mod_revision=rev)
    with pytest.raises(CasFailed):
        g.delete(key, mod_revision=rev)
    g.delete(key, mod_revision=rev2)
    assert g.get_prefix(namespace + "c/")[0] == []
    for name in ("a", "b", "c"):
        g.put(namespace + f"x/{name}", name)
        g.put(namespace + f"y/{name}", name)
    assert g.list_clusters(namespace) == ["x", "y"]
    assert g.delete_prefix(namespace + "x/") == 3
    assert g.list_clusters(namespace) == ["y"]
    g.put(namespace + "y/a", "unconditional")
    assert g.get_prefix(namespace + "y/a")[0][0].value == "unconditional"
    g.close()


def test_gateway_errors_from_etcd_are_dcs_errors(etcd) -> None:
    g = gateway(etcd)
    with pytest.raises(DcsError) as exc:
        g._call("/kv/range", {"key": b64("a"), "range_end": "!!notbase64"})
    assert not isinstance(exc.value, DcsUnavailable)
    g.close()


# ------------------------------------------------------------------------------------------------ speed hygiene


def test_cli_path_imports_no_agent_postgres_or_grpc_code(cluster) -> None:
    """`hactl list` must not pay for grpc/etcd3/psycopg/agent imports, nor for the other commands' modules (they
    load on demand, see ctl.cli.app.PLUGINS); json output needs no rich either."""
    script = (
        "import sys\n"
        "from ctl.cli.app import main\n"
        "try:\n    main(sys.argv[1:])\n"
        "except SystemExit as e:\n    code = e.code\n"
        f"heavy = [m for m in sys.modules if m.split('.')[0] in ('etcd3', 'grpc', 'psycopg', 'httpx') "
        f"or m.split('.')[:2] in (['ctl', 'agent'], ['ctl', 'pg'], ['ctl', 'ha']) or m == 'ctl.dcs.etcd3' "
        f"or (m.startswith('ctl.cli.') and m not in ('ctl.cli.app', 'ctl.cli.context', 'ctl.cli.views')) "
        f"or (m.startswith('ctl.services.') and m != 'ctl.services.cluster')]\n"
        "print('HEAVY', sorted(heavy), 'RICH', 'rich' in sys.modules, 'CODE', code, file=sys.stderr)\n"
    )
    for args, rich_expected in ((["list", "-f", "json"], False), (["list"], True), (["topology"], True),
                                (["history", "-f", "json"], False), (["list", "--all", "-f", "json"], False)):
        proc = subprocess.run([sys.executable, "-c", script, "-c", cluster, *args], capture_output=True, text=True,
                              cwd=REPO, timeout=30)
        assert f"HEAVY [] RICH {rich_expected} CODE 0" in proc.stderr, (args, proc.stderr)


def test_list_reads_the_cluster_in_one_round_trip(etcd, namespace) -> None:
    """50 members cost one range request, like 3 do."""
    with gateway(etcd) as g:
        for i in range(50):
            g.put(keys.member_key(namespace, "big", f"m{i:02d}"),
                  json.dumps({"conn_url": f"postgres://10.0.0.{i}:5432/postgres", "state": "running",
                              "role": "replica", "api_url": f"http://10.0.0.{i}:8008/patroni"}))
        calls = []
        original = g._call
        g._call = lambda path, payload: calls.append(path) or original(path, payload)  # type: ignore[method-assign]
        cluster = g.get_cluster(namespace, "big")
        assert len(cluster.members) == 50 and calls == ["/kv/range"]
        calls.clear()
        every = g.get_all_clusters(namespace)  # list --all: every cluster, still one request
    assert calls == ["/kv/range"] and [len(c.members) for c in every if c.scope == "big"] == [50]


def test_tls_with_ca_and_client_certificate(tmp_path, namespace) -> None:
    openssl = require_binary(__import__("shutil").which("openssl"), "openssl", "openssl")
    d = tmp_path

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=hactl-test-ca")
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1", "-extfile", "san.cnf")
    server = EtcdServer(extra_args=("--cert-file", str(d / "server.pem"), "--key-file", str(d / "server.key"),
                                    "--trusted-ca-file", str(d / "ca.pem"), "--client-cert-auth"))
    url = f"https://127.0.0.1:{server.client_port}"
    server_url = server.url
    try:
        # EtcdServer speaks http; start it with https URLs and poll /health over TLS ourselves.
        binary = require_binary(__import__("shutil").which("etcd") or "/usr/bin/etcd", "etcd", "etcd-server")
        peer = f"http://127.0.0.1:{server.peer_port}"
        log = open(os.path.join(server.data_dir, "etcd.log"), "ab")
        server.log_path = os.path.join(server.data_dir, "etcd.log")
        server.proc = subprocess.Popen(
            [binary, "--name", "default", "--data-dir", os.path.join(server.data_dir, "data"),
             "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", peer,
             "--initial-advertise-peer-urls", peer, "--initial-cluster", f"default={peer}", "--log-level", "warn",
             *server.extra_args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        settings = dict(protocol="https", cacert=str(d / "ca.pem"), cert=str(d / "client.pem"),
                        key=str(d / "client.key"))
        g = EtcdGateway(EtcdSettings(hosts=(("127.0.0.1", server.client_port),), **settings), timeout=2)
        wait_for(lambda: g.list_clusters("/") is not None, timeout=20, what="etcd over TLS")
        seed(server, namespace, **settings)
        g.close()
        extra = (f"  protocol: https\n  cacert: {d / 'ca.pem'}\n  cert: {d / 'client.pem'}\n"
                 f"  key: {d / 'client.key'}\n")
        config = write_config(tmp_path, namespace, [server.hostport], extra=extra)
        proc, _ = hactl("list", "-f", "json", config=config, env={"SSL_CERT_FILE": "/nonexistent",
                                                                  "REQUESTS_CA_BUNDLE": "/nonexistent"})
        assert proc.returncode == 0, proc.stderr
        assert len(json.loads(proc.stdout)) == 3
        # without our CA the server certificate is not trusted
        no_ca = write_config(tmp_path, namespace, [server.hostport], extra=extra.replace(str(d / "ca.pem"),
                                                                                         "/etc/ssl/certs/ca-certificates.crt"))
        proc, _ = hactl("list", config=no_ca)
        assert proc.returncode == ExitCode.DCS_UNAVAILABLE and "CERTIFICATE_VERIFY_FAILED" in proc.stderr
    finally:
        server.cleanup()
    assert server_url.startswith("http://")


def test_kept_alive_connection_survives_an_etcd_restart(namespace) -> None:
    server = EtcdServer().start()
    try:
        seed(server, namespace)
        g = gateway(server)
        assert len(g.get_prefix(namespace)[0]) == 10
        sock = g._transport.endpoints[0].conn.sock
        assert len(g.get_prefix(namespace)[0]) == 10 and g._transport.endpoints[0].conn.sock is sock  # reused
        server.stop()
        server.start()
        assert len(g.get_prefix(namespace)[0]) == 10  # the stale connection is replaced, no error
        g.close()
    finally:
        server.cleanup()


def test_watch_on_a_terminal_redraws_in_place_and_ctrl_c_exits_0(cluster) -> None:
    pexpect = pytest.importorskip("pexpect")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATRONI", "NO_COLOR"))}
    env["TERM"] = "xterm"
    child = pexpect.spawn(sys.executable, ["-m", "ctl", "-c", cluster, "list", "-w", "0.3"], cwd=REPO, env=env,
                          encoding="utf-8", timeout=15, dimensions=(40, 200))
    try:
        child.expect("Cluster: demo")
        child.expect("Sync Standby")
        time.sleep(1.2)  # a few redraws
        child.sendintr()
        child.expect(pexpect.EOF)
        child.close()
        seen = child.before or ""
    finally:
        if child.isalive():
            child.terminate(force=True)
    assert child.exitstatus == 0, seen
    assert "Traceback" not in seen
    assert "\x1b[" in seen  # colour and cursor control on a terminal

    env["NO_COLOR"] = "1"
    plain = pexpect.spawn(sys.executable, ["-m", "ctl", "-c", cluster, "list"], cwd=REPO, env=env,
                          encoding="utf-8", timeout=15, dimensions=(40, 200))
    plain.expect(pexpect.EOF)
    plain.close()
    assert plain.exitstatus == 0 and "Sync Standby" in plain.before and "\x1b[" not in plain.before


def test_a_lost_answer_to_a_cas_write_is_unknown_not_retried(etcd, namespace) -> None:
    from ctl.errors import ResultUnknown

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        settings = EtcdSettings(hosts=(("127.0.0.1", hung.getsockname()[1]), ("127.0.0.1", etcd.client_port)))
        g = EtcdGateway(settings, timeout=2)
        start = time.monotonic()
        with pytest.raises(ResultUnknown, match="may or may not have been applied"):
            g.put(namespace + "k", "v", create=True)  # sent to the hung endpoint: never re-sent to the live one
        assert time.monotonic() - start < 2.5
        assert gateway(etcd).get_prefix(namespace)[0] == []
        assert len(g.get_prefix(namespace)[0]) == 0  # reads are safe to retry on the next endpoint
        g.put(namespace + "k", "v")  # an unconditional put is idempotent: retried on the live endpoint
        g.close()
    assert gateway(etcd).get_prefix(namespace)[0][0].value == "v"


def test_credentials_for_an_etcd_without_auth_are_not_an_error(etcd, namespace) -> None:
    seed(etcd, namespace)
    g = gateway(etcd, username="root", password="unused")
    assert len(g.get_prefix(namespace)[0]) == 10
    assert len(g.get_prefix(namespace)[0]) == 10  # no second authenticate round trip either
    g.close()
