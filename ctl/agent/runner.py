"""`hactl agent -c node.yml`: build the agent from patroni.yml and run it until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import sys

from ctl import __version__
from ctl.config import Config, load

log = logging.getLogger("hactl.agent")


def _setup_logging(config: Config, log_file: str | None) -> None:
    level_name = str(config.log.get("level", os.environ.get("PATRONI_LOG_LEVEL", "INFO"))).upper()
    level = getattr(logging, level_name, logging.INFO)
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {config.name}: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("grpc", "etcd3", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build(config_path: str) -> Config:
    """Load and validate the configuration (nothing started yet).

    Raises:
        ConfigError: a bad configuration file.
    """
    from ctl.agent import settings as st

    config = load(config_path, require_file=True)
    st.validate(config)
    return config


def run(config_path: str, user: str | None = None, log_file: str | None = None) -> int:
    """Run the agent in the foreground; returns the exit code.

    Raises:
        CtlError: configuration or start-up failures (the CLI prints them as one line).
    """
    from ctl.agent import settings as st
    from ctl.agent.api import ApiServer
    from ctl.agent.loop import Agent
    from ctl.dcs.etcd3 import Etcd3Dcs, majority
    from ctl.pg.osuser import ensure_os_user, is_root
    from ctl.pg.postgres import Postgres

    config = build(config_path)
    _setup_logging(config, log_file)
    os_user = None
    if is_root():
        os_user = (user or "postgres")
        ensure_os_user(os_user)
    assert config.etcd is not None
    # A DCS call moves on to the next endpoint when one times out, up to majority(n) timeouts (2 with 3 or 4
    # members): keep that well inside retry_timeout, the window in which a leader that cannot renew must demote.
    retry_timeout = st.ha_settings(config, None).retry_timeout
    timeouts = max(1, majority(len(config.etcd.hosts)) - 1)
    dcs = Etcd3Dcs(config.etcd, config.namespace, config.scope or "",
                   timeout=max(0.5, min(2.0, retry_timeout / 3.0 / timeouts)))
    pg = Postgres(config.postgresql, config.name or "", os_user=os_user, bin_dir=config.postgresql.bin_dir,
                  log_file=os.path.join(os.path.dirname(os.path.abspath(config.postgresql.data_dir or ".")),
                                        f"{config.name}-postgresql.log"))
    agent = Agent(config, dcs, pg)
    live = _live_status(agent, pg)
    api = ApiServer(
        config.restapi,
        scope=config.scope or "",
        name=config.name or "",
        version=__version__,
        get_status=live.status,
        read_cluster=agent.read_cluster,
        observed_status=agent.status,
    )
    _register_operations(api, agent, live.status)
    agent.on_before_release = api.stop

    def on_signal(signum, frame):  # noqa: ARG001
        log.info("received %s: shutting down", signal.Signals(signum).name)
        agent.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    api.start()
    log.info("hactl agent %s starting: scope %s, member %s, REST API on %s", __version__, config.scope,
             config.name, config.restapi.listen)
    try:
        agent.run()
    finally:
        try:
            api.stop()
        except Exception:  # noqa: BLE001 - already stopped
            pass
        dcs.close()
    log.info("agent stopped")
    return 0


def _register_operations(api, agent, status) -> None:
    """Unsafe endpoints: switchover/failover, restart, reload, reinitialize, config (ctl/agent/operations.py)."""
    from ctl.agent import failsafe
    from ctl.agent.operations import register_operations

    register_operations(api, agent, status=status)
    failsafe.register(api, agent)


def _live_status(agent, pg):
    """The REST API's status: PostgreSQL read at request time on a connection of its own (ctl/agent/live.py)."""
    from ctl.agent.live import LIVE_TIMEOUT, LiveStatus
    from ctl.pg.live import LiveReader

    reader = LiveReader(lambda: pg.conninfo(connect_timeout=2), statement_timeout=LIVE_TIMEOUT)
    return LiveStatus(agent.status, reader.read)
