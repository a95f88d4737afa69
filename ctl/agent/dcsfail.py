"""The HA loop's DCS-error path: when etcd goes away in the middle of an iteration.

Patroni stops its cycle at the first `DCSError` and runs `Ha._handle_dcs_error` at once: a primary with
failsafe_mode on POSTs /failsafe to every member right then, and demotes unless all accepted. The agent does the
same: every DCS call the loop thread makes reports whether it found an endpoint (`Etcd3Dcs.last_failure()`, per
thread), the executor stops at the first one that did not, the member-key update is skipped, and the loop decides
again without the DCS in the same iteration (`Agent._handle_dcs_error`). Without this the failsafe exchange ran
only after the rest of the iteration's calls had each timed out, one loop_wait and one more failed read later:
about 7 s with ttl 8, after which the answers came too late and the primary demoted with every member up.

Timing (R: start of the last lease keepalive that etcd answered; the lease, and the leader key on it, expire no
earlier than R + ttl; A: start of the last failsafe exchange that every member accepted, replicas stay off the
race until at least A + ttl; R' = max(R, A)):

- one failing call costs at most C = majority(n) * timeout, the agent's per-RPC timeout being
  `retry_timeout / 3 / max(1, majority(n) - 1)` clipped to [0.5, 2] s (ctl/agent/runner.py): C <= 2/3 retry_timeout
  (Patroni splits retry_timeout across the endpoints the same way, at least 1 s per try);
- etcd can freeze at any point of an iteration; the exchange starts after the first failed call, so at the
  latest R' + loop_wait + C + the iteration's own work;
- answers count until R' + ttl - retry_timeout (ctl/agent/failsafe.py): `loop_wait + 2*retry_timeout <= ttl` makes
  that at least retry_timeout/3 after the latest start;
- a primary that does not get every answer demotes at once (PostgreSQL stopped, immediate mode), so it is
  read-only before R' + ttl with at least retry_timeout seconds to spare, whatever the replicas do once the lease
  expired.
"""

from __future__ import annotations

from typing import Any


def failed(dcs: Any) -> bool:
    """Whether this thread's last DCS call found no endpoint (False for a DCS without that bookkeeping)."""
    last_failure = getattr(dcs, "last_failure", None)
    return bool(last_failure is not None and last_failure() is not None)
