"""ctl.pg.postgres.Postgres: what it derives from the settings, without touching a server or the disk."""

from __future__ import annotations

import pytest

from ctl.config import PgUser, PostgresqlSettings
from ctl.errors import ConfigError
from ctl.pg import Postgres


def _pg(**kw) -> Postgres:
    settings = PostgresqlSettings(**{"data_dir": "/var/lib/hactl/n1/data", **kw})
    return Postgres(settings, "n1")


def test_addresses():
    pg = _pg(listen="0.0.0.0:5433", connect_address="10.0.0.7:6433")
    assert (pg.host, pg.port, pg.connect_port) == ("10.0.0.7", 5433, 6433)
    assert pg.conn_url == "postgres://10.0.0.7:6433/postgres"
    assert _pg(listen="[::1]:5432").conn_url == "postgres://[::1]:5432/postgres"


def test_default_paths_sit_next_to_the_data_dir():
    pg = _pg(listen="127.0.0.1:5433")
    assert pg.socket_dir == "/var/lib/hactl/n1/data.sock"
    assert pg.log_file == "/var/lib/hactl/n1/data.log"


def test_socket_dir_from_parameters_is_relative_to_the_data_dir():
    assert _pg(parameters={"unix_socket_directories": "..,/tmp"}).socket_dir == "/var/lib/hactl/n1"
    assert _pg(parameters={"unix_socket_directories": "/run/pg"}).socket_dir == "/run/pg"


def test_long_data_dir_gets_a_short_socket_dir():
    pg = _pg(data_dir="/srv/" + "x" * 120 + "/data", listen="127.0.0.1:5999")
    assert len(pg.socket_dir) < 100 and pg.socket_dir.endswith("hactl-n1-5999")


def test_conninfo_uses_the_socket_and_superuser():
    pg = _pg(listen="127.0.0.1:5433", superuser=PgUser("admin", "pw"))
    info = pg.conninfo()
    assert info["host"] == pg.socket_dir and info["port"] == 5433
    assert info["user"] == "admin" and info["password"] == "pw" and info["dbname"] == "postgres"
    other = pg.conninfo(user=PgUser("rep"), dbname="template1")
    assert other["user"] == "rep" and "password" not in other and other["dbname"] == "template1"


def test_requires_a_data_dir():
    with pytest.raises(ConfigError, match="data_dir"):
        Postgres(PostgresqlSettings(), "n1")
