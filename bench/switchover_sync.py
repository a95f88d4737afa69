#!/usr/bin/env python3
"""Switchover gap in synchronous mode vs async, same machine, same settings, same invocation.

For each mode (async, synchronous_mode on, quorum) a fresh local 3-node hactl cluster and a client writing every
100 ms; per round, `hactl switchover --candidate X --force` where X is the synchronous standby (mode on: the only
allowed candidate), one of the two quorum standbys in turn (quorum), or a replica in turn (async). Reports the write gap (median, min–max) and the ratio sync/async.

Usage: .venv/bin/python bench/switchover_sync.py [--runs 10] [--ttl 30 --loop-wait 10 --retry-timeout 10]
Writes docs/benchmarks.md (section `switchover_sync`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.failover import Writer  # noqa: E402
from bench.report import machine, median, stamp, write_section  # noqa: E402
from bench.switchover import switchover  # noqa: E402
from tests.support.agents import AgentCluster  # noqa: E402
from tests.support.procs import EtcdServer, wait_for  # noqa: E402


MODES = {"async": {}, "on": {"synchronous_mode": True}, "quorum": {"synchronous_mode": "quorum"}}


def _sync_standby(c: AgentCluster) -> str | None:
    raw = c.dcs().get("sync")
    key = json.loads(raw) if raw else {}
    return key.get("sync_standby") if key.get("leader") == c.leader() else None


def _quorum_standbys(c: AgentCluster) -> list[str]:
    """Both replicas in the key (steady state with W=1: ANY 1 of 2, quorum 1)."""
    names = sorted((_sync_standby(c) or "").split(","))
    return names if len(names) == 2 and all(names) else []


def run(mode: str, args: argparse.Namespace) -> list[float]:
    etcd = EtcdServer().start()
    c = AgentCluster(etcd, ttl=args.ttl, loop_wait=args.loop_wait, retry_timeout=args.retry_timeout,
                     bootstrap_dcs=MODES[mode])
    for n in ("node1", "node2", "node3"):
        c.add_node(n)
    gaps = []
    try:
        c.start_all()
        c.sql(c.wait_healthy(timeout=180), "CREATE TABLE IF NOT EXISTS bench_writes (at timestamptz)")
        for i in range(args.runs):
            old = c.wait_healthy(timeout=180)
            if mode == "on":
                wait_for(lambda: _sync_standby(c), timeout=60, interval=0.2, what="a synchronous standby")
                candidate = _sync_standby(c) or ""
            elif mode == "quorum":
                wait_for(lambda: _quorum_standbys(c), timeout=60, interval=0.2, what="two quorum standbys")
                candidate = _quorum_standbys(c)[i % 2]
            else:
                candidate = sorted(set(c.nodes) - {old})[i % 2]
            writer = Writer(c).start()
            time.sleep(1.5)
            fault = time.monotonic()
            switchover(c, old, candidate)
            time.sleep(1.5)
            writer.stop()
            gaps.append(writer.gap_around(fault))
            print(f"  {mode} run {i + 1}/{args.runs}: {old} -> {candidate}: gap {gaps[-1]:.2f}s", flush=True)
    finally:
        c.cleanup()
        etcd.cleanup()
    return gaps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--ttl", type=int, default=30)
    ap.add_argument("--loop-wait", type=int, default=10)
    ap.add_argument("--retry-timeout", type=int, default=10)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    results = {mode: run(mode, args) for mode in MODES}

    def m(values: list[float]) -> str:
        return f"{median(values):.2f} s ({min(values):.2f}–{max(values):.2f})"

    ratio = median(results["on"]) / median(results["async"])
    ratio_q = median(results["quorum"]) / median(results["async"])
    body = f"""## Switchover in synchronous mode (`bench/switchover_sync.py`)

{stamp()}; {machine()}; per mode a fresh 3-node cluster (agents + PostgreSQL 15 + etcd on 127.0.0.1); ttl {args.ttl},
loop_wait {args.loop_wait}; a client writes every 100 ms; median (min–max) of {args.runs} switchovers per mode, to the
synchronous standby in mode on, to each quorum standby in turn in quorum mode.

| mode | write gap |
|---|---|
| async | {m(results["async"])} |
| synchronous_mode on | {m(results["on"])} |
| synchronous_mode quorum | {m(results["quorum"])} |

Ratio of the median gap to async's: {ratio:.2f} for `on`, {ratio_q:.2f} for `quorum` (target: within 1.5).
"""
    print(body)
    if not args.no_write:
        write_section("switchover_sync", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
