"""Spot fallback and return: when spot replicas cannot run, on-demand replicas stand in for them;
when spot is back, the stand-ins go, gradually.

Pure: the previous state, what the spot pool reports and the time come in; the next state goes
out (the operator keeps it in `status.spotFallback`, so it survives a restart).

- Trouble is spot pods the scheduler cannot place (no spot node left, or every one reclaimed,
  tainted or gone, so their evicted replicas wait in Pending) for longer than
  `fallbackAfterSeconds`. Then as many on-demand replicas as spot pods are unschedulable are
  added at once, and more if more become unschedulable. Spot pods on nodes being interrupted
  (policy.interruption) are trouble at once, and so are unschedulable spot pods while a notice
  is in effect (the drain's evicted pods wait as those): the notice is the warning, and a
  replacement started now is ready before a 2-minute notice runs out. Nothing is taken from the spot pool: its pods keep
  waiting for capacity, so the move back needs no new decision from the scheduler's side.
- Return: only once every wanted spot replica has been ready for a whole return window (twice
  `fallbackAfterSeconds`, at least a minute) are stand-ins removed, half of them (at least one)
  per window. Spot replicas are ready before any stand-in goes, so ready replicas never drop
  below desired during a return; and a spot market that takes capacity away and gives it back
  within the window never sees a stand-in leave, so replicas do not ping-pong.
"""

from __future__ import annotations

import math
from datetime import datetime

from tritonscale.api.status import SpotFallbackStatus
from tritonscale.policy.placement import Placement

MIN_RETURN_WINDOW_S = 60.0


def return_window_s(fallback_after_s: float) -> float:
    return max(MIN_RETURN_WINDOW_S, 2.0 * fallback_after_s)


def next_fallback(
    state: SpotFallbackStatus,
    wanted_spot: int,
    ready_spot: int,
    unschedulable_spot: int,
    now: datetime,
    fallback_after_s: float,
    interrupted_spot: int = 0,
) -> SpotFallbackStatus:
    """The state after seeing `ready_spot` of `wanted_spot` spot replicas ready,
    `unschedulable_spot` spot pods the scheduler cannot place and `interrupted_spot` on nodes
    being interrupted, at `now`.

    A spot pod that is scheduled and still starting (a model loading for minutes) is no
    trouble, or every scale-up would call for stand-ins."""
    stand_ins = min(state.stand_ins, wanted_spot)  # never more than spot is asked to carry
    if unschedulable_spot > 0 or interrupted_spot > 0:
        since = state.missing_since or now
        missing = interrupted_spot
        # Pending spot pods during a notice are the noticed pods' replacements (the node's drain
        # evicted them first): no reason to wait for them either.
        if interrupted_spot > 0 or (now - since).total_seconds() >= fallback_after_s:
            missing += unschedulable_spot
        stand_ins = max(stand_ins, min(missing, wanted_spot))
        return SpotFallbackStatus(stand_ins=stand_ins, missing_since=since)
    if stand_ins == 0:
        return SpotFallbackStatus()
    if ready_spot < wanted_spot:  # spot pods placed again and starting: wait for them
        return SpotFallbackStatus(stand_ins=stand_ins)
    healthy = state.healthy_since or now
    if (now - healthy).total_seconds() >= return_window_s(fallback_after_s):
        stand_ins -= max(1, math.ceil(stand_ins / 2))
        healthy = now  # the next step needs another whole window of healthy spot
    return SpotFallbackStatus(stand_ins=stand_ins, healthy_since=healthy if stand_ins else None)


def with_stand_ins(placement: Placement, state: SpotFallbackStatus) -> Placement:
    """The pools' replica counts with the stand-ins added to on-demand (spot keeps its own)."""
    return Placement(
        on_demand=placement.on_demand + state.stand_ins, spot=placement.spot, stand_ins=state.stand_ins
    )
