#!/usr/bin/env python3
"""Regenerate ctl/data/pg_settings_<major>.json from a real PostgreSQL server's own `pg_settings` catalogue.

hactl's edit-config checks `postgresql.parameters` (names, types, units, enum values, min/max) against this table
when no member of the cluster can be asked directly. The table must come from PostgreSQL itself, never be typed in.

Usage (as root or as the owner of the binaries; root runs the server as the `postgres` OS user):

    python scripts/gen_pg_settings.py                                  # /usr/lib/postgresql/15/bin
    python scripts/gen_pg_settings.py --bindir /usr/lib/postgresql/16/bin --os-user postgres

It runs initdb in a throwaway temp dir, starts the server on a unix socket only (listen_addresses=''), dumps
`SELECT name, vartype, unit, min_val, max_val, enumvals, context FROM pg_settings`, stops the server by its PID
and removes the temp dir. The output file is named after the server's major version.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUERY = ("SELECT json_build_object('server_version', current_setting('server_version'), "
         "'server_version_num', current_setting('server_version_num')::int, "
         "'settings', json_object_agg(name, json_build_object('vartype', vartype, 'unit', unit, "
         "'min_val', min_val, 'max_val', max_val, 'enumvals', enumvals, 'context', context) ORDER BY name)) "
         "FROM pg_settings")


def _as_user(user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--"] if user else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bindir", default="/usr/lib/postgresql/15/bin")
    parser.add_argument("--os-user", default="postgres", help="run the server as this user when we are root")
    parser.add_argument("--out-dir", default=str(REPO / "ctl" / "data"))
    args = parser.parse_args(argv)

    user = args.os_user if os.geteuid() == 0 else None
    tmp = tempfile.mkdtemp(prefix="hactl-pgsettings-")
    data = os.path.join(tmp, "data")
    proc = None
    try:
        if user:
            pw = pwd.getpwnam(user)
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
        env = {**os.environ, "LC_ALL": "C", "HOME": tmp}
        subprocess.run(_as_user(user) + [f"{args.bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust",
                                         "--no-sync"], check=True, capture_output=True, env=env)
        proc = subprocess.Popen(_as_user(user) + [f"{args.bindir}/postgres", "-D", data, "-k", tmp,
                                                  "-c", "listen_addresses=", "-c", "port=5432", "-c", "fsync=off"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        psql = _as_user(user) + [f"{args.bindir}/psql", "-h", tmp, "-p", "5432", "-U", "postgres", "-d", "postgres",
                                 "-XAtq", "-c", QUERY]
        deadline = time.monotonic() + 30
        while True:
            res = subprocess.run(psql, capture_output=True, text=True, env=env)
            if res.returncode == 0:
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.stderr.write(f"server did not answer: {res.stderr}")
                return 1
            time.sleep(0.2)
        catalogue = json.loads(res.stdout)
        major = catalogue["server_version_num"] // 10000
        catalogue["generated_by"] = "scripts/gen_pg_settings.py"
        out = Path(args.out_dir) / f"pg_settings_{major}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(catalogue, indent=1, sort_keys=True) + "\n")
        print(f"wrote {out} ({len(catalogue['settings'])} settings, PostgreSQL {catalogue['server_version']})")
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            # runuser forwards SIGTERM to the postmaster (smart shutdown); SIGINT would be a fast shutdown
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
