#!/usr/bin/env python3
"""Switchover benchmark: a local 3-node hactl cluster under a client that writes every 100 ms.

Measures, per switchover:
  - gap: the longest time without an acknowledged write around the switchover;
  - returned: wall time of `hactl switchover --force --candidate X` until it exits 0 with the result verified
    (falls back to `POST /switchover` on the leader when the CLI has no switchover command).

Usage: .venv/bin/python bench/switchover.py [--runs 5] [--ttl 30 --loop-wait 10 --retry-timeout 10]
Writes the medians into docs/benchmarks.md (section `switchover`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.failover import Writer  # noqa: E402
from bench.report import machine, median, stamp, write_section  # noqa: E402
from tests.support.agents import REPO, AgentCluster  # noqa: E402
from tests.support.procs import EtcdServer  # noqa: E402


def switchover(c: AgentCluster, old: str, candidate: str) -> tuple[float, str]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ctl", "-c", c.nodes[old].config_path, "switchover", c.scope,
                           "--leader", old, "--candidate", candidate, "--force"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    took = time.monotonic() - t0
    if proc.returncode == 0:
        return took, "hactl switchover"
    if "No such command" not in proc.stderr:
        raise RuntimeError(f"hactl switchover failed ({proc.returncode}): {proc.stderr.strip()}")
    body = json.dumps({"leader": old, "candidate": candidate}).encode()
    req = urllib.request.Request(c.nodes[old].api + "/switchover", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()
    return time.monotonic() - t0, "POST /switchover"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ttl", type=int, default=30)
    ap.add_argument("--loop-wait", type=int, default=10)
    ap.add_argument("--retry-timeout", type=int, default=10)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    etcd = EtcdServer().start()
    c = AgentCluster(etcd, ttl=args.ttl, loop_wait=args.loop_wait, retry_timeout=args.retry_timeout)
    for n in ("node1", "node2", "node3"):
        c.add_node(n)
    gaps, returns, how = [], [], ""
    try:
        c.start_all()
        leader = c.wait_healthy(timeout=180)
        c.sql(leader, "CREATE TABLE IF NOT EXISTS bench_writes (at timestamptz)")
        for i in range(args.runs):
            old = c.wait_healthy(timeout=180)
            candidate = sorted(set(c.nodes) - {old})[i % 2]
            writer = Writer(c).start()
            time.sleep(1.5)
            fault = time.monotonic()
            took, how = switchover(c, old, candidate)
            time.sleep(1.5)
            writer.stop()
            gap = writer.gap_around(fault)
            assert c.leader() == candidate, f"leader is {c.leader()}, expected {candidate}"
            gaps.append(gap)
            returns.append(took)
            print(f"run {i + 1}/{args.runs}: {old} -> {candidate}: gap {gap:.2f}s, returned after {took:.2f}s",
                  flush=True)
    finally:
        c.cleanup()
        etcd.cleanup()

    def m(values: list[float]) -> str:
        return f"{median(values):.2f} s ({min(values):.2f}–{max(values):.2f})"

    body = f"""## Switchover (`bench/switchover.py`)

{stamp()}; {machine()}; 3 agents + PostgreSQL 15 + etcd on 127.0.0.1; ttl {args.ttl}, loop_wait {args.loop_wait};
a client writes every 100 ms; medians of {args.runs} switchovers (min–max); driven by `{how}`.

| | hactl | Patroni 4.1.5 (same machine kind) |
|---|---|---|
| write gap | {m(gaps)} | 2.56 s |
| command returns, result verified | {m(returns)} | 4.45 s (not verified) |

Where the time goes: the leader's loop wakes on the `failover` key through the etcd watch, checks the candidate
over REST, checkpoints and stops PostgreSQL (its replicas receive all WAL), deletes the leader key; the candidate
wakes on that delete, takes the lock and runs `pg_promote()`; the old leader restarts as a replica at once.
"""
    print(body)
    if not args.no_write:
        write_section("switchover", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
