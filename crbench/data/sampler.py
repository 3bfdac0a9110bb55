"""Which dates of a 30-date patch become the L inputs and which the target.

Two samplers, both pure functions of a per-date cloud-coverage vector:

- :func:`select_fixed`: the test protocol of DESIGN.md ("fixed" sampler), deterministic.
- :func:`select_random`: the training sampler; a random clear target and L temporally
  adjacent inputs around it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..constants import SEQ_LEN_MAX, SEQ_LEN_MIN, TARGET_CLEAR_MAX
from ..errors import UsageError, parse_enum


class Protocol(enum.Enum):
    """Evaluation protocol: whether the target may be an input, how blank dates count and
    how mosaicing treats exact zeros (README "Conventions"; mosaicing's fill where no input is
    clear is the toolbox's 0.1 under every protocol).

    Attributes:
        TOOLBOX: as the SEN12MS-CR-TS toolbox: the target may also be an input; blank dates
            stay fully cloudy (crbench's rule).
        STRICT: the target is never an input.
        PARITY: TOOLBOX plus the toolbox's blank rule (an all-blank S2 image is clear,
            coverage 0.0, as its s2cloudless on zeros gives) and its exact mosaicing, to
            reproduce the toolbox's numbers.
    """

    TOOLBOX = "toolbox"
    STRICT = "strict"
    PARITY = "parity"

    @property
    def target_may_be_input(self) -> bool:
        """Whether the fixed sampler may pick the target as one of the inputs."""
        return self is not Protocol.STRICT

    @property
    def blank_is_clear(self) -> bool:
        """Whether an all-blank S2 image counts as clear (coverage 0.0) instead of cloudy."""
        return self is Protocol.PARITY

    @classmethod
    def parse(cls, value: Protocol | str) -> Protocol:
        """Return ``value`` as a Protocol.

        Raises:
            UsageError: ``value`` names no protocol.
        """
        return parse_enum(cls, value, "protocol")


@dataclass
class Selection:
    """The dates chosen for one sample.

    Attributes:
        input_idx: date indices of the L inputs, in temporal order.
        target_idx: date index of the target.
        match: True if L inputs met the coverage bounds and the target is clear
            (coverage <= ``TARGET_CLEAR_MAX``); always True for :func:`select_random`.
    """

    input_idx: list[int]
    target_idx: int
    match: bool


def check_seq_len(L: int) -> int:
    """Validate the input-sequence length L.

    Raises:
        UsageError: L is not an integer in [1, 29].
    """
    if isinstance(L, bool) or not isinstance(L, (int, np.integer)) or \
            not SEQ_LEN_MIN <= L <= SEQ_LEN_MAX:
        raise UsageError(f"L: bad value {L!r}; expected an integer from {SEQ_LEN_MIN} to "
                         f"{SEQ_LEN_MAX} (the 30 dates of a patch minus the target)")
    return int(L)


def check_cov_bounds(min_cov: float, max_cov: float) -> tuple[float, float]:
    """Validate the input coverage bounds: 0 <= min_cov <= max_cov <= 1.

    Raises:
        UsageError: a bound is not a number in [0, 1], or min_cov > max_cov.
    """
    for name, value in (("min_cov", min_cov), ("max_cov", max_cov)):
        if not isinstance(value, (int, float, np.floating, np.integer)) or \
                isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
            raise UsageError(f"{name}: bad value {value!r}; expected a number in [0, 1]")
    if min_cov > max_cov:
        raise UsageError(f"min_cov/max_cov: min_cov={min_cov} is larger than max_cov={max_cov}; "
                         "expected 0 <= min_cov <= max_cov <= 1")
    return float(min_cov), float(max_cov)


def _check_coverage(coverage: Sequence[float], L: int) -> list[float]:
    cov = [float(c) for c in coverage]
    if len(cov) < L + 1:
        raise UsageError(f"coverage: {len(cov)} dates given; L={L} needs at least {L + 1} "
                         "(L inputs besides the target)")
    bad = [i for i, c in enumerate(cov) if not (math.isfinite(c) and 0.0 <= c <= 1.0)]
    if bad:
        raise UsageError(f"coverage: value {cov[bad[0]]!r} at date {bad[0]} is not a fraction "
                         "in [0, 1]")
    return cov


def select_fixed(coverage: Sequence[float], L: int, min_cov: float = 0.0,
                 max_cov: float = 1.0, protocol: Protocol | str = Protocol.TOOLBOX) -> Selection:
    """The "fixed" test sampler of DESIGN.md.

    - target: the least cloudy date; among equally clear dates the earliest.
    - inputs: the first L dates whose coverage lies in ``[min_cov, max_cov]`` (both bounds
      inclusive); under :attr:`Protocol.STRICT` the target is not eligible (under TOOLBOX and
      PARITY it is; the blank rule of PARITY acts on ``coverage`` before this function).
    - if fewer than L dates qualify: the first L dates other than the target, and the sample
      does not match.
    - match: L inputs qualified and the target coverage is at most ``TARGET_CLEAR_MAX``.

    Args:
        coverage: cloud coverage (fraction in [0, 1]) of each date, in temporal order.
        L: number of inputs, 1..29.
        min_cov: lower coverage bound of an input.
        max_cov: upper coverage bound of an input.
        protocol: :class:`Protocol` or its value ("toolbox", "strict" or "parity").

    Returns:
        The selection.

    Raises:
        UsageError: L outside [1, 29], bad bounds, unknown protocol, too few dates or a
            coverage value outside [0, 1].
    """
    L = check_seq_len(L)
    min_cov, max_cov = check_cov_bounds(min_cov, max_cov)
    protocol = Protocol.parse(protocol)
    cov = _check_coverage(coverage, L)
    # np.argmin returns the first occurrence of the minimum: ties go to the earliest date.
    target = int(np.argmin(np.asarray(cov)))
    eligible = [i for i, c in enumerate(cov) if min_cov <= c <= max_cov
                and (protocol.target_may_be_input or i != target)]
    if len(eligible) >= L:
        return Selection(eligible[:L], target, cov[target] <= TARGET_CLEAR_MAX)
    fallback = [i for i in range(len(cov)) if i != target][:L]
    return Selection(fallback, target, False)


def _window_start(p: int, n_other: int, L: int, rng: np.random.Generator) -> int:
    """Start (in the list of non-target dates) of the input window; see select_random."""
    lo, hi = max(0, p - L), min(p, n_other - L)
    adjacent = list(range(lo, hi + 1))  # windows holding the date right before or after
    straddle = [s for s in adjacent if s <= p - 1 and s + L - 1 >= p]
    pool = straddle or adjacent
    return pool[int(rng.integers(len(pool)))]


def select_random(coverage: Sequence[float], L: int, rng: np.random.Generator,
                  clear_max: float = TARGET_CLEAR_MAX) -> Selection | None:
    """The "random" training sampler.

    Exact rule:

    1. target: drawn uniformly among the clear dates (coverage <= ``clear_max``); None if
       the patch has no clear date.
    2. inputs: L consecutive dates of the sequence with the target removed (so the target
       is never an input). Let ``p`` be the number of dates before the target. A window
       starting at ``s`` (an index into the non-target dates) is *adjacent* if it holds the
       date right before the target (``p - 1``) or right after it (``p``); it *straddles*
       the target if it holds both. The start is drawn uniformly among the straddling
       windows, or, where none exists (L = 1, or the target is the first or last date), among
       the adjacent ones; windows are clipped at the sequence ends.

    Args:
        coverage: cloud coverage of each date, in temporal order.
        L: number of inputs, 1..29.
        rng: random generator (the caller seeds it per epoch and sample).
        clear_max: largest coverage of a clear target.

    Returns:
        The selection (match=True), or None if no date is clear.

    Raises:
        UsageError: L outside [1, 29], too few dates or a coverage value outside [0, 1].
    """
    L = check_seq_len(L)
    cov = _check_coverage(coverage, L)
    clear = [i for i, c in enumerate(cov) if c <= clear_max]
    if not clear:
        return None
    target = clear[int(rng.integers(len(clear)))]
    others = [i for i in range(len(cov)) if i != target]
    start = _window_start(target, len(others), L, rng)
    return Selection(others[start:start + L], target, True)
