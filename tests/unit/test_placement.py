"""Splitting replicas between on-demand and spot capacity."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tritonscale.api.spec import CapacitySpec, SpotSpec
from tritonscale.policy.placement import Placement, no_spot_reason, split_replicas


@pytest.mark.parametrize(
    ("total", "base", "fraction", "expected"),
    [
        (4, 1, 0.75, Placement(1, 3)),
        (8, 1, 0.75, Placement(2, 6)),
        (1, 1, 0.75, Placement(1, 0)),
        (3, 0, 1.0, Placement(0, 3)),
        (3, 5, 0.9, Placement(3, 0)),
        (10, 2, 0.5, Placement(5, 5)),
        (0, 1, 0.75, Placement(0, 0)),
    ],
)
def test_split_table(total: int, base: int, fraction: float, expected: Placement) -> None:
    capacity = CapacitySpec(on_demand_base=base, spot=SpotSpec(enabled=True, max_fraction=fraction))
    assert split_replicas(total, capacity) == expected


def test_spot_disabled_puts_everything_on_demand() -> None:
    assert split_replicas(7, CapacitySpec(on_demand_base=1)) == Placement(7, 0)


def test_negative_total_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        split_replicas(-1, CapacitySpec())


@given(
    total=st.integers(min_value=0, max_value=1000),
    base=st.integers(min_value=0, max_value=1000),
    fraction=st.floats(min_value=0.01, max_value=1.0),
)
def test_split_invariants(total: int, base: int, fraction: float) -> None:
    placement = split_replicas(
        total, CapacitySpec(on_demand_base=base, spot=SpotSpec(enabled=True, max_fraction=fraction))
    )
    assert placement.total == total
    assert placement.on_demand >= min(base, total)
    assert placement.spot <= math.floor(total * fraction + 1e-9)
    assert placement.spot >= 0


def test_a_spot_share_of_zero_is_explained() -> None:
    base = CapacitySpec(on_demand_base=3, spot=SpotSpec(enabled=True, max_fraction=0.75))
    assert (
        no_spot_reason(2, base)
        == "spot gets no replica: capacity.onDemandBase (3) covers all 2 desired replicas"
    )
    small = CapacitySpec(on_demand_base=0, spot=SpotSpec(enabled=True, max_fraction=0.3))
    assert (
        no_spot_reason(3, small)
        == "spot gets no replica: capacity.spot.maxFraction (0.3) of 3 replicas rounds down to 0"
    )
    assert no_spot_reason(4, small) is None
    assert no_spot_reason(2, CapacitySpec()) is None  # spot not asked for: nothing to explain
