"""Per-invocation state shared by the commands: global options, lazily loaded config and clients, output."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from ctl.errors import ConfigError, UsageError

DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 10.0


@dataclass
class AppState:
    """Global options; the config and the clients are built on first use (many commands need neither)."""

    config_file: str | None = None
    dcs_url: str | None = None
    insecure: bool = False
    timeout: float = DEFAULT_TIMEOUT
    _config: Any = field(default=None, repr=False)
    _dcs: Any = field(default=None, repr=False)
    _rest: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise UsageError(f"--timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds, got {self.timeout:g}")

    @property
    def config(self) -> Any:
        """The loaded patroni.yml + PATRONI_* environment (+ --dcs-url).

        Raises:
            ConfigError: missing, unreadable or malformed file; a wrong type.
        """
        if self._config is None:
            from ctl import config

            self._config = config.load(self.config_file, os.environ, self.dcs_url)
        return self._config

    @property
    def namespace(self) -> str:
        return self.config.namespace

    @property
    def dcs(self) -> Any:
        """The etcd gateway client.

        Raises:
            ConfigError: no etcd configured.
        """
        if self._dcs is None:
            cfg = self.config
            if cfg.etcd is None:
                where = cfg.source if cfg.source and cfg.source != "environment" else "the configuration"
                raise ConfigError(f"no DCS configured in {where}: add an etcd3 section with hosts, "
                                  f"set PATRONI_ETCD3_HOSTS, or pass --dcs-url")
            from ctl.dcs.gateway import EtcdGateway

            self._dcs = EtcdGateway(cfg.etcd, timeout=self.timeout)
        return self._dcs

    @property
    def rest(self) -> Any:
        if self._rest is None:
            from ctl.restclient import RestClient

            self._rest = RestClient(self.config, insecure=self.insecure, timeout=self.timeout)
        return self._rest

    def close(self) -> None:
        for client in (self._dcs, self._rest):
            if client is not None:
                client.close()
        self._dcs = self._rest = None


COLOR_MODES = ("auto", "always", "never")
_color_mode = "auto"


def set_color_mode(mode: str) -> None:
    """The global `--color WHEN`: `always`/`never` override the terminal and NO_COLOR checks; `auto` keeps them."""
    global _color_mode
    _color_mode = mode if mode in COLOR_MODES else "auto"


def color_enabled(stream: Any = None) -> bool:
    """Colour only on a terminal, never with NO_COLOR set (any value) or TERM=dumb; `--color` overrides both."""
    if _color_mode != "auto":
        return _color_mode == "always"
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    return is_terminal(stream)


def is_terminal(stream: Any = None) -> bool:
    """stdout (or `stream`) is a terminal, whatever `--color` says: watch mode redraws in place only there."""
    stream = stream or sys.stdout
    if os.environ.get("TERM") == "dumb":  # cannot move the cursor
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()
