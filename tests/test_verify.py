"""`verify_tree` (crbench.data.verify) on the synthetic tree and on deliberately broken copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from crbench.data.layout import EXPECTED_LAYOUT
from crbench.data.verify import ProblemKind, Severity, VerifyReport, verify_tree

A, B = "ROIs1868/119", "ROIs1868/36"  # ROI A: per-file damage; ROI B: structural damage


def _one(root: Path, roi: str, mod: str, t: int, patch: int) -> Path:
    (path,) = (root / roi / mod / str(t)).glob(f"*_patch_{patch}.tif")
    return path


def _rewrite(path: Path, array: np.ndarray) -> None:
    """Overwrite an image with new pixels (band count and size may change), same georeference."""
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(count=array.shape[0], height=array.shape[1], width=array.shape[2],
                   dtype=array.dtype)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def _messages(report: VerifyReport, kind: ProblemKind) -> list[str]:
    return [f"{p.path}: {p.detail}" for p in report.by_kind(kind)]


@pytest.fixture(scope="module")
def broken(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VerifyReport]:
    """Two ROIs copied from the synthetic tree and damaged in every way verify must name.

    Patch 1 of ROI A stays intact, so the tree remains usable.
    """
    root = tmp_path_factory.mktemp("broken")
    for roi in (A, B):
        shutil.copytree(synth_root / roi, root / roi)
    f = _one(root, A, "S2", 3, 0)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncated
    _rewrite(_one(root, A, "S2", 4, 0), np.ones((12, 64, 64), np.uint16))  # 12 bands
    s1 = _one(root, A, "S1", 5, 0)
    with rasterio.open(s1) as src:
        arr = src.read()
    arr[0, :2, :3] = np.nan
    arr[1, 5, 5] = np.inf
    _rewrite(s1, arr)  # 7 non-finite values
    _one(root, A, "S1", 9, 0).unlink()  # one missing S1 file
    _rewrite(_one(root, A, "S2", 11, 0), np.zeros((13, 64, 64), np.uint16))  # blank
    _rewrite(_one(root, A, "S2", 12, 0), np.full((13, 64, 64), 1234, np.uint16))  # constant
    rng = np.random.default_rng(0)
    _rewrite(_one(root, A, "S2", 13, 0), rng.integers(0, 5000, (13, 32, 32), np.uint16))  # size
    (root / A / "S2" / "14" / "notes.txt").write_text("x")  # misnamed file
    (root / A / "S2" / "15" / "s2_corrupt.tif").write_bytes(b"")  # misnamed, broken
    shutil.rmtree(root / B / "S1" / "7")  # a whole date missing
    for t in range(30):  # patch 1 of ROI B exists only in S2
        p = root / B / "S1" / str(t)
        if p.is_dir():
            _one(root, B, "S1", t, 1).unlink()
    (root / "ROIs1868" / "999" / "S2").mkdir(parents=True)  # not an official ROI, no S1
    (root / "README.txt").write_text("not data")
    (root / A / "S3").mkdir()
    return root, verify_tree(root)


def test_synthetic_tree_is_clean_and_usable(synth_root: Path) -> None:
    report = verify_tree(synth_root, workers=2)
    assert report.problems == [], report.summary()
    assert report.usable
    assert (report.n_rois, report.n_patches, report.n_complete) == (4, 8, 8)
    assert report.n_files == 4 * 2 * 30 * 2
    text = report.summary()
    assert "errors: 0, warnings: 0" in text and "usable: yes (8 of 8 patches complete)" in text


def test_truncated_file_is_named(broken: tuple[Path, VerifyReport]) -> None:
    (msg,) = _messages(broken[1], ProblemKind.UNREADABLE)
    assert msg.startswith(f"{A}/S2/3/s2_ROIs1868_119_ImgNo_3_")
    assert "patch_0.tif" in msg and "corrupt" in msg


def test_wrong_band_count_is_named(broken: tuple[Path, VerifyReport]) -> None:
    (msg,) = _messages(broken[1], ProblemKind.WRONG_BANDS)
    assert msg.startswith(f"{A}/S2/4/") and "found 12 bands, expected 13 for S2" in msg


def test_nonfinite_pixels_are_counted(broken: tuple[Path, VerifyReport]) -> None:
    (msg,) = _messages(broken[1], ProblemKind.NONFINITE)
    assert msg.startswith(f"{A}/S1/5/") and "7 NaN/inf values" in msg
    assert ProblemKind.NONFINITE.severity is Severity.WARNING


def test_missing_file_names_date_and_patch(broken: tuple[Path, VerifyReport]) -> None:
    msgs = _messages(broken[1], ProblemKind.MISSING_FILE)
    assert f"{A}/S1/9: no S1 image of patch 0 at date t=9" in msgs
    assert len(msgs) == 1  # B's missing date and patch are reported once, not per file


def test_missing_date_directory(broken: tuple[Path, VerifyReport]) -> None:
    msgs = _messages(broken[1], ProblemKind.MISSING_DATE)
    assert len(msgs) == 2
    assert msgs[0].startswith(f"{B}/S1/7: date directory missing") and "t=7" in msgs[0]
    # a modality directory without any date is one line, not 30
    assert msgs[1] == "ROIs1868/999/S2: no date directories at all; expected S2/0 .. S2/29"


def test_s1_s2_patch_mismatch(broken: tuple[Path, VerifyReport]) -> None:
    (msg,) = _messages(broken[1], ProblemKind.PATCH_MISMATCH)
    assert msg == f"{B}/S1: patch 1 has S2 images but no S1 image at any date"


def test_blank_and_constant_images(broken: tuple[Path, VerifyReport]) -> None:
    (blank,) = _messages(broken[1], ProblemKind.BLANK)
    (const,) = _messages(broken[1], ProblemKind.CONSTANT)
    assert blank.startswith(f"{A}/S2/11/") and "fully cloudy" in blank
    assert const.startswith(f"{A}/S2/12/") and "constant image" in const


def test_size_mismatch(broken: tuple[Path, VerifyReport]) -> None:
    (msg,) = _messages(broken[1], ProblemKind.SHAPE_MISMATCH)
    assert msg.startswith(f"{A}/S2/13/") and "32x32 differs" in msg and "(64x64)" in msg


def test_misnamed_files_unknown_roi_and_strays(broken: tuple[Path, VerifyReport]) -> None:
    report = broken[1]
    bad = _messages(report, ProblemKind.BAD_NAME)
    assert len(bad) == 2 and f"{A}/S2/14/notes.txt" in bad[0] + bad[1]
    assert "expected s2_ROIs1868_119_ImgNo_15_<YYYY-MM-DD>_patch_<n>.tif" in "".join(bad)
    (unknown,) = _messages(report, ProblemKind.UNKNOWN_ROI)
    assert unknown.startswith("ROIs1868/999: not in the official ROI lists")
    assert _messages(report, ProblemKind.MISSING_MODALITY) == [
        "ROIs1868/999/S1: S1 directory missing; expected S1/0 .. S1/29"]
    assert sorted(_messages(report, ProblemKind.UNEXPECTED_ENTRY)) == [
        "README.txt: not a ROIsXXXX directory; ignored", f"{A}/S3: not one of S1, S2; ignored"]


def test_verdict_counts_only_intact_patches(broken: tuple[Path, VerifyReport]) -> None:
    report = broken[1]
    assert report.usable and report.n_complete == 1  # ROI A patch 1
    assert report.n_patches == 4
    text = report.summary()
    assert "usable: yes (1 of 4 patches complete)" in text
    errors = text.index("ERROR"), text.rindex("ERROR")
    assert errors[1] < text.index("WARNING")  # errors listed first
    short = report.summary(limit=2)
    # header 3, problems 2, "... and" 1, per-ROI date counts of the 2 partial ROIs and the
    # usable-at-L line 3, verdict 1
    assert "... and" in short and len(short.splitlines()) == 3 + 2 + 1 + 3 + 1


def test_missing_and_empty_root(tmp_path: Path) -> None:
    report = verify_tree(tmp_path / "absent")
    assert not report.usable
    (p,) = report.problems
    assert p.kind is ProblemKind.ROOT_MISSING and "does not exist" in p.detail
    assert EXPECTED_LAYOUT in report.summary()
    (tmp_path / "empty").mkdir()
    report = verify_tree(tmp_path / "empty")
    assert not report.usable
    assert report.by_kind(ProblemKind.ROOT_EMPTY)[0].detail.endswith(EXPECTED_LAYOUT)


def test_patch_missing_a_date_is_usable_with_the_others(synth_root: Path,
                                                         tmp_path: Path) -> None:
    """A missing date is a warning (issue 13): the patches are used with their 29 dates."""
    shutil.copytree(synth_root / B / "S2", tmp_path / B / "S2")
    shutil.copytree(synth_root / B / "S1", tmp_path / B / "S1")
    shutil.rmtree(tmp_path / B / "S2" / "29")
    report = verify_tree(tmp_path)
    assert report.usable and report.n_patches == 2 and report.n_complete == 0
    assert report.errors == []
    assert [p.path for p in report.by_kind(ProblemKind.MISSING_DATE)] == [f"{B}/S2/29"]
    assert report.by_kind(ProblemKind.MISSING_DATE)[0].severity is Severity.WARNING
    assert report.usable_at(3) == report.usable_at(3, s1=True) == 2
    text = report.summary()
    assert f"{B}: dates present: S1 30 of 30, S2 29 of 30" in text
    assert "L=3: 2 (2 with S1), L=4: 2 (2 with S1), L=5: 2 (2 with S1)" in text
    assert "usable: yes, partial tree (0 of 2 patches complete; up to 29 dates" in text


def _copy_roi(synth_root: Path, root: Path) -> Path:
    shutil.copytree(synth_root / A, root / A)
    return root


def test_duplicate_names_are_one_error_naming_both_in_verify_and_index(
        synth_root: Path, tmp_path: Path) -> None:
    """_patch_0 and _patch_00 map to the same (roi, patch, t): verify and the index apply the
    same rule (layout.list_date_dir): an error naming both files, neither used."""
    from crbench.data.index import scan_tree
    from crbench.errors import DataError

    root = _copy_roi(synth_root, tmp_path)
    first = _one(root, A, "S2", 5, 0)
    second = first.with_name(first.name.replace("_patch_0", "_patch_00"))
    shutil.copy2(first, second)
    report = verify_tree(root)
    (dup,) = report.by_kind(ProblemKind.DUPLICATE)
    assert dup.severity is Severity.ERROR
    assert second.name in dup.path and first.name in dup.detail
    assert report.n_complete == 1  # patch 0 has no usable S2 image at t=5
    with pytest.raises(DataError, match=f"{first.name} and {second.name}"):
        scan_tree(root, "test")


def test_unlistable_dates_broken_entries_and_impossible_names_are_named(
        synth_root: Path, tmp_path: Path) -> None:
    """No traceback from a date directory that is a file or a symlink loop, a .tif that is a
    directory or a dangling link, an impossible date or a 20-digit patch number."""
    root = _copy_roi(synth_root, tmp_path)
    shutil.rmtree(root / A / "S2" / "5")
    (root / A / "S2" / "5").symlink_to("5")
    shutil.rmtree(root / A / "S1" / "6")
    (root / A / "S1" / "6").write_text("")
    tif_dir = _one(root, A, "S2", 7, 0)
    tif_dir.unlink()
    tif_dir.mkdir()
    dangling = _one(root, A, "S2", 8, 1)
    dangling.unlink()
    dangling.symlink_to(tmp_path / "nowhere.tif")
    day = _one(root, A, "S2", 9, 0)
    day.rename(day.with_name(day.name[:day.name.index("ImgNo_9_") + 8] + "2018-02-30_patch_0.tif"))
    big = _one(root, A, "S2", 10, 1)
    big.rename(big.with_name(big.name.replace("_patch_1", "_patch_12345678901234567890")))
    report = verify_tree(root)
    unexpected = _messages(report, ProblemKind.UNEXPECTED_ENTRY)
    assert any("S2/5: date t=5 is a broken or looping symbolic link" in m for m in unexpected)
    assert any("S1/6: date t=6 is not a directory" in m for m in unexpected)
    unreadable = _messages(report, ProblemKind.UNREADABLE)
    assert any(tif_dir.name in m and "is a directory" in m for m in unreadable)
    assert any(dangling.name in m and "broken symbolic link" in m and "nowhere.tif" in m
               for m in unreadable)
    bad = _messages(report, ProblemKind.BAD_NAME)
    assert any("2018-02-30" in m and "not a calendar date" in m for m in bad)
    assert any("12345678901234567890" in m and "patch number" in m for m in bad)
    assert report.n_complete == 0 and not report.usable


def test_odd_value_ranges_are_warned_per_file_with_the_range(synth_root: Path,
                                                             tmp_path: Path) -> None:
    """S2 as float reflectance 0..1 or uint8, S1 in linear units: one warning per file with
    the range seen; the patch stays usable (warnings only)."""
    root = _copy_roi(synth_root, tmp_path)
    files = [_one(root, A, "S2", 0, 0), _one(root, A, "S2", 1, 0), _one(root, A, "S1", 2, 0)]
    arrays = []
    for f in files:
        with rasterio.open(f) as src:
            arrays.append(src.read().astype(np.float64))
    _rewrite(files[0], (arrays[0] / 10000).astype(np.float32))
    _rewrite(files[1], np.clip(arrays[1] / 40, 0, 255).astype(np.uint8))
    _rewrite(files[2], (10 ** (arrays[2] / 10)).astype(np.float32))
    report = verify_tree(root)
    odd = {p.path.rsplit("/", 1)[-1]: p for p in report.by_kind(ProblemKind.ODD_VALUES)}
    assert sorted(odd) == sorted(f.name for f in files)
    assert all(p.severity is Severity.WARNING for p in odd.values())
    lo, hi = (np.float32(arrays[0].min() / 10000), np.float32(arrays[0].max() / 10000))
    assert f"values {lo:.4g}..{hi:.4g}, stored as float32" in odd[files[0].name].detail
    assert "stored as uint8" in odd[files[1].name].detail
    assert "linear units" in odd[files[2].name].detail
    assert report.n_complete == 2


def test_run_checks_value_ranges_on_a_fixed_sample(synth_root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """sample_odd_values reads 8 S2 and 8 S1 images whatever the split's size (120 here),
    spread over patches and dates, and finds nothing odd in the generator's tree."""
    import crbench.data.verify as verify_module
    from crbench.data.index import scan_tree

    records = scan_tree(synth_root, "all")
    read: list[Path] = []
    real = verify_module.read_raster

    def counting(path: Path, bands: int):  # the real reader, counting its calls
        read.append(Path(path))
        return real(path, bands)

    monkeypatch.setattr(verify_module, "read_raster", counting)
    assert verify_module.sample_odd_values(records) == []
    assert len(read) == 2 * verify_module.SAMPLED_FILES == 16
    assert len(set(read)) == 16
    assert len({p.parent.name for p in read}) == 8  # 8 different dates
    assert len({p.parts[-5] for p in read}) > 1  # more than one ROI
