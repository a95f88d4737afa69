"""ctl.pg.conf (pure rendering/parsing) and ctl.pg.binaries lookup."""

from __future__ import annotations

import os
import stat

import pytest

from ctl.errors import ConfigError, PgCommandError
from ctl.pg import binaries, conf
from ctl.pg.conf import Address


@pytest.mark.parametrize(
    "listen, connect, expected",
    [
        ("127.0.0.1:5433", None, Address("127.0.0.1", 5433, "127.0.0.1", 5433)),
        ("*:5432", "10.0.0.5:5432", Address("*", 5432, "10.0.0.5", 5432)),
        ("*:5432", None, Address("*", 5432, "127.0.0.1", 5432)),
        ("0.0.0.0", None, Address("0.0.0.0", 5432, "127.0.0.1", 5432)),
        ("0.0.0.0,::1:6000", "db1", Address("0.0.0.0,::1", 6000, "db1", 6000)),
        ("[::1]:5434", None, Address("::1", 5434, "::1", 5434)),
        ("10.1.1.1:5432", "pg.example:15432", Address("10.1.1.1", 5432, "pg.example", 15432)),
        (None, None, Address("localhost", 5432, "127.0.0.1", 5432)),
        (None, "db2:5500", Address("localhost", 5432, "db2", 5500)),
    ],
)
def test_parse_address(listen, connect, expected):
    assert conf.parse_address(listen, connect) == expected


@pytest.mark.parametrize("listen", ["127.0.0.1:port", "127.0.0.1:0", "127.0.0.1:70000"])
def test_parse_address_rejects_bad_ports(listen):
    with pytest.raises(ConfigError, match="postgresql.listen"):
        conf.parse_address(listen, None)


@pytest.mark.parametrize(
    "value, expected",
    [(True, "'on'"), (False, "'off'"), (10, "'10'"), ("128MB", "'128MB'"), ("it's", "'it''s'"),
     ("a\\b", "'a\\\\b'"), ("", "''")],
)
def test_quote_value(value, expected):
    assert conf.quote_value(value) == expected


def _managed(parameters=None, **kw):
    args = dict(address=Address("127.0.0.1", 5433, "127.0.0.1", 5433), socket_dir="/run/pg", hba_file="/d/pg_hba.conf",
                standby=False, primary_conninfo=None, primary_slot_name=None, recovery_target_timeline="latest")
    args.update(kw)
    return conf.managed_parameters(parameters or {}, **args)


def test_managed_parameters_defaults_and_overrides():
    out = _managed({"wal_level": "logical", "max_wal_senders": 5, "port": 9999, "listen_addresses": "*",
                    "shared_buffers": "16MB", "work_mem": None})
    assert out["listen_addresses"] == "127.0.0.1" and out["port"] == 5433  # settings win over parameters
    assert out["unix_socket_directories"] == "/run/pg" and out["hba_file"] == "/d/pg_hba.conf"
    assert out["wal_level"] == "logical" and out["max_wal_senders"] == 5  # parameters win over defaults
    assert out["hot_standby"] == "on" and out["wal_log_hints"] == "on" and out["max_replication_slots"] == 10
    assert out["shared_buffers"] == "16MB" and "work_mem" not in out
    assert out["primary_conninfo"] == "" and out["primary_slot_name"] == ""
    assert out["recovery_target_timeline"] == "latest"


def test_managed_parameters_standby():
    out = _managed(standby=True, primary_conninfo="host=a port=1", primary_slot_name="n2",
                   recovery_target_timeline="current")
    assert out["primary_conninfo"] == "host=a port=1" and out["primary_slot_name"] == "n2"
    assert out["recovery_target_timeline"] == "current"
    # a primary never keeps a stale primary_conninfo
    assert _managed(standby=False, primary_conninfo="host=a")["primary_conninfo"] == ""


def test_managed_parameters_rejects_bad_names():
    with pytest.raises(ConfigError, match="invalid parameter name"):
        _managed({"shared_buffers = 1\nfsync": "off"})


def test_render_conf_is_one_quoted_line_per_parameter():
    text = conf.render_conf({"port": 5433, "hot_standby": True, "primary_conninfo": "user='x' password=p"})
    lines = text.splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == ["port = '5433'", "hot_standby = 'on'", "primary_conninfo = 'user=''x'' password=p'"]


def test_with_include_is_idempotent_and_last():
    base = "max_connections = 100\n#comment\n\n"
    once = conf.with_include(base)
    assert once.rstrip().endswith(conf.INCLUDE_LINE)
    assert once.count(conf.INCLUDE_LINE) == 1
    assert conf.with_include(once) == once
    moved = conf.with_include(conf.INCLUDE_LINE + "\nport = 1\n")
    assert moved.count(conf.INCLUDE_LINE) == 1 and moved.rstrip().endswith(conf.INCLUDE_LINE)
    assert conf.with_include("") .strip().endswith(conf.INCLUDE_LINE)


def test_render_hba():
    text = conf.render_hba(["host all all 0.0.0.0/0 md5", "  ", "host replication replicator all md5"],
                           "postgres", True)
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert lines == ["local   all   postgres   md5", "host all all 0.0.0.0/0 md5", "host replication replicator all md5"]
    assert "local   all   postgres   trust" in conf.render_hba([], "postgres", False)
    assert 'local   all   "Admin"   md5' in conf.render_hba([], "Admin", True)


def test_default_hba_allows_replication_user():
    assert any("replication" in ln and "repl" in ln for ln in conf.default_hba("repl"))


@pytest.mark.parametrize(
    "options, expected",
    [
        (None, []),
        ([], []),
        (["data-checksums"], ["--data-checksums"]),
        (["data-checksums", {"encoding": "UTF8"}, {"locale": "en_US.UTF-8"}],
         ["--data-checksums", "--encoding=UTF8", "--locale=en_US.UTF-8"]),
        ([{"auth-host": "md5", "auth-local": "trust"}], ["--auth-host=md5", "--auth-local=trust"]),
        (["--no-sync"], ["--no-sync"]),
        ([{"wal-segsize": 32}], ["--wal-segsize=32"]),
    ],
)
def test_initdb_args(options, expected):
    assert conf.initdb_args(options) == expected


@pytest.mark.parametrize("options", [[{"pgdata": "/x"}], ["pwfile"], [{"username": "u"}], [42], ["bad option"],
                                     [{"": "x"}]])
def test_initdb_args_rejects(options):
    with pytest.raises(ConfigError, match="bootstrap.initdb"):
        conf.initdb_args(options)


@pytest.mark.parametrize(
    "member, slot",
    [("node1", "node1"), ("Node-1", "node_1"), ("pg.db.2", "pg_db_2"), ("a b", "au0032b"), ("ü", "u0252"),
     ("x" * 80, "x" * 63)],
)
def test_slot_name_like_patroni(member, slot):
    assert conf.slot_name(member) == slot


def test_split_password_and_build_conninfo():
    text = conf.build_conninfo(host="10.0.0.1", port=5432, user="replicator", password="s3cr et'", dbname=None)
    without, params, password = conf.split_password(text)
    assert password == "s3cr et'"
    assert "s3cr" not in without and "password" not in without
    assert params == {"host": "10.0.0.1", "port": "5432", "user": "replicator"}
    assert conf.split_password({"host": "h", "password": "p"})[2] == "p"
    assert conf.split_password("host=h")[2] is None


def test_split_password_never_echoes_a_malformed_conninfo():
    with pytest.raises(ConfigError) as info:
        conf.split_password("host=h password='unterminated")
    assert "unterminated" not in str(info.value)


def test_pgpass_line_escapes():
    assert conf.pgpass_line("rep", "a:b\\c") == "*:*:*:rep:a\\:b\\\\c\n"
    assert conf.pgpass_line(None, "p") == "*:*:*:*:p\n"


# ------------------------------------------------------------------------------------------------ binaries


def _fake_bin_dir(path) -> str:
    os.makedirs(path, exist_ok=True)
    for name in binaries.REQUIRED:
        exe = os.path.join(path, name)
        with open(exe, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(exe, os.stat(exe).st_mode | stat.S_IXUSR)
    return str(path)


def test_find_bin_dir_prefers_configured(tmp_path):
    configured = _fake_bin_dir(tmp_path / "custom")
    assert binaries.find_bin_dir(configured) == configured


def test_find_bin_dir_configured_but_incomplete_says_what_to_install(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PgCommandError, match="apt-get install postgresql-15"):
        binaries.find_bin_dir(str(tmp_path / "empty"))


def test_find_bin_dir_picks_newest_debian_layout(tmp_path, monkeypatch):
    for version in ("9.6", "13", "15"):
        _fake_bin_dir(tmp_path / version / "bin")
    (tmp_path / "16" / "bin").mkdir(parents=True)  # incomplete: skipped
    monkeypatch.setattr(binaries, "DEBIAN_GLOB", str(tmp_path / "*" / "bin"))
    assert binaries.find_bin_dir(None) == str(tmp_path / "15" / "bin")


def test_find_bin_dir_missing_everywhere(tmp_path, monkeypatch):
    monkeypatch.setattr(binaries, "DEBIAN_GLOB", str(tmp_path / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PgCommandError, match="Debian: apt-get install postgresql-15"):
        binaries.find_bin_dir(None)
