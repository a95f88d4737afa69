"""Pure rendering of what hactl writes into a data directory, and parsing of what it is given.

- `postgresql.hactl.conf`: every parameter hactl manages. `postgresql.conf` (from initdb, or copied by
  pg_basebackup/pg_rewind) gets one `include 'postgresql.hactl.conf'` line appended, so our values win over
  initdb's defaults; `ALTER SYSTEM` (postgresql.auto.conf) still wins over ours, as in plain PostgreSQL.
- `pg_hba.conf`: the configured lines, preceded by one managed line that lets the agent reach its own server
  over the unix socket as the superuser (`md5` when the superuser has a password, else `trust`; the socket
  directory is private to the OS user).
- `standby.signal`: present iff the node is a standby.

No I/O here; `Postgres.write_config` writes these files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ctl.errors import ConfigError

DEFAULT_PORT = 5432
HACTL_CONF = "postgresql.hactl.conf"
INCLUDE_LINE = f"include '{HACTL_CONF}'"
_INCLUDE_COMMENT = "# hactl: managed parameters, must stay last"

# Set unless the configuration gives them: what streaming replication and pg_rewind need.
REPLICATION_DEFAULTS: Mapping[str, Any] = {
    "wal_level": "replica",
    "hot_standby": "on",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_log_hints": "on",
    "wal_keep_size": "128MB",
}
# Never taken from `parameters`: they come from the node's settings or would move the files we manage.
OWNED_BY_HACTL = ("listen_addresses", "port", "unix_socket_directories", "hba_file", "data_directory",
                  "config_file", "primary_conninfo", "primary_slot_name", "recovery_target_timeline")
# initdb options hactl sets itself.
RESERVED_INITDB = {"pgdata", "D", "pwfile", "username", "U", "pwprompt", "W"}


@dataclass(frozen=True)
class Address:
    """Where the server listens, and the host:port other nodes use to reach it."""

    listen_addresses: str
    port: int
    connect_host: str
    connect_port: int


def _split_hostport(text: str, default_port: int, what: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [::1]:5432
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    elif text.count(":") == 1 or (":" in text and "," in text):
        host, _, port_text = text.rpartition(":")
    else:
        host, port_text = text, ""
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ConfigError(f"postgresql.{what}: bad port in {text!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"postgresql.{what}: port {port} out of range")
    return host.strip(), port


def parse_address(listen: str | None, connect_address: str | None) -> Address:
    """`postgresql.listen` ("127.0.0.1:5433", "*:5432", "0.0.0.0,::1:5432") + `connect_address` -> Address.

    Raises:
        ConfigError: a port is not a number or out of range.
    """
    addresses, port = _split_hostport(listen, DEFAULT_PORT, "listen") if listen else ("localhost", DEFAULT_PORT)
    addresses = addresses or "localhost"
    if connect_address:
        host, cport = _split_hostport(connect_address, port, "connect_address")
    else:
        first = addresses.split(",")[0].strip()
        host, cport = ("127.0.0.1" if first in ("*", "0.0.0.0", "::", "localhost", "") else first), port
    return Address(addresses, port, host, cport)


def quote_value(value: Any) -> str:
    """A postgresql.conf value: booleans as on/off, everything single-quoted (valid for every type)."""
    if isinstance(value, bool):
        value = "on" if value else "off"
    text = str(value).replace("\\", "\\\\").replace("'", "''")
    return f"'{text}'"


_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def managed_parameters(
    parameters: Mapping[str, Any],
    *,
    address: Address,
    socket_dir: str,
    hba_file: str,
    standby: bool,
    primary_conninfo: str | None,
    primary_slot_name: str | None,
    recovery_target_timeline: str,
) -> dict[str, Any]:
    """The full parameter set for postgresql.hactl.conf, in a stable order.

    Raises:
        ConfigError: a parameter name is not a valid identifier (it would break the file).
    """
    out: dict[str, Any] = {
        "listen_addresses": address.listen_addresses,
        "port": address.port,
        "unix_socket_directories": socket_dir,
        "unix_socket_permissions": "0700",
        "hba_file": hba_file,
    }
    for name, value in REPLICATION_DEFAULTS.items():
        out[name] = value
    for name, value in parameters.items():
        if not _PARAM_NAME.match(name):
            raise ConfigError(f"postgresql.parameters: invalid parameter name {name!r}")
        if name in OWNED_BY_HACTL or value is None:
            continue
        out[name] = value
    if standby and primary_conninfo:
        out["primary_conninfo"] = primary_conninfo
        if primary_slot_name:
            out["primary_slot_name"] = primary_slot_name
    else:
        out["primary_conninfo"] = ""
        out["primary_slot_name"] = ""
    out["recovery_target_timeline"] = recovery_target_timeline
    return out


def render_conf(parameters: Mapping[str, Any]) -> str:
    lines = ["# Written by hactl on every (re)configuration; edits here are lost. Use postgresql.parameters."]
    lines += [f"{name} = {quote_value(value)}" for name, value in parameters.items()]
    return "\n".join(lines) + "\n"


def with_include(postgresql_conf: str) -> str:
    """postgresql.conf text with our include as its last directive (added once, kept last)."""
    ours = (INCLUDE_LINE, _INCLUDE_COMMENT)
    kept = [ln for ln in postgresql_conf.splitlines() if ln.strip() not in ours]
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept + ["", _INCLUDE_COMMENT, INCLUDE_LINE]) + "\n"


def render_hba(lines: Sequence[str], superuser: str, superuser_has_password: bool) -> str:
    method = "md5" if superuser_has_password else "trust"
    out = [
        "# Written by hactl; edits here are lost. Use bootstrap.pg_hba / postgresql.pg_hba.",
        "# The agent reaches its own server over the private unix socket as the superuser:",
        f"local   all   {_hba_role(superuser)}   {method}",
    ]
    out += [str(ln).strip() for ln in lines if str(ln).strip()]
    return "\n".join(out) + "\n"


def default_hba(replication_user: str) -> list[str]:
    """Used when no pg_hba is configured: password authentication from anywhere, replication included."""
    return [
        "local   all           all                 md5",
        f"host    replication   {_hba_role(replication_user)}   all   md5",
        "host    all           all                 all   md5",
    ]


def _hba_role(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def initdb_args(options: Sequence[str | Mapping[str, Any]] | None) -> list[str]:
    """Patroni's `bootstrap.initdb` list (["data-checksums", {"encoding": "UTF8"}]) -> initdb arguments.

    Raises:
        ConfigError: an entry is malformed, or sets something hactl controls (pgdata, username, pwfile).
    """
    args: list[str] = []
    for item in options or ():
        pairs: list[tuple[str, Any]]
        if isinstance(item, str):
            pairs = [(item, None)]
        elif isinstance(item, Mapping):
            pairs = list(item.items())
        else:
            raise ConfigError(f"bootstrap.initdb: entries are strings or one-key mappings, got {item!r}")
        for key, value in pairs:
            key = str(key).strip().lstrip("-")
            if not key or not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", key):
                raise ConfigError(f"bootstrap.initdb: bad option {key!r}")
            if key in RESERVED_INITDB:
                raise ConfigError(f"bootstrap.initdb: {key!r} is set by hactl and cannot be given")
            if value is None:
                args.append(f"--{key}")
            else:
                if isinstance(value, bool):
                    value = "on" if value else "off"
                args.append(f"--{key}={value}")
    return args


def slot_name(member_name: str) -> str:
    """Patroni's slot name for a member: lowercase, `-`/`.` -> `_`, other characters -> uNNNN, max 63."""

    def replace(match: re.Match[str]) -> str:
        c = match.group(0)
        return "_" if c in "-." else f"u{ord(c):04d}"

    return re.sub(r"[^a-z0-9_]", replace, member_name.lower())[:63]


# ------------------------------------------------------------------------------------------------ conninfo


def split_password(conninfo: str | Mapping[str, Any]) -> tuple[str, dict[str, str], str | None]:
    """(conninfo without password, its parameters, the password) so the password can go into a pgpass file.

    Raises:
        ConfigError: the conninfo cannot be parsed (the message never contains it).
    """
    try:
        params = dict(conninfo) if isinstance(conninfo, Mapping) else conninfo_to_dict(conninfo)
    except Exception:  # noqa: BLE001 - psycopg raises ProgrammingError; never echo the text (password)
        raise ConfigError("malformed connection string") from None
    params = {k: str(v) for k, v in params.items() if v is not None}
    password = params.pop("password", None)
    return make_conninfo("", **params), params, password


def build_conninfo(**params: Any) -> str:
    """A libpq keyword/value string (values quoted as needed); None values are left out."""
    return make_conninfo("", **{k: str(v) for k, v in params.items() if v is not None})


def pgpass_line(user: str | None, password: str) -> str:
    """One ~/.pgpass line matching any host, port and database for `user`."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace(":", "\\:")

    return f"*:*:*:{esc(user) if user else '*'}:{esc(password)}\n"
