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
    exe = os.path.join(VENV, "bin", "patronictl")
    stamp = os.path.join(VENV, ".installed-" + PATRONI.replace("/", "_"))
    if not os.path.exists(stamp):
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], check=True, capture_output=True,
                           timeout=120)
            subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", PATRONI], check=True,
                           capture_output=True, text=True, timeout=600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            msg = f"cannot install {PATRONI} into {VENV}: {str(detail).strip()[-500:]}"
            if in_ci():
                pytest.fail(msg)
            pytest.skip(msg)
        open(stamp, "w").close()
    return exe


def clean_env() -> dict[str, str]:
    """The environment without PATRONI_*/PATRONICTL_* variables, so only the given config file counts."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PATRONI", "PATRONICTL"))}
