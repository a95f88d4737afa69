"""`failsafe_mode`: a primary that cannot reach the DCS keeps running while it can reach every member.

Patroni's rules (ha.py `_handle_dcs_error`, `check_failsafe_topology`, `is_healthiest_node`), as pure functions of
the observation. The agent does the I/O: it POSTs /failsafe to the members and records who accepted
(Observation.failsafe), and writes the `failsafe` key after each renewal of the leader lock.
"""

from __future__ import annotations

from ctl.ha.actions import Decision, Kind, act
from ctl.ha.state import Observation


def keeps_leading(obs: Observation) -> Decision | None:
    """DCS unreachable, this node a running primary: continue as leader iff every member accepted our POST,
    demote at once otherwise (Patroni's `_handle_dcs_error`: the answers were due retry_timeout before anyone
    could take over, and that time is left for the demotion).

    None: failsafe does not apply (off, not asked, not listed), and the usual rule (demote before the lease can
    expire) decides.
    """
    fs = obs.failsafe
    if not fs.enabled or not obs.is_primary or obs.last_lock_renewal is None:
        return None
    if not isinstance(fs.members, dict) or obs.name not in fs.members:
        return None
    if fs.all_accepted:
        others = len([n for n in fs.members if n != obs.name])
        return Decision((act(Kind.NOOP),), "DCS unreachable: continuing to run as the leader because failsafe mode "
                        f"is enabled and all members are accessible ({others} accepted POST /failsafe)")
    if fs.all_accepted is False:
        return Decision((act(Kind.DEMOTE),), "demoting: DCS unreachable and failsafe mode could not reach every "
                        f"member ({', '.join(fs.unreachable) or 'some'} did not accept POST /failsafe)")
    return None


def election_block(obs: Observation) -> str | None:
    """Why this replica must not race for the lock under failsafe mode, or None.

    A leader that POSTed /failsafe within ttl is alive (the DCS merely lost its key), and a node missing from a
    non-empty `failsafe` key was not part of the cluster the last leader saw.
    """
    fs = obs.failsafe
    if not fs.enabled:
        return None
    if fs.leader and fs.leader != obs.name:
        return f"no leader; not racing: {fs.leader} is the failsafe leader (it POSTed /failsafe within ttl)"
    if isinstance(fs.members, dict) and fs.members and obs.name not in fs.members:
        return "no leader; not eligible: not listed in the failsafe key"
    return None
