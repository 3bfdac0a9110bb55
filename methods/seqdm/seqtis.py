"""SeqTIS: sequential data fusion (Eq. 19-23), conditional inference (Algorithm 1) and the
temporal training strategy (Algorithm 2) of Zhao & Jia (2023).

Shapes: sequences ``(B, L, C, H, W)`` in [-1, 1]; ``clear`` ``(B, L, 1, H, W)`` with 1 where a
date is cloud-free (``1 - mask``). Index ``t`` follows :mod:`.diffusion` (index t = paper step
t + 1), so the paper's "diffused to step t-1" is index ``t - 1`` and, at index 0, the clean
sequence.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .diffusion import GaussianDiffusion, Losses

Net = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Fusion(enum.Enum):
    """How a sequence is combined with the diffusion noise.

    NOISE_THEN_FUSE: diffuse each date, then average (the paper, Eq. 19-23). A pixel clear on
        k dates carries noise variance (1 - abar) / k instead of 1 - abar.
    FUSE_THEN_NOISE: average the clean dates, then diffuse once; the state follows
        q(x_t | x_0) exactly.
    """

    NOISE_THEN_FUSE = "noise-then-fuse"
    FUSE_THEN_NOISE = "fuse-then-noise"


class LossRegion(enum.Enum):
    """Where the Eq. 28 loss is taken.

    ALL: every pixel (Algorithm 2 as written).
    UNKNOWN: only the pixels cloudy on every date (outside the known region M), the pixels
        Algorithm 1 asks the network for; the known region is replaced at inference anyway.
    """

    ALL = "all"
    UNKNOWN = "unknown"


class UnknownState(enum.Enum):
    """What the unknown region (outside M) of Eq. 28's input X~_t holds.

    TARGET: the clear target diffused to t with eps_hat, the state Algorithm 1 meets once its
        own trajectory is replaced by the truth (a deviation from the text, the only reading
        with an informative regression target there).
    NOISE: an independent N(0, I) draw, as the paper writes it.
    """

    TARGET = "target"
    NOISE = "noise"


class AuxCondition(enum.Enum):
    """What the network is given of the auxiliary (S1) modality.

    DIFFUSED: A_t, the S1 image diffused to the same step as X_t (MmDM, the paper): near pure
        noise the condition carries almost nothing of S1.
    CLEAN: the clean S1 image A_0 (averaged over the L dates at inference, as the diffused
        one): the usual conditional diffusion (SR3, Palette); S1 informs every step.
    """

    DIFFUSED = "diffused"
    CLEAN = "clean"


class GlobalDraws:
    """Random draws for one rank's share of a global batch (data-parallel training).

    Passed where a ``generator`` is expected, it draws every per-sample tensor for the whole
    global batch of ``global_size`` samples from ``generator`` and keeps this rank's ``rows``,
    so each sample gets the noise a single process training on the global batch would give it.
    """

    def __init__(self, generator: torch.Generator, rows: Sequence[int], global_size: int) -> None:
        self.generator, self.global_size = generator, int(global_size)
        self.rows = list(rows)
        self._index: dict[torch.device, torch.Tensor] = {}  # rows on each device, made once

    def randn(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Noise of ``shape`` (first dim: this rank's batch) on ``like``'s device and dtype."""
        full = torch.randn((self.global_size, *shape[1:]), generator=self.generator,
                           device=like.device, dtype=like.dtype)
        index = self._index.get(like.device)
        if index is None:
            index = self._index[like.device] = torch.as_tensor(self.rows, device=like.device)
        return full[index]


class RowDraws:
    """One random stream per batch row (sampling): a row's noise depends only on its own seed,
    never on which other samples share its batch, so results do not change with the batch
    size, the shard or the rank a sample is evaluated on."""

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.generators = [torch.Generator(device).manual_seed(int(s)) for s in seeds]

    def randn(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Noise of ``shape`` (first dim: the rows) on ``like``'s device and dtype."""
        rows = [torch.randn(tuple(shape[1:]), generator=g, device=like.device, dtype=like.dtype)
                for g in self.generators[:shape[0]]]
        return torch.stack(rows)


def randn(shape: tuple[int, ...], like: torch.Tensor,
          generator: torch.Generator | GlobalDraws | RowDraws | None = None) -> torch.Tensor:
    """Standard-normal noise on ``like``'s device and dtype."""
    if isinstance(generator, (GlobalDraws, RowDraws)):
        return generator.randn(shape, like)
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def region_mask(clear: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) float: 1 where at least one date is clear (the known region M)."""
    return (clear.sum(dim=1) > 0).to(clear.dtype)


def fuse_clean(seq: torch.Tensor, clear: torch.Tensor, s: float) -> torch.Tensor:
    """Per-pixel average of the clear dates, sum(m_l x_l) / (sum(m_l) + s)."""
    return (clear * seq).sum(dim=1) / (clear.sum(dim=1) + s)


def fuse_noisy(diff: GaussianDiffusion, seq: torch.Tensor, clear: torch.Tensor,
               t: torch.Tensor | None, noise: torch.Tensor, fusion: Fusion, s: float
               ) -> torch.Tensor:
    """Sequential data fusion of ``seq`` at index ``t`` (``None``: the clean fusion).

    Args:
        noise: (B, L, C, H, W) one draw per date, or (B, C, H, W) one draw shared by all dates
            (the only shape that makes sense for FUSE_THEN_NOISE).
    """
    if t is None:
        return fuse_clean(seq, clear, s)
    if fusion is Fusion.FUSE_THEN_NOISE:
        one = noise if noise.ndim == 4 else noise[:, 0]
        return diff.q_sample(fuse_clean(seq, clear, s), t, one)
    n_dates = seq.shape[1]
    if noise.ndim == 4:
        noise = noise.unsqueeze(1).expand_as(seq)
    noisy = diff.q_sample(seq.flatten(0, 1), t.repeat_interleave(n_dates),
                          noise.flatten(0, 1)).view_as(seq)
    return (clear * noisy).sum(dim=1) / (clear.sum(dim=1) + s)


def _seq_noise(seq: torch.Tensor, fusion: Fusion, shared: bool,
               generator: torch.Generator | None) -> torch.Tensor:
    """Per-date draws, or one draw for all dates (shared noise / fuse-then-noise)."""
    if shared or fusion is Fusion.FUSE_THEN_NOISE:
        return randn(tuple(seq.shape[:1] + seq.shape[2:]), seq, generator)
    return randn(tuple(seq.shape), seq, generator)


def aux_state(diff: GaussianDiffusion, a0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
              aux: AuxCondition = AuxCondition.DIFFUSED) -> torch.Tensor:
    """The S1 condition of one S1 image A_0: diffused to index t with ``noise`` (MmDM), or
    A_0 itself under ``AuxCondition.CLEAN`` (``noise`` is drawn either way, so the random
    stream does not depend on the option)."""
    return a0 if aux is AuxCondition.CLEAN else diff.q_sample(a0, t, noise)


def fuse_aux(diff: GaussianDiffusion, a_seq: torch.Tensor, t: torch.Tensor, fusion: Fusion,
             generator: torch.Generator | None = None,
             aux: AuxCondition = AuxCondition.DIFFUSED) -> torch.Tensor:
    """A~_t: the auxiliary (S1) sequence diffused to index t and averaged over all L dates
    (``AuxCondition.CLEAN``: the clean average)."""
    ones = torch.ones_like(a_seq[:, :, :1])
    if aux is AuxCondition.CLEAN:
        return fuse_clean(a_seq, ones, 0.0)
    noise = _seq_noise(a_seq, fusion, False, generator)
    return fuse_noisy(diff, a_seq, ones, t, noise, fusion, 0.0)


@torch.no_grad()
def sample(diff: GaussianDiffusion, net: Net, s2: torch.Tensor, s1: torch.Tensor,
           clear: torch.Tensor, *, fusion: Fusion = Fusion.NOISE_THEN_FUSE,
           shared_noise: bool = False, s: float = 1e-8,
           generator: torch.Generator | None = None, progress: bool = False,
           aux: AuxCondition = AuxCondition.DIFFUSED) -> torch.Tensor:
    """Conditional inference (Algorithm 1) for any L: returns X_0, (B, C, H, W) in [-1, 1].

    At every step the known region M takes the fused clear dates diffused to t-1 and the rest
    the model's reverse step from (X_t, A~_t); at the last step M holds the clean average.
    """
    b, _, c, h, w = s2.shape
    x = randn((b, c, h, w), s2, generator)
    region = region_mask(clear)
    for i in tqdm(range(diff.num_timesteps - 1, -1, -1), desc="seqdm sampling",
                  disable=not progress, leave=False):
        t = torch.full((b,), i, device=s2.device, dtype=torch.long)
        a_t = fuse_aux(diff, s1, t, fusion, generator, aux)
        out = net(x, a_t, diff.model_timesteps(t))
        unknown = diff.p_sample(out, x, t, randn(tuple(x.shape), x, generator))["sample"]
        noise = _seq_noise(s2, fusion, shared_noise, generator)
        known = fuse_noisy(diff, s2, clear, t - 1 if i > 0 else None, noise, fusion, s)
        x = region * known + (1.0 - region) * unknown
    return x


def loss_clear(diff: GaussianDiffusion, net: Net, x0: torch.Tensor, a0: torch.Tensor,
               t: torch.Tensor, generator: torch.Generator | None = None,
               aux: AuxCondition = AuxCondition.DIFFUSED) -> Losses:
    """Eq. 27: hybrid loss on a cloud-free image X_0 and its S1 image A_0."""
    a_t = aux_state(diff, a0, t, randn(tuple(a0.shape), a0, generator), aux)
    noise = randn(tuple(x0.shape), x0, generator)
    return diff.training_losses(lambda x, tm: net(x, a_t, tm), x0, t, noise)


def fused_training_state(diff: GaussianDiffusion, x0: torch.Tensor, s2: torch.Tensor,
                         clear: torch.Tensor, t: torch.Tensor, eps_hat: torch.Tensor, *,
                         fusion: Fusion, shared_noise: bool, s: float,
                         unknown: UnknownState = UnknownState.TARGET,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """X~_t of Eq. 28: fused noisy known regions; elsewhere the target diffused with eps_hat
    (``UnknownState.TARGET``) or pure noise (``NOISE``)."""
    noise = eps_hat if shared_noise else _seq_noise(s2, fusion, False, generator)
    known = fuse_noisy(diff, s2, clear, t, noise, fusion, s)
    region = region_mask(clear)
    if unknown is UnknownState.NOISE:
        rest = randn(tuple(x0.shape), x0, generator)
    else:
        rest = diff.q_sample(x0, t, eps_hat)
    return region * known + (1.0 - region) * rest


def loss_sequence(diff: GaussianDiffusion, net: Net, x0: torch.Tensor, s2: torch.Tensor,
                  s1: torch.Tensor, clear: torch.Tensor, t: torch.Tensor, *,
                  fusion: Fusion = Fusion.NOISE_THEN_FUSE, shared_noise: bool = False,
                  s: float = 1e-8, region: LossRegion = LossRegion.ALL,
                  unknown: UnknownState = UnknownState.TARGET,
                  generator: torch.Generator | None = None,
                  aux: AuxCondition = AuxCondition.DIFFUSED) -> Losses:
    """Eq. 28: hybrid loss on the fused cloudy sequence, regressing onto the target's noise.

    The network sees the state it meets at inference (fused known regions + diffused target in
    the unknown region, fused S1) and is asked for eps_hat, the noise of the clear target X_0;
    ``region`` says over which pixels the loss is taken.
    """
    eps_hat = randn(tuple(x0.shape), x0, generator)
    x_t = fused_training_state(diff, x0, s2, clear, t, eps_hat, fusion=fusion,
                               shared_noise=shared_noise, s=s, unknown=unknown,
                               generator=generator)
    a_t = fuse_aux(diff, s1, t, fusion, generator, aux)
    known = region_mask(clear)
    weight = 1.0 - known if region is LossRegion.UNKNOWN else None
    vb_x0 = x0
    if shared_noise and unknown is UnknownState.TARGET:
        # x_t is then exactly q(x_t | composite) with eps_hat: the VLB's true posterior must be
        # that of the composite (fused clear dates in M, the target elsewhere), or the known
        # region's temporal change reads as variance and drives the learned variance far out
        # of its [posterior, beta] range
        vb_x0 = known * fuse_clean(s2, clear, s) + (1.0 - known) * x0
    return diff.training_losses(lambda x, tm: net(x, a_t, tm), vb_x0, t, eps_hat, x_t=x_t,
                                weight=weight)
