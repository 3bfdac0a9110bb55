"""Protocols against the SEN12MS-CR-TS toolbox: blank dates, mosaicing's fill, the training
sampler, and ``crbench run --protocol parity|toolbox`` checked against a reference written
here from the toolbox's code (data/dataLoader.py: masks, coverage, least-cloudy target,
first L inputs; test.py: its least-cloudy and mosaicing baselines under the "resnet"
scaling, S2 / 2000 in [0, 5], fill 0.5 there, exact zeros left out of the mean).

The tree: a synthetic test ROI whose S2 images of three (patch, date) pairs are rewritten
as zeros (blank). Ties: the reference breaks coverage ties with the earliest date
(``np.argsort(kind="stable")``), as crbench does; the toolbox's plain ``np.argsort`` may pick
another tied date depending on the numpy build (DESIGN.md), which no code can reproduce.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch

from crbench.cli.main import main
from crbench.constants import TARGET_CLEAR_MAX
from crbench.data.dataset import SEN12MSCRTS
from crbench.data.index import build_index, read_index, scan_tree
from crbench.data.masks import MaskCache, compute_cloud_mask
from crbench.errors import UsageError
from crbench.metrics import compute_metrics
from crbench.registry import create_method
from crbench.runner.store import read_rows
from crbench.synth import synthesize
from crbench.training.loop import _dataset
from crbench.training.options import TrainOptions, check_train_data

BLANKS = ((0, 0), (1, 2), (2, 13))  # (patch, date t) rewritten as all-zero S2 images
L = 3


def _zero(path: Path) -> None:
    with rasterio.open(path) as src:
        profile = src.profile
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((profile["count"], profile["height"], profile["width"]),
                           dtype=profile["dtype"]))


@pytest.fixture(scope="module")
def blank_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic test ROI, 3 patches of 64 px (seed 3), with the dates of BLANKS blank."""
    root = tmp_path_factory.mktemp("parity") / "data"
    synthesize(root, rois=1, patches=3, size=64, seed=3)
    records = scan_tree(root, "test")
    for patch, t in BLANKS:
        rec = next(r for r in records if r.patch == patch)
        _zero(rec.s2[rec.pos(t)])
    return root


# -- the toolbox, re-implemented from its code -------------------------------------------------

def _toolbox_masks(raw: np.ndarray) -> np.ndarray:
    """dataLoader.get_cloud_map('s2cloudless_mask'): no blank rule at all."""
    from s2cloudless import S2PixelCloudDetector

    det = S2PixelCloudDetector(threshold=0.4, all_bands=True, average_over=4, dilation_size=2)
    batch = np.moveaxis(np.clip(raw, 0, 10000) / 10000, 1, -1)
    return det.get_cloud_masks(batch).astype(np.float32)  # (T, H, W)


def _toolbox_sample(raw: np.ndarray, blank_clear: bool, fill_zero_rule: bool
                    ) -> dict[str, object]:
    """One patch through the toolbox: dates, and its two baselines in [0, 1].

    ``blank_clear=False`` swaps in crbench's blank rule (blank = fully cloudy) and
    ``fill_zero_rule=False`` drops test.py's exact-zero rule: the ``toolbox`` protocol.
    """
    masks = _toolbox_masks(raw)
    if not blank_clear:
        scaled = np.clip(raw, 0, 10000) / 10000
        blank = [s.mean() < 1e-5 and s.std() < 1e-5 for s in scaled]
        masks[np.asarray(blank)] = 1.0
    coverage = [float(np.mean(m)) for m in masks]
    target = int(np.argsort(coverage, kind="stable")[0])
    inputs = [i for i, c in enumerate(coverage) if 0.0 <= c <= 1.0][:L]
    s2 = np.clip(raw.astype(np.float32), 0, 10000) / 2000  # "resnet" scaling, [0, 5]
    a_s2, a_mask = s2[inputs], masks[inputs]
    # baseline 1: the input with the least cloud (sum of its mask)
    least = int(np.argsort([a_mask[k].sum() for k in range(L)], kind="stable")[0])
    lc = a_s2[least] / 5
    # baseline 2: nan where S2 * (1 - mask) == 0, nanmean in [0, 1], back to [0, 5], fill 0.5
    fake = np.full_like(a_s2, np.nan)
    for k in range(L):
        masked = a_s2[k] * (1 - a_mask[k])
        keep = masked != 0 if fill_zero_rule else a_mask[k][None].repeat(13, 0) == 0
        fake[k][keep] = masked[keep]
    with warnings.catch_warnings():  # "Mean of empty slice" where no input is clear
        warnings.simplefilter("ignore", RuntimeWarning)
        mo = np.nanmean(fake / 5, 0) * 5
    filled = int(np.isnan(mo).sum())
    mo[np.isnan(mo)] = 0.5
    return {"target": target, "inputs": inputs, "coverage": coverage, "masks": a_mask,
            "target_s2": s2[target] / 5, "least_cloudy": lc, "mosaicing": mo / 5,
            "filled": filled}


def _raw(rec) -> np.ndarray:
    arrays = []
    for path in rec.s2:
        with rasterio.open(path) as src:
            arrays.append(src.read().astype(np.float32))
    return np.stack(arrays)


@pytest.fixture(scope="module")
def reference(blank_tree: Path) -> dict[str, dict[int, dict[str, object]]]:
    """protocol -> patch -> the toolbox's (or toolbox-with-crbench-blank-rule) sample."""
    out: dict[str, dict[int, dict[str, object]]] = {"parity": {}, "toolbox": {}}
    for rec in scan_tree(blank_tree, "test"):
        raw = _raw(rec)
        out["parity"][rec.patch] = _toolbox_sample(raw, True, True)
        out["toolbox"][rec.patch] = _toolbox_sample(raw, False, False)
    return out


# -- blank dates -------------------------------------------------------------------------------

def test_blank_coverage_per_protocol_from_one_cache(blank_tree: Path, tmp_path: Path) -> None:
    cache = MaskCache(blank_tree, cache_dir=tmp_path / "cache")
    rec = scan_tree(blank_tree, "test")[0]
    blank, other = rec.s2[rec.pos(0)], rec.s2[rec.pos(1)]
    assert cache.coverage(blank) == 1.0 and cache.mask(blank).all()
    assert cache.misses == 1
    assert cache.coverage(blank, blank_clear=True) == 0.0
    assert not cache.mask(blank, blank_clear=True).any()
    assert cache.coverages([blank, other], blank_clear=True)[0] == 0.0
    assert cache.coverage(other, blank_clear=True) == cache.coverage(other)
    assert cache.misses == 2  # the blank image's mask was computed once for both rules
    fresh = MaskCache(blank_tree, cache_dir=tmp_path / "cache")  # from disk: flag stored
    assert fresh.coverage(blank, blank_clear=True) == 0.0 and fresh.misses == 0


def test_blank_rule_of_compute_cloud_mask_matches_s2cloudless_on_zeros() -> None:
    zeros = np.zeros((13, 16, 16), np.float32)
    assert compute_cloud_mask(zeros).all()  # crbench: fully cloudy
    toolbox = compute_cloud_mask(zeros, blank_clear=True)
    np.testing.assert_array_equal(toolbox, _toolbox_masks(zeros[None])[0].astype(bool))
    assert not toolbox.any()


def test_cli_index_and_run_accept_parity(blank_tree: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "parity.csv"
    assert main(["data", "index", str(blank_tree), "--split", "test", "--L", str(L),
                 "--protocol", "parity", "--out", str(out), "--no-progress"]) == 0
    expected = build_index(blank_tree, "test", L, protocol="parity")
    assert read_index(out).equals(expected)
    assert main(["data", "index", str(blank_tree), "--split", "test", "--L", str(L),
                 "--protocol", "blank", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("--protocol: unknown value 'blank'; expected one of toolbox, "
                            "strict, parity")


def test_cache_of_format_1_serves_the_blank_rule_without_recomputing(blank_tree: Path,
                                                                     tmp_path: Path) -> None:
    """A cache written before the blank flag (format 1) stays valid: a fully cloudy entry's
    flag is found by reading its image, without s2cloudless."""
    from crbench.data import maskfile

    cache = MaskCache(blank_tree, cache_dir=tmp_path / "cache")
    rec = scan_tree(blank_tree, "test")[0]
    cache.coverages(rec.s2)
    (gpath,) = (tmp_path / "cache").rglob("*.npz")
    with np.load(gpath) as z:
        arrays = {k: z[k] for k in z.files if k != "blank"}
    assert "blank" in np.load(gpath).files
    arrays["format"] = np.array(maskfile.FORMAT_V1)
    np.savez_compressed(gpath, **arrays)
    old = MaskCache(blank_tree, cache_dir=tmp_path / "cache")
    crbench_rule = old.coverages(rec.s2)
    toolbox_rule = old.coverages(rec.s2, blank_clear=True)
    assert old.misses == 0 and crbench_rule[0] == 1.0 and toolbox_rule[0] == 0.0
    assert crbench_rule[1:] == toolbox_rule[1:] and 1.0 in crbench_rule[1:]  # cloudy, not blank


def test_index_target_and_inputs_per_protocol(blank_tree: Path, reference: dict) -> None:
    for protocol, ref in reference.items():
        frame = build_index(blank_tree, "test", L, protocol=protocol).set_index("patch")
        for patch, sample in ref.items():
            row = frame.loc[patch]
            assert int(row["target_idx"]) == sample["target"], (protocol, patch)
            assert row["input_idx"] == ";".join(map(str, sample["inputs"])), (protocol, patch)
    # the blank dates are the targets under parity (the earliest coverage-0 date)...
    parity = build_index(blank_tree, "test", L, protocol="parity").set_index("patch")
    toolbox = build_index(blank_tree, "test", L, protocol="toolbox").set_index("patch")
    for patch, t in BLANKS[:2]:
        assert parity.loc[patch, "target_idx"] == t != toolbox.loc[patch, "target_idx"]
    # ...and inputs under coverage bounds: a blank date qualifies only as clear
    bounded = {p: build_index(blank_tree, "test", L, max_cov=0.95, protocol=p)
               .set_index("patch").loc[1, "input_idx"] for p in ("parity", "toolbox")}
    assert "2" in bounded["parity"].split(";") and "2" not in bounded["toolbox"].split(";")


def test_dataset_masks_of_a_blank_input_per_protocol(blank_tree: Path) -> None:
    for protocol, cloudy in (("toolbox", True), ("strict", True), ("parity", False)):
        ds = SEN12MSCRTS(blank_tree, "test", L=L, protocol=protocol, only_matching=False)
        sample = next(ds[i] for i in range(len(ds)) if ds[i].meta.patch == 1)
        k = sample.meta.input_idx.index(2) if 2 in sample.meta.input_idx else None
        if protocol == "strict":  # t = 2 is not the target there, so it stays an input
            assert k is not None
        assert bool(sample.inputs.masks[k].all()) is cloudy
        assert float(sample.inputs.coverage[k]) == (1.0 if cloudy else 0.0)


def test_random_sampler_uses_the_blank_rule(blank_tree: Path) -> None:
    ds = SEN12MSCRTS(blank_tree, "test", L=L, sampler="random", protocol="parity", seed=1)
    targets = set()
    for epoch in range(40):
        ds.set_epoch(epoch)
        targets.add((ds[1].meta.patch, ds[1].meta.target_idx))
    assert (1, 2) in targets  # the blank date is a clear target candidate under parity


# -- mosaicing's fill --------------------------------------------------------------------------

def test_mosaicing_fill_is_the_toolboxs_under_every_protocol(blank_tree: Path) -> None:
    ds = SEN12MSCRTS(blank_tree, "test", L=L, protocol="toolbox", only_matching=False)
    sample = next(ds[i] for i in range(len(ds)) if ds[i].meta.patch == 1)
    from crbench.api import collate

    batch = collate([sample])
    none_clear = batch.inputs.masks[0].min(0).values == 1
    assert int(none_clear.sum()) > 100  # the sample has pixels cloudy in every input
    for protocol, fill in (("toolbox", 0.1), ("parity", 0.1), ("strict", 0.1)):
        pred = create_method("mosaicing", protocol=protocol).predict(batch.inputs)
        assert torch.all(pred[0][:, none_clear] == torch.tensor(fill))
        other = create_method("mosaicing", protocol=protocol, fill=0.7).predict(batch.inputs)
        assert torch.equal(pred[0][:, ~none_clear], other[0][:, ~none_clear])
    pred = create_method("mosaicing", protocol="toolbox", fill=0.5).predict(batch.inputs)
    assert torch.all(pred[0][:, none_clear] == 0.5)
    with pytest.raises(UsageError, match=r"fill: bad value 2; expected a number in \[0, 1\]"):
        create_method("mosaicing", fill=2)
    with pytest.raises(UsageError, match="protocol: unknown value 'paper'"):
        create_method("mosaicing", protocol="paper")


def test_parity_mosaic_leaves_out_exact_zeros() -> None:
    from crbench_methods.mosaicing import mosaic

    s2 = torch.full((1, 2, 13, 1, 2), 0.2)
    s2[0, 0, 3] = 0.0  # band 3 of the first input is 0 at both pixels
    masks = torch.zeros(1, 2, 1, 2)
    masks[0, 1, 0, 1] = 1  # pixel 1: only the first input is clear
    out = mosaic(s2, masks, fill=0.1, skip_zero=True)
    assert out[0, 3, 0, 0] == pytest.approx(0.2) and out[0, 3, 0, 1] == pytest.approx(0.1)
    assert out[0, 0, 0, 1] == pytest.approx(0.2)
    assert mosaic(s2, masks, fill=0.1)[0, 3, 0, 0] == pytest.approx(0.1)  # (0 + 0.2) / 2


# -- training samples --------------------------------------------------------------------------

def test_fixed_training_sampler_follows_the_toolbox(synth_root: Path) -> None:
    opts = TrainOptions(seq_len=L, batch_size=1, train_sampler="fixed")
    ds = _dataset(synth_root, "train", opts, opts.train_sampler)
    records = scan_tree(synth_root, "train")
    assert len(ds) == len(records) and ds.n_skipped == 0  # every patch, matching or not
    cache = MaskCache(synth_root)
    for i in range(len(ds)):
        meta = ds[i].meta
        rec = next(r for r in records if (r.roi, r.patch) == (meta.roi, meta.patch))
        cov = cache.coverages(rec.s2)
        assert meta.target_idx == rec.ts[int(np.argsort(cov, kind="stable")[0])]
        assert meta.input_idx == rec.ts[:L]  # bounds [0, 1]: the first L dates
    for epoch in range(3):  # the dates stay fixed from epoch to epoch
        ds.set_epoch(epoch)
        assert ds[0].meta.input_idx == records[0].ts[:L]
    rnd = _dataset(synth_root, "train", TrainOptions(seq_len=L, batch_size=1), "random")
    assert all(rnd[i].meta.target_idx not in rnd[i].meta.input_idx for i in range(len(rnd)))
    assert all(rnd[i].meta.coverage_target <= TARGET_CLEAR_MAX for i in range(len(rnd)))


def test_fit_trains_on_the_fixed_samples(synth_root: Path, tmp_path: Path) -> None:
    """The loop itself draws its batches from the fixed sampler when asked."""
    from crbench.training import TrainParts, fit_on_dataset

    seen: list[tuple[str, int, tuple[int, ...], int]] = []

    def build(total: int, device: torch.device) -> TrainParts:
        model = torch.nn.Conv2d(13, 13, 1).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)

        def step(batch, ctx):
            seen.extend((m.roi, m.patch, tuple(m.input_idx), m.target_idx) for m in batch.meta)
            loss = (model(batch.inputs.s2[:, 0].to(ctx.device)) - batch.target.to(ctx.device))
            loss = loss.abs().mean()
            ctx.backward_step(loss, "g")
            return {"l1": float(loss.detach())}

        return TrainParts(model=model, config={"method": "probe"}, step_fn=step,
                          optimizers={"g": opt})

    opts = TrainOptions(seq_len=L, batch_size=1, steps=6, train_sampler="fixed",
                        val_samples=0, progress=False, device="cpu", crop=16)
    fit_on_dataset(synth_root, tmp_path / "ckpt", opts, build)
    fixed = _dataset(synth_root, "train", opts, "fixed")
    want = {(m.roi, m.patch, tuple(m.input_idx), m.target_idx)
            for m in (fixed[i].meta for i in range(len(fixed)))}
    assert len(seen) == 6 and set(seen) == want  # 6 steps over the 4 train patches


def test_bad_training_sampler_or_protocol_is_refused() -> None:
    with pytest.raises(UsageError, match="train_sampler: unknown value 'toolbox'"):
        check_train_data("toolbox", "toolbox")
    with pytest.raises(UsageError, match="protocol: unknown value 'lax'"):
        check_train_data("fixed", "lax")


# -- Done when: crbench run reproduces the toolbox's baselines ----------------------------------

def _toolbox_scores(pred: np.ndarray, target: np.ndarray, masks: np.ndarray
                    ) -> dict[str, float]:
    """test.compute_metric: RMSE, PSNR, SAM, and RMSE over the pixels cloudy in any input
    (its aggregated mask) and over the others."""
    t, f = target.astype(np.float64), pred.astype(np.float64)
    rmse = float(np.sqrt(np.mean(np.square(t - f))))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (t * f).sum(0) / np.sqrt((t * t).sum(0)) / np.sqrt((f * f).sum(0))
    cloudy = np.clip(masks.sum(0), 0, 1)[None].repeat(13, 0) == 1
    return {"nrmse_all": rmse, "psnr": 20 * np.log10(1 / rmse) if rmse > 0 else float("inf"),
            "sam": float(np.mean(np.arccos(np.clip(cos, -1, 1)))),
            "nrmse_cloudy": _rmse_over(t - f, cloudy), "nrmse_clear": _rmse_over(t - f, ~cloudy)}


def _rmse_over(diff: np.ndarray, where: np.ndarray) -> float:
    """RMSE over ``where``; NaN for an empty region (the toolbox's np.nanmean gives NaN)."""
    return float(np.sqrt(np.mean(np.square(diff[where])))) if where.any() else float("nan")


@pytest.mark.parametrize("protocol", ["parity", "toolbox"])
def test_run_reproduces_the_toolbox_baselines(blank_tree: Path, reference: dict,
                                              tmp_path: Path, protocol: str) -> None:
    ref = reference[protocol]
    assert sum(s["filled"] for s in ref.values()) > 100  # the fill is exercised
    out = tmp_path / "run"
    assert main(["run", "--data", str(blank_tree), "--methods", "least_cloudy,mosaicing",
                 "--L", str(L), "--protocol", protocol, "--mask-convention", "toolbox",
                 "--out", str(out), "--no-progress"]) == 0
    rows = read_rows(out)
    expected = {p for p, s in ref.items() if s["coverage"][s["target"]] <= TARGET_CLEAR_MAX}
    ds = SEN12MSCRTS(blank_tree, "test", L=L, protocol=protocol)
    for method in ("least_cloudy", "mosaicing"):
        got = rows[rows["method"] == method].set_index("patch")
        assert set(got.index) == expected
        model = create_method(method, protocol=protocol) if method == "mosaicing" \
            else create_method(method)
        for i in range(len(ds)):
            sample = ds[i]
            patch, want = sample.meta.patch, ref[sample.meta.patch]
            assert (sample.meta.target_idx, sample.meta.input_idx) == \
                (want["target"], want["inputs"])
            pred = model.predict(_batch(sample)).numpy()[0]
            np.testing.assert_allclose(pred, want[method], rtol=0, atol=1e-6)
            np.testing.assert_allclose(sample.target.numpy(), want["target_s2"], atol=1e-6)
            toolbox = _toolbox_scores(want[method], want["target_s2"], want["masks"])
            for name, value in toolbox.items():
                if name == "sam" and np.isnan(value):  # its SAM of a blank target is NaN
                    continue
                if np.isnan(value):  # an empty region
                    assert np.isnan(got.loc[patch, name]), (method, patch, name)
                    continue
                assert got.loc[patch, name] == pytest.approx(value, rel=1e-6, abs=1e-7), \
                    (method, patch, name)
            scores = compute_metrics(torch.from_numpy(want[method])[None],
                                     torch.from_numpy(want["target_s2"])[None],
                                     torch.from_numpy(want["masks"])[None])
            assert got.loc[patch, "ssim"] == pytest.approx(float(scores["ssim"][0]), abs=1e-6)


def _batch(sample):
    from crbench.api import collate

    return collate([sample]).inputs


def test_toolbox_and_parity_differ_where_the_blanks_are(blank_tree: Path) -> None:
    frames = {p: build_index(blank_tree, "test", L, protocol=p).set_index("patch")
              for p in ("toolbox", "parity")}
    changed = [p for p in frames["toolbox"].index
               if (frames["toolbox"].loc[p, ["target_idx", "input_idx"]]
                   != frames["parity"].loc[p, ["target_idx", "input_idx"]]).any()]
    assert changed == [0, 1]  # patch 2's blank date t = 13 is neither target nor input


# -- the generator's blank dates ---------------------------------------------------------------

def test_synth_writes_blank_dates_and_nothing_else_changes(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    from crbench.synth import load_truth

    plain, blanked = tmp_path / "plain", tmp_path / "blanked"
    synthesize(plain, rois=1, patches=2, size=32, seed=4)
    synthesize(blanked, rois=1, patches=2, size=32, seed=4, blank_dates=3)
    for a, b in zip(scan_tree(plain, "test"), scan_tree(blanked, "test"), strict=True):
        truth = load_truth(blanked, b.roi, b.patch)
        assert truth.blank.sum() == 3 and not load_truth(plain, a.roi, a.patch).blank.any()
        for t, (pa, pb) in enumerate(zip(a.s2, b.s2, strict=True)):
            with rasterio.open(pa) as fa, rasterio.open(pb) as fb:
                img_a, img_b = fa.read(), fb.read()
            if truth.blank[t]:
                assert not img_b.any() and img_a.all()
            else:
                np.testing.assert_array_equal(img_a, img_b)
    assert main(["synth", str(tmp_path / "bad"), "--rois", "1", "--blank-dates", "31"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "--blank-dates: got 31; expected an integer from 0 to 30 (blank S2 images per patch)")


def test_imported_toolbox_pairs_get_the_protocols_coverage(blank_tree: Path,
                                                           tmp_path: Path) -> None:
    """``data index --import-pairs F --protocol parity``: the toolbox's own pairs of the blank
    tree carry coverage 0.0 for its blank dates, as the toolbox computed them."""
    parity = build_index(blank_tree, "test", L, protocol="parity")
    recs = {(r.roi, r.patch): r for r in scan_tree(blank_tree, "test")}
    pairs = {}
    for pdx, row in enumerate(parity.to_dict("records")):
        rec = recs[(row["roi"], int(row["patch"]))]
        inputs, target = [int(t) for t in row["input_idx"].split(";")], int(row["target_idx"])

        def rel(path: Path) -> str:
            return path.relative_to(blank_tree).as_posix()

        pairs[pdx] = {"input": inputs, "target": np.int64(target),
                      "paths": {"input": {"S1": [rel(rec.s1[t]) for t in inputs],
                                          "S2": [rel(rec.s2[t]) for t in inputs]},
                                "output": {"S1": rel(rec.s1[target]),
                                           "S2": rel(rec.s2[target])}}}
    pair_file = tmp_path / f"generic_{L}_test_all_s2cloudless_mask.npy"
    np.save(pair_file, pairs)
    out = {}
    for protocol in ("parity", "toolbox"):
        out[protocol] = tmp_path / f"{protocol}.csv"
        assert main(["data", "index", str(blank_tree), "--split", "test", "--L", str(L),
                     "--import-pairs", str(pair_file), "--allow-pickle", "--protocol",
                     protocol, "--out", str(out[protocol]), "--no-progress"]) == 0
    got = read_index(out["parity"])
    cols = ["input_idx", "target_idx", "coverage_inputs", "coverage_target"]
    pd.testing.assert_frame_equal(got[cols], parity[cols])
    crbench_rule = read_index(out["toolbox"]).set_index("patch")
    assert crbench_rule.loc[1, "coverage_target"] == 1.0  # the blank target t = 2
    assert got.set_index("patch").loc[1, "coverage_target"] == 0.0
