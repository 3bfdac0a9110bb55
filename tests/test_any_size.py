"""Any patch size and non-square patches (issue 13, item 2): masks, index, every registered
method (learned ones trained for 2 steps, whole patches and ``--crop``) and metrics on a
synthetic 37 x 50 tree; and the pad/crop helper the networks share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from crbench.cli.main import main
from crbench.data.index import build_index
from crbench.data.masks import MaskCache
from crbench.registry import method_names
from crbench.runner.store import read_rows
from crbench.synth import synthesize
from crbench.torchutil import crop_to, pad_to_multiple

SHAPE = (37, 50)  # odd height, neither side a multiple of STGAN's or SeqDMs' stride
LEARNED = ("seq2point", "stgan", "seqdm", "seqdm_no_tts", "uncrtaints")


@pytest.mark.parametrize("shape", [(1, 1), (37, 50), (101, 100), (64, 64), (2, 3, 5, 7)])
@pytest.mark.parametrize("multiple", [1, 4, 8, 32])
def test_pad_then_crop_returns_exactly_the_input(shape: tuple[int, ...], multiple: int) -> None:
    x = torch.arange(float(np.prod(shape))).reshape(shape)
    padded, size = pad_to_multiple(x, multiple)
    assert size == shape[-2:]
    assert padded.shape[:-2] == x.shape[:-2]
    assert all(p % multiple == 0 and p - s < multiple
               for p, s in zip(padded.shape[-2:], shape[-2:], strict=True))
    back = crop_to(padded, size)
    assert back.shape == x.shape and torch.equal(back, x)
    # edge padding: the added rows / columns repeat the last row / column
    assert torch.equal(padded[..., -1, :shape[-1]], x[..., -1, :])
    assert torch.equal(padded[..., :shape[-2], -1], x[..., :, -1])
    if all(s % multiple == 0 for s in shape[-2:]):
        assert padded is x


def test_pad_refuses_a_bad_multiple() -> None:
    with pytest.raises(ValueError, match="multiple 0"):
        pad_to_multiple(torch.zeros(4, 4), 0)


@pytest.fixture(scope="module")
def odd_tree(tmp_path_factory: pytest.TempPathFactory):  # -> Callable[[tuple], Path]
    """``tree(shape)``: a tree of that patch shape with a test, a train and a val ROI (one
    patch each) and its mask cache, made once per shape."""
    made: dict[tuple[int, int], Path] = {}

    def tree(shape: tuple[int, int]) -> Path:
        if shape not in made:
            root = tmp_path_factory.mktemp("odd") / "tree"
            synthesize(root, rois=3, patches=1, size=shape, seed=1)
            assert main(["data", "masks", str(root), "--no-progress"]) == 0
            made[shape] = root
        return made[shape]

    return tree


@pytest.fixture(scope="module")
def odd_root(odd_tree) -> Path:
    return odd_tree(SHAPE)


def test_masks_and_index_keep_the_patch_shape(odd_root: Path) -> None:
    cache = MaskCache(odd_root)
    s2 = sorted(odd_root.glob("ROIs*/*/S2/*/*.tif"))
    assert len(s2) == 90
    for path in s2[::11]:
        mask = cache.mask(path)
        assert mask.shape == SHAPE
        assert cache.coverage(path) == pytest.approx(float(mask.mean()))
    frame = build_index(odd_root, "test", 3, cache=cache, protocol="strict")
    assert len(frame) == 1


@pytest.mark.parametrize(("shape", "crop"), [(SHAPE, None), (SHAPE, 33), ((101, 100), None)],
                         ids=["37x50-whole", "37x50-crop33", "101x100-whole"])
def test_every_method_trains_and_runs_on_non_square_patches(
        odd_tree, tmp_path: Path, capsys: pytest.CaptureFixture, shape: tuple[int, int],
        crop: int | None) -> None:
    """Each learned method trains 2 steps (whole 37 x 50 or 101 x 100 patches, or 33 px
    crops: none a multiple of the networks' strides), then `crbench run` of every registered
    method writes predictions of the patch's shape and finite metrics."""
    odd_root = odd_tree(shape)
    methods = sorted(method_names())
    assert set(LEARNED) <= set(methods)
    for name in LEARNED:
        extra = [] if crop is None else ["--crop", str(crop)]
        assert main(["train", name, "--data", str(odd_root), "--L", "3", "--preset", "tiny",
                     "--steps", "2", "--out", str(tmp_path / "ckpt" / name), "--no-progress",
                     *extra]) == 0, name
    out = tmp_path / "run"
    assert main(["run", "--data", str(odd_root), "--methods", ",".join(methods), "--L", "3",
                 "--checkpoints", str(tmp_path / "ckpt"), "--steps", "2", "--out", str(out),
                 "--save-predictions", "--protocol", "strict", "--mask-convention", "toolbox",
                 "--no-progress"]) == 0
    capsys.readouterr()
    rows = read_rows(out)
    assert sorted(set(rows["method"])) == methods and (rows.groupby("method").size() == 1).all()
    for col in ("nrmse_all", "psnr", "ssim", "sam"):
        assert np.isfinite(rows[col]).all(), col
    # toolbox convention: cloudy = cloudy in any input, so not empty where coverage > 0;
    # an empty region is NaN for every method alike (a property of the masks)
    assert np.isfinite(rows.loc[rows["coverage"] > 0, "nrmse_cloudy"]).all()
    for col in ("nrmse_cloudy", "nrmse_clear"):
        assert rows.groupby("target_idx")[col].apply(lambda v: v.isna().nunique() == 1).all()
    for name in methods:
        tif = out / "predictions" / name / "L3" / "ROIs1868_119_patch0.tif"
        with rasterio.open(tif) as src:
            assert (src.count, src.height, src.width) == (13, *shape), name
            assert np.isfinite(src.read()).all(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["runs"]) == len(methods)
