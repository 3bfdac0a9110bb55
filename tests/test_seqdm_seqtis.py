"""SeqTIS: sequential data fusion (noise-then-fuse vs fuse-then-noise, shared noise), the
conditional inference of Algorithm 1 and the fused training state of Eq. 28."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crbench_methods.seqdm.diffusion import GaussianDiffusion
from crbench_methods.seqdm.network import MmDMNet
from crbench_methods.seqdm.seqtis import (
    Fusion,
    fuse_aux,
    fuse_noisy,
    fused_training_state,
    region_mask,
    sample,
)

DIFF = GaussianDiffusion.from_schedule("linear", 1000)


def _clear_counts() -> torch.Tensor:
    """(1, 3, 1, 1, 4): pixel j is clear on j of the 3 dates (pixel 0 on none)."""
    clear = torch.zeros(1, 3, 1, 1, 4)
    for j in range(4):
        clear[0, :j, 0, 0, j] = 1.0
    return clear


@pytest.mark.parametrize("fusion", list(Fusion))
def test_fused_noise_variance(fusion: Fusion) -> None:
    n, t_idx = 20000, 300
    g = torch.Generator().manual_seed(0)
    clear = _clear_counts().expand(n, -1, -1, -1, -1)
    seq = torch.rand(1, 3, 2, 1, 4, generator=g).expand(n, -1, -1, -1, -1) * 2 - 1
    t = torch.full((n,), t_idx)
    shape = (n, 2, 1, 4) if fusion is Fusion.FUSE_THEN_NOISE else (n, 3, 2, 1, 4)
    fused = fuse_noisy(DIFF, seq, clear, t, torch.randn(shape, generator=g), fusion, 1e-8)
    abar = float(np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[t_idx])
    var = fused.double().var(dim=0)[..., 1:]  # pixels clear on k = 1, 2, 3 dates
    k = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    want = (1 - abar) / k if fusion is Fusion.NOISE_THEN_FUSE else (1 - abar) * k**0
    torch.testing.assert_close(var, want.expand_as(var), rtol=0.05, atol=0)
    # the mean is sqrt(abar) times the clear-date average either way
    avg = (seq[0] * clear[0]).sum(0)[..., 1:] / clear[0].sum(0)[..., 1:]
    torch.testing.assert_close(fused.double().mean(0)[..., 1:], (abar**0.5 * avg).double(),
                               atol=0.02, rtol=0)


def test_shared_noise_keeps_full_variance() -> None:
    n = 20000
    g = torch.Generator().manual_seed(1)
    clear = _clear_counts().expand(n, -1, -1, -1, -1)
    seq = torch.zeros(n, 3, 2, 1, 4)
    fused = fuse_noisy(DIFF, seq, clear, torch.full((n,), 300), torch.randn(n, 2, 1, 4,
                       generator=g), Fusion.NOISE_THEN_FUSE, 1e-8)
    abar = DIFF.alphas_cumprod[300]
    var = fused.double().var(dim=0)[..., 1:]
    torch.testing.assert_close(var, torch.full_like(var, 1 - abar), rtol=0.05, atol=0)


def test_aux_fusion_variance_is_divided_by_L() -> None:
    n, L = 20000, 4
    g = torch.Generator().manual_seed(2)
    a = torch.zeros(n, L, 2, 1, 3)
    fused = fuse_aux(DIFF, a, torch.full((n,), 500), Fusion.NOISE_THEN_FUSE, g)
    var = fused.double().var(dim=0)
    torch.testing.assert_close(var, torch.full_like(var, (1 - DIFF.alphas_cumprod[500]) / L),
                               rtol=0.05, atol=0)


def test_eq28_state_with_shared_noise() -> None:
    g = torch.Generator().manual_seed(3)
    clear = _clear_counts().expand(2, -1, -1, -1, -1)
    seq = torch.rand(2, 3, 13, 1, 4, generator=g) * 2 - 1
    x0 = torch.rand(2, 13, 1, 4, generator=g) * 2 - 1
    eps = torch.randn(2, 13, 1, 4, generator=g)
    t = torch.tensor([10, 700])
    state = fused_training_state(DIFF, x0, seq, clear, t, eps, fusion=Fusion.NOISE_THEN_FUSE,
                                 shared_noise=True, s=1e-8)
    ab = torch.as_tensor(DIFF.alphas_cumprod[[10, 700]], dtype=torch.float32)[:, None, None, None]
    # unknown pixel 0 (never clear): the target diffused with eps_hat
    torch.testing.assert_close(state[..., 0], (ab.sqrt() * x0 + (1 - ab).sqrt() * eps)[..., 0])
    # known pixels: the clear-date average diffused with the same eps_hat
    avg = (seq * clear).sum(1) / clear.sum(1).clamp(min=1)
    want = ab.sqrt() * avg + (1 - ab).sqrt() * eps
    torch.testing.assert_close(state[..., 1:], want[..., 1:])


def _perturbed_net() -> MmDMNet:
    torch.manual_seed(0)
    net = MmDMNet({"image_size": 8, "base_channels": 32, "channel_mult": [1, 2],
                   "num_res_blocks": 1, "attention_resolutions": [4], "num_heads": 2,
                   "dropout": 0.0})
    with torch.no_grad():  # leave ADM's zero init so that the output depends on the input
        for p in net.parameters():
            if p.ndim > 1 and p.abs().max() == 0:
                p.normal_(0.0, 0.05)
    return net.eval()


@pytest.mark.parametrize("fusion", list(Fusion))
def test_inference_keeps_known_pixels_exactly(fusion: Fusion) -> None:
    g = torch.Generator().manual_seed(4)
    b, L, h, w = 2, 3, 8, 8
    s2 = torch.rand(b, L, 13, h, w, generator=g) * 2 - 1
    s1 = torch.rand(b, L, 2, h, w, generator=g) * 2 - 1
    clear = (torch.rand(b, L, 1, h, w, generator=g) > 0.7).float()
    net = _perturbed_net()
    diff = DIFF.respaced(4)
    with torch.no_grad():
        x = sample(diff, net, s2, s1, clear, fusion=fusion, generator=torch.Generator())
    known = region_mask(clear).bool().expand_as(x)
    assert 0 < known.float().mean() < 1
    s2d, cd = s2.double(), clear.double()
    avg = (s2d * cd).sum(1) / cd.sum(1).clamp(min=1)  # independent float64 average
    assert torch.allclose(x.double()[known], avg[known], atol=1e-6, rtol=0)
    assert x[~known].abs().max() <= 1.0 + 1e-6  # x0 is clipped at the last step
    assert not torch.allclose(x.double()[~known], avg[~known], atol=1e-3)
