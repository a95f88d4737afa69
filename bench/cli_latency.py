"""Wall time of `hactl list` and `hactl --help` as whole processes, against a seeded etcd it starts itself.

Usage: python bench/cli_latency.py [--runs N] [--no-write]
Writes its table into docs/benchmarks.md between the cli_latency markers (other benchmarks share the file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ctl.config import EtcdSettings  # noqa: E402
from ctl.dcs import keys  # noqa: E402
from ctl.dcs.gateway import EtcdGateway  # noqa: E402
from tests.support.patroni_dumps import load_dump  # noqa: E402
from tests.support.procs import EtcdServer, etcd_binary  # noqa: E402

START = "<!-- cli_latency:start -->"
END = "<!-- cli_latency:end -->"
DOC = os.path.join(REPO, "docs", "benchmarks.md")
PATRONICTL = os.path.join(REPO, ".cache", "patroni-venv", "bin", "patronictl")


def seed(server: EtcdServer, namespace: str) -> None:
    kvs, _ = load_dump("dcs_layout")
    with EtcdGateway(EtcdSettings(hosts=(("127.0.0.1", server.client_port),))) as g:
        for kv in kvs:
            g.put(keys.key(namespace, "demo", kv.key[len("/service/demo/"):]), kv.value)
        for i in range(50):
            g.put(keys.member_key(namespace, "big", f"m{i:02d}"), json.dumps({
                "conn_url": f"postgres://10.0.{i // 250}.{i % 250}:5432/postgres", "state": "running",
                "role": "primary" if i == 0 else "replica", "api_url": f"http://10.0.0.{i}:8008/patroni",
                "timeline": 1, "xlog_location": 1000, "receive_lsn": 1000, "replay_lsn": 1000}))
        g.put(keys.key(namespace, "big", "leader"), "m00")
        g.put(keys.key(namespace, "big", "initialize"), "7712146500642140331")


def timed(cmd: list[str], runs: int, env: dict[str, str]) -> list[float]:
    subprocess.run(cmd, capture_output=True, env=env, check=True)  # warm the page cache
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, env=env)
        out.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return out


def write_section(text: str) -> None:
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    doc = open(DOC, encoding="utf-8").read() if os.path.exists(DOC) else "# Benchmarks\n"
    block = f"{START}\n{text.rstrip()}\n{END}"
    if START in doc and END in doc:
        head, rest = doc.split(START, 1)
        doc = head + block + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()

    binary = etcd_binary()
    if not binary:
        raise SystemExit("etcd not found; run `make deps`")
    hactl = shutil.which("hactl", path=os.path.dirname(sys.executable)) or shutil.which("hactl")
    if not hactl:
        raise SystemExit("hactl is not installed in this environment; run `make venv`")
    server = EtcdServer()
    server.start(binary)
    tmp = tempfile.mkdtemp(prefix="hactl-bench-")
    try:
        namespace = "/bench/"
        seed(server, namespace)
        config = os.path.join(tmp, "patroni.yml")
        with open(config, "w") as f:
            f.write(f"scope: demo\nnamespace: {namespace}\netcd3:\n  hosts: [{server.hostport}]\n")
        # As a user runs it: with bytecode caches. (Some sandboxes set PYTHONDONTWRITEBYTECODE=1, which makes every
        # run recompile hactl's own modules, ~20 ms more; site-packages were compiled by pip either way.)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PATRONI", "PATRONICTL")) and k != "PYTHONDONTWRITEBYTECODE"}
        cases = [
            ("hactl list (3 members, pretty)", [hactl, "-c", config, "list"]),
            ("hactl list -f json (3 members)", [hactl, "-c", config, "list", "-f", "json"]),
            ("hactl list big (50 members, pretty)", [hactl, "-c", config, "list", "big"]),
            ("hactl --help", [hactl, "--help"]),
        ]
        if os.path.exists(PATRONICTL):
            cases.append(("patronictl 4.1.5 list (3 members, pretty)", [PATRONICTL, "-c", config, "list"]))
        rows = []
        for label, cmd in cases:
            times = timed(cmd, args.runs, env)
            rows.append((label, statistics.median(times), min(times), max(times)))
            print(f"{label:45s} median {statistics.median(times) * 1000:6.0f} ms  "
                  f"min {min(times) * 1000:6.0f} ms  max {max(times) * 1000:6.0f} ms", flush=True)
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## CLI latency (`bench/cli_latency.py`)",
        "",
        f"Whole-process wall time, {args.runs} runs each after one warm-up, against a local etcd seeded with "
        f"Patroni-format keys. Measured {now} on {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f} at the end; bytecode caches on (PYTHONDONTWRITEBYTECODE unset).",
        "Target: `hactl list` well under 0.2 s.",
        "",
        "| command | median | min | max |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {med * 1000:.0f} ms | {lo * 1000:.0f} ms | {hi * 1000:.0f} ms |"
              for label, med, lo, hi in rows]
    if not os.path.exists(PATRONICTL):
        lines += ["", "(real patronictl not measured: run the compat test once to create .cache/patroni-venv)"]
    lines += ["", "Reproduce: `make bench` (or `.venv/bin/python bench/cli_latency.py --runs 15`)."]
    if args.no_write:
        print("\n".join(lines))
    else:
        write_section("\n".join(lines))
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
