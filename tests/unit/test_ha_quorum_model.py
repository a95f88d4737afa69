"""Quorum commit against a model of commits: no sequence of the resolver's writes lets an election lose an
acknowledged commit.

The invariant test (test_ha_quorum.py) checks the resolver's own formula; this one checks what it is for. Every
value of `ANY N (S)` that was ever in effect acknowledged commits held by the leader and some N members of S
(the worst N for us). A member is known to hold them all only once it is confirmed (flushed past the position
recorded when the GUC last changed). After every single write, for every such set of commits, no member lacking
them may win an election under the key then in effect: it needs Q votes (Q+1 when it is not a voter) from voters
that are reachable and not ahead of it, and the leader is the one that died.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace

import pytest

from ctl.ha.quorum import QuorumInput, resolve

LEADER = "a"
NODES = "bcde"


@dataclass
class Epoch:
    num: int
    names: frozenset[str]
    known: set[str]  # members known to hold every commit acknowledged while this value was in effect


def electable_without(epoch: Epoch, quorum: int, voters: frozenset[str]) -> str | None:
    """A member that could win an election while lacking some commit of this epoch (None: every commit safe)."""
    picks = itertools.combinations(sorted(epoch.names), epoch.num) if epoch.num else [()]
    for pick in picks:
        holders = set(pick) | epoch.known | {LEADER}
        for c in NODES:
            if c in holders:
                continue
            votes = len(voters - holders - {c})  # members not ahead of c: they lack the commit too
            if votes >= (quorum if c in voters else quorum + 1):
                return f"{c} elected by {sorted(voters - holders - {c})} without the commits on {sorted(holders)}"
    return None


@pytest.mark.parametrize("seed", range(30))
def test_no_election_loses_an_acknowledged_commit(seed: int) -> None:
    rnd = random.Random(seed)
    x = QuorumInput(LEADER, 0, frozenset(), 0, frozenset(), 0, frozenset(), 1, LEADER)
    epochs = [Epoch(0, frozenset(), set())]
    for _ in range(40):
        x = replace(x, active=frozenset(n for n in NODES if rnd.random() < 0.65), wanted=rnd.choice([1, 1, 2, 3]))
        for _ in range(5):
            # standbys that caught up with the position of the last GUC change hold every older commit
            caught_up = {n for n in sorted(x.sync & x.active) if rnd.random() < 0.6}
            for e in epochs[:-1]:
                e.known |= caught_up
            steps, note = resolve(replace(x, confirmed=len(caught_up)))
            assert "unsafe" not in note, note
            for st in steps[:rnd.randint(0, len(steps)) if rnd.random() < 0.3 else len(steps)]:
                if st.kind == "key":
                    x = replace(x, quorum=st.num, voters=st.names)
                else:
                    x = replace(x, numsync=st.num, sync=st.names)
                    epochs.append(Epoch(st.num, st.names, set()))
                for e in epochs:
                    lost = electable_without(e, x.quorum, x.voters)
                    assert lost is None, (lost, e, x, st)
