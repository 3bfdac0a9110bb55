"""least_cloudy and mosaicing on hand-made tensors."""

from __future__ import annotations

import pytest
import torch

from crbench.api import Inputs
from crbench.registry import create_method
from crbench_methods.least_cloudy import least_cloudy
from crbench_methods.mosaicing import mosaic


def _const_seq(values: list[float], size: int = 2) -> torch.Tensor:
    """(1, L, 13, size, size) with input l filled with values[l]."""
    return torch.tensor(values).view(1, -1, 1, 1, 1).expand(1, len(values), 13, size, size).clone()


def test_least_cloudy_picks_min_coverage_per_sample() -> None:
    s2 = torch.cat([_const_seq([0.1, 0.2, 0.3]), _const_seq([0.4, 0.5, 0.6])])
    cov = torch.tensor([[0.5, 0.2, 0.9], [0.3, 0.3, 0.0]])
    out = least_cloudy(s2, cov)
    assert out.shape == (2, 13, 2, 2)
    assert torch.all(out[0] == s2[0, 1]) and torch.all(out[1] == s2[1, 2])


def test_least_cloudy_ties_go_to_earliest() -> None:
    s2 = _const_seq([0.1, 0.2, 0.3, 0.4])
    out = least_cloudy(s2, torch.tensor([[0.7, 0.1, 0.1, 0.1]]))
    assert torch.all(out == s2[0, 1])
    out = least_cloudy(s2, torch.zeros(1, 4))
    assert torch.all(out == s2[0, 0])


def test_least_cloudy_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"coverage \(B, L\)"):
        least_cloudy(_const_seq([0.1, 0.2]), torch.zeros(1, 3))


def test_mosaic_means_clear_pixels_and_fills_the_toolbox_value() -> None:
    s2 = _const_seq([0.2, 0.4, 0.9])
    masks = torch.zeros(1, 3, 2, 2)
    masks[0, 2] = 1  # third input cloudy everywhere
    masks[0, 0, 0, 1] = 1  # pixel (0,1): only the second input is clear
    masks[0, :, 1, 1] = 1  # pixel (1,1): no input clear
    out = mosaic(s2, masks)
    assert out.shape == (1, 13, 2, 2)
    torch.testing.assert_close(out[0, :, 0, 0], torch.full((13,), 0.3))
    torch.testing.assert_close(out[0, :, 1, 0], torch.full((13,), 0.3))
    torch.testing.assert_close(out[0, :, 0, 1], torch.full((13,), 0.4))
    torch.testing.assert_close(out[0, :, 1, 1], torch.full((13,), 0.1))
    torch.testing.assert_close(mosaic(s2, masks, fill=0.5)[0, :, 1, 1], torch.full((13,), 0.5))


def test_mosaic_all_clear_is_plain_mean_per_band() -> None:
    g = torch.Generator().manual_seed(1)
    s2 = torch.rand(2, 4, 13, 5, 5, generator=g)
    torch.testing.assert_close(mosaic(s2, torch.zeros(2, 4, 5, 5)), s2.mean(dim=1))
    with pytest.raises(ValueError, match=r"masks \(B, L, H, W\)"):
        mosaic(s2, torch.zeros(2, 3, 5, 5))


def test_methods_from_registry_use_the_right_inputs() -> None:
    s2 = _const_seq([0.2, 0.6])
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0, 0, 0] = 1
    inputs = Inputs(s2=s2, s1=torch.zeros(1, 2, 2, 2, 2), masks=masks,
                    coverage=masks.mean(dim=(2, 3)), days=torch.tensor([[10, 22]]))
    lc = create_method("least_cloudy").predict(inputs)
    assert torch.all(lc == 0.6)  # second input has coverage 0
    mo = create_method("mosaicing").predict(inputs)
    assert mo[0, 0, 0, 0] == pytest.approx(0.6) and mo[0, 0, 1, 1] == pytest.approx(0.4)
