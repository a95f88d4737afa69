"""The one error tree of hactl; every class carries the exit code the CLI returns for it.

Layers convert foreign exceptions at their own edge (etcd client -> DcsError, httpx -> RestError,
psycopg/pg_ctl -> PgCommandError). Only the CLI turns a CtlError into `Error: <message>` and an exit code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; the README and the man page print this table."""

    OK = 0
    FAILED = 1  # the operation was attempted and did not happen
    USAGE = 2  # bad command line (typer/click also use 2)
    CONFIG = 3  # configuration file missing, malformed or invalid
    DCS_UNAVAILABLE = 4  # etcd could not be reached within the timeout
    NOT_FOUND = 5  # unknown cluster, member or key
    ABORTED = 6  # declined at a prompt, or a prompt was needed with no terminal
    REFUSED = 7  # the cluster refused the request (validation, preconditions)
    TIMEOUT = 8  # the request was accepted but the result did not show within --timeout
    UNKNOWN = 9  # the result could not be determined
    REST_UNAVAILABLE = 10  # a member's REST API could not be reached
    FINDINGS = 11  # `hactl check` found an error (with --strict: or a warning)
    INTERRUPTED = 130  # Ctrl-C


class CtlError(Exception):
    """Base of every error hactl reports to a user."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(CtlError):
    exit_code = ExitCode.USAGE


class ConfigError(CtlError):
    exit_code = ExitCode.CONFIG


class DcsError(CtlError):
    """etcd answered with an error (auth, permission, bad request)."""

    exit_code = ExitCode.FAILED


class DcsUnavailable(DcsError):
    """No etcd endpoint answered in time."""

    exit_code = ExitCode.DCS_UNAVAILABLE


class CasFailed(DcsError):
    """A compare-and-set lost the race: the key changed since it was read."""

    exit_code = ExitCode.FAILED


class NotFound(CtlError):
    exit_code = ExitCode.NOT_FOUND


class Aborted(CtlError):
    exit_code = ExitCode.ABORTED


class Refused(CtlError):
    exit_code = ExitCode.REFUSED


class OperationFailed(CtlError):
    exit_code = ExitCode.FAILED


class OperationTimeout(CtlError):
    exit_code = ExitCode.TIMEOUT


class ResultUnknown(CtlError):
    exit_code = ExitCode.UNKNOWN


class RestError(CtlError):
    """A member's REST API could not be reached or answered garbage."""

    exit_code = ExitCode.REST_UNAVAILABLE


class RestUnreachable(RestError):
    """No connection could be made: the request surely did not reach the member (safe to try another way)."""


class PgCommandError(CtlError):
    """A PostgreSQL command (initdb, pg_ctl, pg_basebackup, SQL) failed."""

    exit_code = ExitCode.FAILED
