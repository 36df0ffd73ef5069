"""Placement: how many of the desired replicas run on on-demand and on spot capacity."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tritonscale.api.spec import CapacitySpec


@dataclass(frozen=True)
class Placement:
    """Replica counts per capacity pool."""

    on_demand: int
    spot: int
    stand_ins: int = 0  # of the on-demand replicas, those standing in for missing spot ones

    @property
    def total(self) -> int:
        return self.on_demand + self.spot

    @property
    def desired(self) -> int:
        """The replicas asked for, without the stand-ins."""
        return self.total - self.stand_ins


def split_replicas(total: int, capacity: CapacitySpec) -> Placement:
    """Split `total` replicas: the on-demand base first, then at most maxFraction on spot.

    >>> from tritonscale.api.spec import CapacitySpec, SpotSpec
    >>> split_replicas(8, CapacitySpec(on_demand_base=1, spot=SpotSpec(enabled=True, max_fraction=0.75)))
    Placement(on_demand=2, spot=6)
    """
    if total < 0:
        raise ValueError(f"replicas must be >= 0, got {total}")
    if not capacity.spot.enabled:
        return Placement(on_demand=total, spot=0)
    most_on_spot = math.floor(total * capacity.spot.max_fraction + 1e-9)
    on_demand = max(min(capacity.on_demand_base, total), total - most_on_spot)
    return Placement(on_demand=on_demand, spot=total - on_demand)


def fewest_on_spot(capacity: CapacitySpec, most: int) -> int | None:
    """The fewest replicas (up to `most`) of which the split puts one on spot; None when none does.

    >>> from tritonscale.api.spec import CapacitySpec, SpotSpec
    >>> fewest_on_spot(CapacitySpec(on_demand_base=1, spot=SpotSpec(enabled=True, max_fraction=0.75)), 10)
    2
    """
    return next((total for total in range(1, most + 1) if split_replicas(total, capacity).spot > 0), None)


def no_spot_reason(total: int, capacity: CapacitySpec) -> str | None:
    """Why spot is enabled yet gets no replica at this count, in words; None otherwise."""
    if not capacity.spot.enabled or total == 0 or split_replicas(total, capacity).spot > 0:
        return None
    if capacity.on_demand_base >= total:
        return (
            f"spot gets no replica: capacity.onDemandBase ({capacity.on_demand_base}) covers all "
            f"{total} desired replicas"
        )
    return (
        f"spot gets no replica: capacity.spot.maxFraction ({capacity.spot.max_fraction:g}) of {total} "
        "replicas rounds down to 0"
    )


def split_explanation(desired: int, capacity: CapacitySpec) -> str:
    """How the desired replicas are split over on-demand and spot, and by which settings."""
    if not capacity.spot.enabled:
        return f"all {desired} on on-demand (spot off)"
    planned = split_replicas(desired, capacity)
    return (
        f"onDemandBase {capacity.on_demand_base}, then at most {capacity.spot.max_fraction:.0%} on spot: "
        f"{desired} = {planned.on_demand} on-demand + {planned.spot} spot"
    )
