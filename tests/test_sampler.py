"""Sampler semantics on hand-made coverage vectors (DESIGN.md, "fixed" sampler)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crbench.data.sampler import Protocol, Selection, select_fixed, select_random
from crbench.errors import UsageError


def _cov(values: dict[int, float], n: int = 30, fill: float = 0.5) -> list[float]:
    cov = [fill] * n
    for i, v in values.items():
        cov[i] = v
    return cov


# -- fixed sampler ---------------------------------------------------------------------------

def test_target_is_least_cloudy() -> None:
    cov = _cov({7: 0.2, 12: 0.0, 20: 0.1})
    assert select_fixed(cov, 3).target_idx == 12


def test_ties_go_to_the_earliest_date() -> None:
    # Many equal minima: np.argsort (quicksort, unstable) may pick a later one; we must not.
    for first in (0, 3, 11, 28):
        cov = _cov({first: 0.0, **{i: 0.0 for i in range(first + 1, 30, 2)}})
        assert select_fixed(cov, 2).target_idx == first
    assert select_fixed([0.3] * 30, 5).target_idx == 0


def test_inputs_are_first_L_qualifying_dates_bounds_inclusive() -> None:
    cov = _cov({0: 0.05, 1: 0.1, 2: 0.55, 3: 0.5, 4: 0.3, 5: 0.1, 9: 0.0}, fill=0.9)
    sel = select_fixed(cov, 3, min_cov=0.1, max_cov=0.5)
    # 0.05 < 0.1 excluded, 0.1 == min included, 0.55 > 0.5 excluded, 0.5 == max included
    assert sel == Selection([1, 3, 4], 9, True)


def test_no_clear_date_does_not_match() -> None:
    cov = _cov({4: 0.002}, fill=0.4)  # best date is above 1e-3
    sel = select_fixed(cov, 3)
    assert sel.target_idx == 4
    assert sel.input_idx == [0, 1, 2]
    assert sel.match is False


def test_target_clear_threshold_is_inclusive() -> None:
    assert select_fixed(_cov({6: 1e-3}), 2).match is True
    assert select_fixed(_cov({6: 1.0001e-3}), 2).match is False


def test_fewer_than_L_qualify_takes_first_L_other_than_target() -> None:
    cov = _cov({0: 0.0, 5: 0.3, 8: 0.35}, fill=0.9)
    sel = select_fixed(cov, 3, min_cov=0.2, max_cov=0.4)
    assert sel == Selection([1, 2, 3], 0, False)
    # target in the middle: skipped in the fallback
    cov = _cov({2: 0.0}, fill=0.9)
    assert select_fixed(cov, 4, min_cov=0.1, max_cov=0.2) == Selection([0, 1, 3, 4], 2, False)


def test_toolbox_protocol_lets_target_be_an_input() -> None:
    cov = _cov({1: 0.0}, fill=0.6)
    sel = select_fixed(cov, 3, min_cov=0.0, max_cov=1.0, protocol=Protocol.TOOLBOX)
    assert sel == Selection([0, 1, 2], 1, True)
    assert select_fixed(cov, 3, protocol="toolbox") == sel


def test_strict_protocol_excludes_target() -> None:
    cov = _cov({1: 0.0}, fill=0.6)
    sel = select_fixed(cov, 3, protocol=Protocol.STRICT)
    assert sel == Selection([0, 2, 3], 1, True)
    assert select_fixed(cov, 3, protocol="strict") == sel


def test_strict_fewer_qualify_when_target_was_the_only_extra() -> None:
    # 3 dates qualify including the target: toolbox matches, strict must fall back.
    cov = _cov({2: 0.0, 10: 0.0, 15: 0.0}, fill=0.9)
    assert select_fixed(cov, 3, 0.0, 0.1, Protocol.TOOLBOX) == Selection([2, 10, 15], 2, True)
    assert select_fixed(cov, 3, 0.0, 0.1, Protocol.STRICT) == Selection([0, 1, 3], 2, False)


@pytest.mark.parametrize("L", [0, 30, -1, 2.5, True, "3"])
def test_L_out_of_range_is_refused(L: object) -> None:
    with pytest.raises(UsageError, match=r"L: bad value .* from 1 to 29"):
        select_fixed([0.1] * 30, L)  # type: ignore[arg-type]


@pytest.mark.parametrize("L", [1, 29])
def test_L_bounds_accepted(L: int) -> None:
    sel = select_fixed(_cov({29: 0.0}), L)
    assert len(sel.input_idx) == L
    assert sel.target_idx == 29


@pytest.mark.parametrize(("lo", "hi", "name"), [(-0.1, 0.5, "min_cov"), (0.0, 1.5, "max_cov"),
                                                (0.6, 0.5, "min_cov/max_cov")])
def test_bad_bounds_are_refused(lo: float, hi: float, name: str) -> None:
    with pytest.raises(UsageError, match=name):
        select_fixed([0.1] * 30, 3, lo, hi)


def test_bad_protocol_and_coverage_are_refused() -> None:
    with pytest.raises(UsageError, match="protocol: unknown value 'loose'; expected one of"):
        select_fixed([0.1] * 30, 3, protocol="loose")
    with pytest.raises(UsageError, match="coverage: value nan at date 4"):
        select_fixed(_cov({4: float("nan")}), 3)
    with pytest.raises(UsageError, match="needs at least 4"):
        select_fixed([0.1, 0.2, 0.3], 3)


@settings(max_examples=150, deadline=None)
@given(cov=st.lists(st.sampled_from([0.0, 0.0005, 0.1, 0.3, 0.5, 1.0]), min_size=30,
                    max_size=30),
       L=st.integers(1, 29), lo=st.sampled_from([0.0, 0.1, 0.3]),
       hi=st.sampled_from([0.3, 0.5, 1.0]), strict=st.booleans())
def test_fixed_sampler_invariants(cov: list[float], L: int, lo: float, hi: float,
                                  strict: bool) -> None:
    proto = Protocol.STRICT if strict else Protocol.TOOLBOX
    sel = select_fixed(cov, L, lo, hi, proto)
    assert cov[sel.target_idx] == min(cov)
    assert all(c > min(cov) for c in cov[:sel.target_idx])  # earliest minimum
    assert len(sel.input_idx) == L == len(set(sel.input_idx))
    assert sel.input_idx == sorted(sel.input_idx)
    qualified = all(lo <= cov[i] <= hi for i in sel.input_idx)
    if sel.match:
        assert qualified and cov[sel.target_idx] <= 1e-3
    if strict:
        assert sel.target_idx not in sel.input_idx
    if not qualified:  # fallback: the first L dates other than the target
        assert not sel.match
        assert sel.input_idx == [i for i in range(30) if i != sel.target_idx][:L]


# -- random sampler --------------------------------------------------------------------------

def test_random_returns_none_without_clear_date() -> None:
    assert select_random([0.5] * 30, 3, np.random.default_rng(0)) is None
    assert select_random(_cov({3: 0.002}), 3, np.random.default_rng(0)) is None


def test_random_target_is_clear_and_inputs_adjacent() -> None:
    cov = _cov({4: 0.0, 15: 0.0005, 29: 0.0}, fill=0.7)
    rng = np.random.default_rng(1)
    targets = set()
    for _ in range(300):
        sel = select_random(cov, 4, rng)
        assert sel is not None and sel.match
        targets.add(sel.target_idx)
        assert sel.target_idx not in sel.input_idx
        others = [i for i in range(30) if i != sel.target_idx]
        start = others.index(sel.input_idx[0])
        assert sel.input_idx == others[start:start + 4]  # consecutive non-target dates
        before, after = sel.target_idx - 1, sel.target_idx + 1
        assert before in sel.input_idx or after in sel.input_idx
        if 0 < sel.target_idx < 29:  # room on both sides: the window straddles the target
            assert before in sel.input_idx and after in sel.input_idx
    assert targets == {4, 15, 29}


def test_random_clipped_at_sequence_ends() -> None:
    rng = np.random.default_rng(0)
    first = select_random(_cov({0: 0.0}), 5, rng)
    last = select_random(_cov({29: 0.0}), 5, rng)
    assert first is not None and first.input_idx == [1, 2, 3, 4, 5]
    assert last is not None and last.input_idx == [24, 25, 26, 27, 28]


def test_random_L1_picks_a_neighbour() -> None:
    rng = np.random.default_rng(3)
    picks = {tuple(select_random(_cov({10: 0.0}), 1, rng).input_idx) for _ in range(100)}
    assert picks == {(9,), (11,)}


def test_random_is_reproducible_for_a_seed() -> None:
    cov = _cov({2: 0.0, 9: 0.0, 21: 0.0, 25: 0.0})
    draws = [[select_random(cov, 3, np.random.default_rng([7, e])) for e in range(10)]
             for _ in range(2)]
    assert draws[0] == draws[1]
    assert len({(s.target_idx, tuple(s.input_idx)) for s in draws[0]}) > 1


def test_random_L_validated() -> None:
    with pytest.raises(UsageError, match="L: bad value 30"):
        select_random([0.0] * 30, 30, np.random.default_rng(0))
