"""SEN12MS-CR as a second data set: layout detection, splits, the L = 1 dataset, the CLI
pipeline (synth, verify, masks, index, run, report) on a synthetic tree, and the real S1 and
cloudy S2 files of /work/shared/realdata read in place."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REALDATA

from crbench.cli.main import main
from crbench.data import cr
from crbench.data.dataset import SEN12MSCR, SEN12MSCRTS, dataset_class, read_scaled
from crbench.data.layout import EXPECTED_LAYOUT
from crbench.data.masks import MaskCache
from crbench.data.verify import ProblemKind
from crbench.data.verify_cr import verify_cr
from crbench.errors import DatasetNotFoundError, UsageError

REAL = REALDATA / "sen12mscr-ROIs1868-summer-19-p30"
"""The real S1 and cloudy S2 of one patch (helpers.REALDATA)."""


def test_layout_is_detected(cr_root: Path, synth_root: Path, tmp_path: Path) -> None:
    assert cr.detect_dataset(cr_root) == "sen12mscr"
    assert cr.detect_dataset(synth_root) == "sen12mscrts"
    assert cr.detect_dataset(tmp_path) is None
    assert dataset_class(cr_root) is SEN12MSCR and dataset_class(synth_root) is SEN12MSCRTS
    with pytest.raises(DatasetNotFoundError) as err:
        cr.resolve_dataset(tmp_path, None, "--data")
    msg = str(err.value)
    assert msg.startswith("--data: ") and EXPECTED_LAYOUT in msg and cr.CR_LAYOUT in msg
    with pytest.raises(UsageError, match=r"--dataset: sen12mscrts given but --data .* has the "
                       r"SEN12MS-CR layout"):
        cr.resolve_dataset(cr_root, "sen12mscrts", "--data")
    with pytest.raises(UsageError, match="--dataset: unknown value 'cr'"):
        cr.resolve_dataset(cr_root, "cr", "--data")


def test_splits_are_uncrtaints_scene_lists_matched_exactly() -> None:
    train, val, test = (set(cr.scenes_for(s)) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (155, 10, 10)
    assert not train & val and not train & test and not val & test
    assert "ROIs1868_summer/19" in val  # the real patch's scene
    assert {"ROIs1158_spring/106", "ROIs1970_fall/139", "ROIs2017_winter/63"} <= test
    assert "ROIs1970_fall/1" in train and "ROIs1970_fall/13" not in train | val | test
    with pytest.raises(UsageError, match="region: 'europa' is not defined for SEN12MS-CR"):
        cr.scenes_for("test", "europa")


def test_dataset_yields_l1_samples(cr_root: Path) -> None:
    ds = SEN12MSCR(cr_root, split="all")
    assert len(ds) == 6 and ds.n_skipped == 0
    cache = MaskCache(cr_root)
    for i in range(len(ds)):
        s = ds[i]
        rec = next(r for r in ds.records if (r.roi, r.patch) == (s.meta.roi, s.meta.patch))
        cloudy, clear = rec.s2
        assert "_s2_cloudy_" in cloudy.name and "_s2_" in clear.name and "cloudy" not in \
            clear.name
        assert s.inputs.s2.shape == (1, 13, 64, 64) and s.inputs.s1.shape == (1, 2, 64, 64)
        assert s.inputs.masks.shape == (1, 64, 64) and s.target.shape == (13, 64, 64)
        np.testing.assert_array_equal(s.inputs.s2[0].numpy(), read_scaled(cloudy, "s2"))
        np.testing.assert_array_equal(s.inputs.s1[0].numpy(), read_scaled(rec.s1[0], "s1"))
        np.testing.assert_array_equal(s.target.numpy(), read_scaled(clear, "s2"))
        np.testing.assert_array_equal(s.inputs.masks[0].numpy(), cache.mask(cloudy))
        assert s.meta.input_idx == [0] and s.meta.target_idx == 1
        assert s.meta.coverage_target == pytest.approx(cache.coverage(clear))
        assert s.meta.coverage_inputs[0] > 0.05  # the synthetic cloudy image has clouds
    train = SEN12MSCR(cr_root, split="train", sampler="random", crop=32, target_s1=True)
    assert len(train) == 2
    s = train[0]
    assert s.meta.target_idx == 1 and s.inputs.s2.shape == (1, 13, 32, 32)
    with pytest.raises(UsageError, match="L: bad value 3 for SEN12MS-CR"):
        SEN12MSCR(cr_root, split="all", L=3)
    with pytest.raises(UsageError, match="has the sen12mscr layout"):
        SEN12MSCRTS(cr_root, split="all", L=1)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_pipeline_on_synthetic_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                    ) -> None:
    root = tmp_path / "cr"
    rc, out, _ = _cli(capsys, "synth", root, "--dataset", "sen12mscr", "--rois", "3",
                      "--patches", "2", "--size", "64", "--seed", "1")
    assert rc == 0 and "SEN12MS-CR, 3 scenes x 2 patches" in out
    rc, out, _ = _cli(capsys, "data", "verify", root, "--no-progress")
    assert rc == 0 and "usable: yes (6 of 6 patches complete; L = 1)" in out
    rc, out, _ = _cli(capsys, "data", "masks", root, "--no-progress", "--dataset", "sen12mscr")
    assert rc == 0 and "12 images, 12 computed" in out  # 6 patches x (cloudy, clear)
    index = tmp_path / "index.csv"
    rc, _, _ = _cli(capsys, "data", "index", root, "--split", "all", "--L", "1", "--out", index,
                    "--no-progress", "--dataset", "sen12mscr")
    frame = pd.read_csv(index, dtype={"input_idx": str})
    assert rc == 0 and len(frame) == 6 and set(frame["input_idx"]) == {"0"}
    assert set(frame["target_idx"]) == {1} and "ROIs1158_spring/106" in set(frame["roi"])
    rc, _, err = _cli(capsys, "data", "index", root, "--split", "all", "--L", "3", "--out",
                      index, "--no-progress")
    assert rc == 2 and "--L: bad value 3 for SEN12MS-CR" in err and len(err.splitlines()) == 1
    pairs = tmp_path / "generic_1_all_all_s2cloudless_mask.npy"
    pairs.write_bytes(b"")
    rc, _, err = _cli(capsys, "data", "index", root, "--split", "all", "--L", "1", "--out",
                      index, "--import-pairs", pairs, "--allow-pickle")
    assert rc == 2 and "--import-pairs: " in err and "SEN12MS-CR tree" in err
    rc, _, err = _cli(capsys, "data", "verify", root, "--dataset", "sen12mscrts")
    assert rc == 2 and "--dataset: sen12mscrts given but ROOT" in err
    ckpt = tmp_path / "ckpt"
    rc, _, _ = _cli(capsys, "train", "seq2point", "--data", root, "--L", "1", "--out",
                    ckpt / "seq2point" / "L1", "--preset", "tiny", "--steps", "2",
                    "--batch-size", "2", "--crop", "32", "--no-progress")
    assert rc == 0
    run = tmp_path / "run"
    rc, _, _ = _cli(capsys, "run", "--data", root, "--methods",
                    "least_cloudy,mosaicing,seq2point", "--L", "1", "--split", "all",
                    "--checkpoints", ckpt, "--out", run, "--no-progress")
    assert rc == 0
    from crbench.runner import read_rows

    rows = read_rows(run)
    assert rows.groupby("method").size().to_dict() == {"least_cloudy": 6, "mosaicing": 6,
                                                        "seq2point": 6}
    assert set(rows["L"]) == {1} and set(rows["input_idx"].astype(str)) == {"0"}
    assert rows[["psnr", "ssim", "nrmse_all", "sam"]].notna().all().all()
    rc, out, _ = _cli(capsys, "report", "--results", run)
    table1 = out.split("### Table 1")[1].split("###")[0]
    assert rc == 0 and "all methods at L = 1" in table1
    for method in ("least_cloudy", "mosaicing", "seq2point"):
        assert f"| {method} | 6 |" in table1
    for col in ("nrmse_all", "nrmse_cloudy", "nrmse_clear", "psnr", "ssim", "sam"):
        assert col in table1
    rc, _, err = _cli(capsys, "run", "--data", root, "--methods", "least_cloudy", "--L", "3",
                      "--out", tmp_path / "run3", "--no-progress")
    assert rc == 2 and "--L: bad value 3 for SEN12MS-CR" in err


def test_verify_names_a_patch_without_its_target(cr_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "cr"
    shutil.copytree(cr_root, root, ignore=shutil.ignore_patterns(".crbench"))
    gone = cr.file_path(root, "ROIs1970_fall", "s2", 3, 1)
    gone.unlink()
    report = verify_cr(root, workers=1)
    missing = report.by_kind(ProblemKind.MISSING_FILE)
    assert len(missing) == 1 and missing[0].path == gone.relative_to(root).as_posix()
    assert "no cloud-free S2 image (the target) of patch 1" in missing[0].detail
    assert (report.n_patches, report.n_complete, report.usable) == (6, 5, True)
    assert len(SEN12MSCR(root, split="all")) == 5  # the index leaves it out


def _real_tree(tmp_path: Path) -> Path:
    if not REAL.is_dir():
        pytest.skip(f"real SEN12MS-CR files not found: {REAL} is absent (shared data missing)")
    root = tmp_path / "real"
    for mod in ("s1", "s2_cloudy"):
        link = cr.file_path(root, "ROIs1868_summer", mod, 19, 30)
        link.parent.mkdir(parents=True)
        link.symlink_to(REAL / link.name)
    return root


def test_real_files_without_target_are_not_usable(tmp_path: Path) -> None:
    root = _real_tree(tmp_path)
    report = verify_cr(root, workers=1)
    assert cr.detect_dataset(root) == "sen12mscr"
    assert (report.n_patches, report.n_complete, report.n_files, report.usable) == \
        (1, 0, 2, False)
    assert [p.kind for p in report.problems] == [ProblemKind.MISSING_FILE]
    assert "no cloud-free S2 image (the target) of patch 30" in report.problems[0].detail
    assert "usable: no - no patch has its s1, s2 (cloud-free target)" in report.summary()
    with pytest.raises(DatasetNotFoundError, match="split 'val' of SEN12MS-CR is empty"):
        SEN12MSCR(root, split="val")


def test_real_files_read_with_band_order_dtype_and_scaling(tmp_path: Path) -> None:
    import rasterio

    from crbench.data.io import read_s1, read_s2

    root = _real_tree(tmp_path)
    s1_path = cr.file_path(root, "ROIs1868_summer", "s1", 19, 30)
    s2_path = cr.file_path(root, "ROIs1868_summer", "s2_cloudy", 19, 30)
    with rasterio.open(REAL / s2_path.name) as src:
        raw_s2 = src.read()
    with rasterio.open(REAL / s1_path.name) as src:
        raw_s1 = src.read()
    assert (read_s2(s2_path).dtype, read_s1(s1_path).dtype) == ("uint16", "float32")
    # a stand-in cloud-free image written by the test (the real one is not shipped), so that
    # the dataset builds a whole sample from the two real files
    with rasterio.open(s2_path) as src:
        profile = src.profile
    clear = cr.file_path(root, "ROIs1868_summer", "s2", 19, 30)
    clear.parent.mkdir(parents=True)
    with rasterio.open(clear, "w", **profile) as dst:
        dst.write(np.full_like(raw_s2, 1000))
    s = SEN12MSCR(root, split="val")[0]
    s2, s1 = s.inputs.s2[0].numpy(), s.inputs.s1[0].numpy()
    assert s2.dtype == np.float32 and s2.shape == (13, 256, 256) and s1.shape == (2, 256, 256)
    want_s2 = np.clip(raw_s2.astype(np.float32), 0, 10000) / np.float32(10000)
    want_s1 = (np.clip(raw_s1, -25, 0) + np.float32(25)) / np.float32(25)
    np.testing.assert_array_equal(s2, want_s2)  # band k = the file's band k + 1 (B01..B12)
    np.testing.assert_allclose(s1, want_s1, atol=1e-6)
    assert s1.min() == 0.0 and s1.max() <= 1.0 and raw_s1.min() < -25  # clipped at -25 dB
    assert s1[0].mean() > s1[1].mean()  # VV above VH, as for real backscatter
    np.testing.assert_array_equal(s.target.numpy(), np.full((13, 256, 256), 0.1, np.float32))
    assert 0.05 < s.meta.coverage_inputs[0] < 0.95 and s.meta.input_idx == [0]


def _digest(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.tif"))}


def test_synth_is_reproducible_and_replaces_either_data_set(tmp_path: Path) -> None:
    from crbench.synth import synthesize, synthesize_cr

    root = tmp_path / "r"
    synthesize_cr(root, scenes=2, patches=1, size=32, seed=3)
    first = _digest(root)
    assert len(first) == 6 and cr.detect_dataset(root) == "sen12mscr"
    synthesize_cr(root, scenes=2, patches=1, size=32, seed=3)
    assert _digest(root) == first
    synthesize(root, rois=1, patches=1, size=32, seed=0)  # the CR scene folders go
    assert cr.detect_dataset(root) == "sen12mscrts"
    synthesize_cr(root, scenes=1, patches=1, size=32, seed=3)  # and the ROI folders
    assert sorted(p.name for p in root.iterdir()) == [
        "ROIs1158_spring_s1", "ROIs1158_spring_s2", "ROIs1158_spring_s2_cloudy", "_truth"]


@pytest.mark.parametrize("method", ["stgan", "seqdm"])
def test_learned_methods_train_and_run_at_l1(method: str, cr_root: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "ckpt"
    rc, _, err = _cli(capsys, "train", method, "--data", cr_root, "--L", "1", "--out",
                      ckpt / method / "L1", "--preset", "tiny", "--steps", "2", "--batch-size",
                      "2", "--crop", "32", "--no-progress")
    assert rc == 0, err
    extra = ["--steps", "4"] if method == "seqdm" else []
    rc, _, err = _cli(capsys, "run", "--data", cr_root, "--methods", method, "--L", "1",
                      "--split", "test", "--checkpoints", ckpt, "--out", tmp_path / "run",
                      "--no-progress", *extra)
    assert rc == 0, err
    from crbench.runner import read_rows

    rows = read_rows(tmp_path / "run")
    assert len(rows) == 2 and set(rows["L"]) == {1}  # the test scene's two patches
    assert rows[["psnr", "ssim", "nrmse_all", "sam"]].notna().all().all()
