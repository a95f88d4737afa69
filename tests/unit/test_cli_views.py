"""The read-only commands through typer's CliRunner, with a fake DCS and httpx.MockTransport members."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from ctl import __version__
from ctl.cli.app import app
from ctl.config import build
from ctl.dcs.codec import parse_cluster
from ctl.errors import DcsUnavailable, ExitCode
from ctl.model import Cluster
from ctl.restclient import RestClient
from tests.support.patroni_dumps import fixture_path, load_dump, observed_stdout

CONFIG = build({"scope": "demo", "etcd3": {"hosts": ["127.0.0.1:2379"]}}, "test.yml")


class FakeDcs:
    """Answers like EtcdGateway from prepared snapshots."""

    def __init__(self, clusters: dict[str, Cluster], error: Exception | None = None) -> None:
        self.clusters = clusters
        self.error = error
        self.reads: list[str] = []
        self.closed = False

    def get_cluster(self, namespace: str, scope: str) -> Cluster:
        self.reads.append(namespace + scope)
        if self.error:
            raise self.error
        return self.clusters.get(scope) or parse_cluster(scope, f"{namespace}{scope}/", [])

    def list_clusters(self, namespace: str) -> list[str]:
        return sorted(self.clusters)

    def close(self) -> None:
        self.closed = True


def dump(name: str, scope: str = "demo") -> Cluster:
    kvs, revision = load_dump(name)
    return parse_cluster(scope, "/service/demo/", kvs, revision)


def run(args: list[str], dcs: FakeDcs | None = None, rest: RestClient | None = None, env: dict | None = None):
    dcs = dcs if dcs is not None else FakeDcs({"demo": dump("dcs_sync_mode"), "other": dump("dcs_paused", "other")})
    runner = CliRunner()
    return runner.invoke(app, args, obj={"config": CONFIG, "dcs": dcs, "rest": rest}, env=env or {})


def test_list_pretty_is_patronictls_table() -> None:
    r = run(["list"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout == observed_stdout("list_sync_mode.txt")
    assert r.stderr == ""


def test_list_several_clusters_and_formats() -> None:
    r = run(["list", "demo", "other", "-f", "json"])
    assert r.exit_code == 0
    first, second = r.stdout.splitlines()
    assert json.loads(first)[0]["Cluster"] == "demo" and json.loads(second)[0]["Cluster"] == "other"
    for fmt in ("tsv", "yaml", "yml", "pretty"):
        assert run(["list", "-f", fmt]).exit_code == 0
    r = run(["list", "-f", "tsv"])
    assert r.stdout.splitlines()[0].split("\t")[0] == "Cluster"
    assert "\x1b[" not in r.stdout


def test_list_extended_and_timestamp() -> None:
    r = run(["list", "-e", "-t"])
    lines = r.stdout.splitlines()
    assert len(lines[0]) == 19 and lines[0][4] == "-" and lines[0][13] == ":"  # YYYY-MM-DD HH:MM:SS
    assert "Pending restart" in lines[2] and "Tags" in lines[2]


def test_unknown_cluster_is_an_error_naming_the_known_ones() -> None:
    r = run(["list", "nope"])
    assert r.exit_code == ExitCode.NOT_FOUND
    assert r.stdout == ""
    assert r.stderr == "Error: cluster 'nope' not found; clusters in /service/: demo, other\n"


def test_dcs_unavailable_exit_code_and_one_line() -> None:
    dcs = FakeDcs({}, DcsUnavailable("cannot reach etcd at http://127.0.0.1:2379: connection refused"))
    r = run(["list"], dcs)
    assert r.exit_code == ExitCode.DCS_UNAVAILABLE == 4
    assert r.stderr == "Error: cannot reach etcd at http://127.0.0.1:2379: connection refused\n"
    assert dcs.closed


@pytest.mark.parametrize("args,needle", [
    (["list", "-f", "xml"], "invalid format 'xml'"),
    (["list", "--bogus"], "No such option: --bogus"),
    (["--timeout", "11", "list"], "--timeout must be"),
    (["--timeout", "0", "list"], "--timeout must be"),
    (["dsn", "-r", "leader", "-m", "node1"], "mutually exclusive"),
    (["dsn", "-r", "boss"], "unknown role 'boss'"),
    (["show-config", "-f", "tsv"], "invalid format"),
])
def test_usage_errors_exit_2_with_one_line(args: list[str], needle: str) -> None:
    r = run(args)
    assert r.exit_code == ExitCode.USAGE, (r.stdout, r.stderr)
    assert needle in r.stderr and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr + r.stdout


def test_topology_history_show_config_dsn() -> None:
    r = run(["topology"])
    assert r.exit_code == 0 and "| + node1 |" in r.stdout
    r = run(["history", "-f", "json"])
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 17
    r = run(["history"])
    assert r.stdout.splitlines()[1] == "| TL |       LSN | Reason                       | Timestamp" \
        "                        | New Leader |"
    r = run(["show-config"])
    assert r.exit_code == 0 and "synchronous_mode: true" in r.stdout and r.stdout.endswith("ttl: 30\n\n")
    assert json.loads(run(["show-config", "-f", "json"]).stdout)["ttl"] == 30
    assert run(["dsn"]).stdout == "host=127.0.0.1 port=5434\n"
    assert run(["dsn", "-r", "replica"]).stdout == "host=127.0.0.1 port=5433\n"
    assert run(["dsn", "-m", "node3"]).stdout == "host=127.0.0.1 port=5435\n"
    assert json.loads(run(["dsn", "other", "-f", "json"]).stdout) == {"member": "node1", "host": "127.0.0.1",
                                                                      "port": 5433}
    r = run(["dsn", "-m", "node9"])
    assert r.exit_code == ExitCode.NOT_FOUND and "node9" in r.stderr
    r = run(["dsn", "-r", "standby-leader"])
    assert r.exit_code == ExitCode.NOT_FOUND and "can not find a suitable member" in r.stderr


def test_no_cluster_name_and_no_scope() -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["list"], obj={"config": build({"etcd3": {"hosts": ["h:1"]}}), "dcs": FakeDcs({})})
    assert r.exit_code == ExitCode.USAGE and "no cluster name given" in r.stderr


def test_no_dcs_configured_is_a_config_error() -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["list"], obj={"config": build({"scope": "x"}, "/etc/x.yml")})
    assert r.exit_code == ExitCode.CONFIG
    assert r.stderr.startswith("Error: no DCS configured in /etc/x.yml")


def test_missing_config_file_exit_3(tmp_path) -> None:
    r = CliRunner().invoke(app, ["-c", str(tmp_path / "none.yml"), "list"])
    assert r.exit_code == ExitCode.CONFIG and "does not exist" in r.stderr
    r = CliRunner().invoke(app, ["list"], env={"PATRONICTL_CONFIG_FILE": str(tmp_path / "env.yml")})
    assert r.exit_code == ExitCode.CONFIG and "env.yml" in r.stderr


def test_version_without_cluster_needs_no_config() -> None:
    r = CliRunner().invoke(app, ["-c", "/nonexistent.yml", "version"])
    assert r.exit_code == 0 and r.stdout == f"hactl version {__version__}\n"
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout == f"hactl version {__version__}\n"


def patroni_transport(down: set[str]) -> httpx.MockTransport:
    with open(fixture_path("rest_leader_patroni.json"), encoding="utf-8") as f:
        body = json.load(f)

    def handler(request: httpx.Request) -> httpx.Response:
        port = request.url.port
        if str(port) in down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        assert request.url.path == "/patroni" and "authorization" not in request.headers
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handler)


def test_version_of_every_member() -> None:
    rest = RestClient(CONFIG, transport=patroni_transport(set()))
    r = run(["version", "demo"], rest=rest)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == (f"hactl version {__version__}\n\nnode1: Patroni 4.1.5 PostgreSQL 15.18\n"
                        "node2: Patroni 4.1.5 PostgreSQL 15.18\nnode3: Patroni 4.1.5 PostgreSQL 15.18\n")
    r = run(["version", "demo", "node2", "-f", "json"], rest=RestClient(CONFIG, transport=patroni_transport(set())))
    assert json.loads(r.stdout)["members"] == [{"name": "node2", "patroni_version": "4.1.5",
                                                "postgresql_version": "15.18"}]


def test_version_reports_an_unreachable_member_and_still_shows_the_others() -> None:
    rest = RestClient(CONFIG, transport=patroni_transport({"8009"}))
    r = run(["version", "demo"], rest=rest)
    lines = r.stdout.splitlines()
    assert lines[2] == "node1: Patroni 4.1.5 PostgreSQL 15.18"
    assert lines[3] == "node2: failed to get version: http://127.0.0.1:8009/patroni: connection refused"
    assert lines[4] == "node3: Patroni 4.1.5 PostgreSQL 15.18"
    assert r.exit_code == ExitCode.REST_UNAVAILABLE
    assert r.stderr == "Error: no version from 1 of 3 members: node2\n"


def test_version_unknown_member() -> None:
    r = run(["version", "demo", "node7"], rest=RestClient(CONFIG, transport=patroni_transport(set())))
    assert r.exit_code == ExitCode.NOT_FOUND and "node7" in r.stderr


def test_watch_prints_frames_until_ctrl_c(monkeypatch) -> None:
    import ctl.cli.views as views

    sleeps = []

    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(views.time, "sleep", fake_sleep)
    r = run(["list", "-w", "0.5", "-f", "tsv"])
    assert r.exit_code == 0
    assert r.stdout.count("Cluster\tMember") == 3 and sleeps == [0.5, 0.5, 0.5]
    sleeps.clear()
    r = run(["topology", "-W"])
    assert r.exit_code == 0 and sleeps[0] == 2.0


def test_watch_shows_dcs_errors_and_keeps_going(monkeypatch) -> None:
    import ctl.cli.views as views

    calls = []
    monkeypatch.setattr(views.time, "sleep", lambda s: calls.append(s) or (len(calls) > 1 and _interrupt()))
    r = run(["list", "-W"], FakeDcs({}, DcsUnavailable("cannot reach etcd at x: timed out")))
    assert r.exit_code == 0 and r.stdout.count("Error: cannot reach etcd at x: timed out") == 2


def _interrupt() -> None:
    raise KeyboardInterrupt


def test_help_lists_the_views() -> None:
    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0
    for name in ("list", "topology", "history", "show-config", "dsn", "version"):
        assert name in r.stdout
    # command modules outside the views load on demand, for the listing and for their own invocation
    import importlib.util

    from ctl.cli.app import PLUGINS

    if importlib.util.find_spec("ctl.cli.agent"):
        assert "\n  agent " in r.stdout
        assert CliRunner().invoke(app, ["agent", "--help"]).exit_code == 0
    assert set(PLUGINS) >= {"ctl.cli.agent", "ctl.cli.demo"}


def test_no_arguments_prints_help_and_exits_0() -> None:
    r = CliRunner().invoke(app, [])
    assert r.exit_code == 0 and r.stdout.startswith("Usage: hactl [OPTIONS] COMMAND") and r.stderr == ""


def test_colour_only_on_a_terminal_without_no_color(monkeypatch) -> None:
    from ctl.cli.context import color_enabled

    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert color_enabled(Tty()) is True
    monkeypatch.setenv("NO_COLOR", "")
    assert color_enabled(Tty()) is False
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert color_enabled(Tty()) is False
    monkeypatch.setenv("TERM", "xterm")
    import io

    assert color_enabled(io.StringIO()) is False


def test_unexpected_exceptions_are_one_line_errors(monkeypatch) -> None:
    class Broken(FakeDcs):
        def get_cluster(self, namespace: str, scope: str) -> Cluster:
            raise ZeroDivisionError("boom")

    monkeypatch.delenv("HACTL_DEBUG", raising=False)
    r = run(["list"], Broken({}))
    assert r.exit_code == 1
    assert r.stderr == "Error: internal error: ZeroDivisionError: boom (set HACTL_DEBUG=1 for a traceback)\n"
