"""Import of the toolbox's pairing files (pickled dicts written with np.save)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crbench.data.dataset import SEN12MSCRTS
from crbench.data.index import INDEX_COLUMNS, build_index, scan_tree
from crbench.data.masks import MaskCache
from crbench.data.pairing import import_pairs, load_pairing_file, parse_pairing_name
from crbench.errors import DataError, DatasetNotFoundError, UsageError


def _toolbox_pairs(root: Path, frame: pd.DataFrame, sep: str = "/") -> dict:
    """The dict the toolbox's export writes, built from our index of the synthetic tree."""
    recs = {(r.roi, r.patch): r for r in scan_tree(root, "test")}
    pairs = {}
    for pdx, row in enumerate(frame.to_dict("records")):
        rec = recs[(row["roi"], int(row["patch"]))]
        inputs = [int(t) for t in row["input_idx"].split(";")]
        target = np.int64(row["target_idx"])  # the toolbox stores numpy ints from argsort

        def rel(path: Path) -> str:
            return sep.join(path.relative_to(root).parts)

        pairs[pdx] = {"input": inputs, "target": target,
                      "paths": {"input": {"S1": [rel(rec.s1[t]) for t in inputs],
                                          "S2": [rel(rec.s2[t]) for t in inputs]},
                                "output": {"S1": rel(rec.s1[target]),
                                           "S2": rel(rec.s2[target])}}}
    return pairs


@pytest.fixture(scope="module")
def index3(synth_root: Path) -> pd.DataFrame:
    return build_index(synth_root, "test", 3)


@pytest.fixture()
def pair_file(synth_root: Path, index3: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "generic_3_test_all_s2cloudless_mask.npy"
    np.save(path, _toolbox_pairs(synth_root, index3))
    return path


def test_parse_pairing_name() -> None:
    assert parse_pairing_name(Path("x/generic_4_val_europa_s2cloudless_mask.npy")) == \
        {"L": 4, "split": "val", "region": "europa"}
    assert parse_pairing_name(Path("pairs.npy")) is None


def test_pickle_needs_explicit_flag(pair_file: Path) -> None:
    with pytest.raises(UsageError, match=r"pickle.*execute arbitrary code.*allow_pickle=True"):
        load_pairing_file(pair_file)
    with pytest.raises(UsageError, match="allow_pickle"):
        import_pairs(pair_file, allow_pickle=False)


def test_import_matches_our_index(synth_root: Path, index3: pd.DataFrame,
                                  pair_file: Path) -> None:
    cache = MaskCache(synth_root)
    frame = import_pairs(pair_file, allow_pickle=True, root=synth_root, cache=cache, L=3)
    assert tuple(frame.columns) == INDEX_COLUMNS
    assert cache.misses == 0  # coverage only from the cache, nothing computed
    same = ["roi", "patch", "input_idx", "target_idx", "coverage_inputs", "coverage_target"]
    pd.testing.assert_frame_equal(frame[same], index3[same])
    assert frame["match"].tolist() == [True] * len(index3)  # as the toolbox treats them


def test_import_without_cache_gives_nan_coverage(synth_root: Path, pair_file: Path,
                                                 index3: pd.DataFrame) -> None:
    frame = import_pairs(pair_file, allow_pickle=True)
    assert frame["coverage_target"].isna().all()
    assert all(all(math.isnan(float(c)) for c in s.split(";")) for s in frame["coverage_inputs"])
    assert frame["input_idx"].tolist() == index3["input_idx"].tolist()
    # the dataset fills coverage from the masks it reads
    sample = SEN12MSCRTS(synth_root, "test", L=3, index=frame)[0]
    assert not math.isnan(sample.meta.coverage_target)
    assert sample.meta.coverage_inputs == pytest.approx(sample.inputs.coverage.tolist())


def test_windows_separators(synth_root: Path, index3: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "pairs.npy"
    np.save(path, _toolbox_pairs(synth_root, index3, sep="\\"))
    frame = import_pairs(path, allow_pickle=True, root=synth_root)
    assert frame["roi"].tolist() == index3["roi"].tolist()


def test_pdx_order_is_kept(synth_root: Path, index3: pd.DataFrame, tmp_path: Path) -> None:
    pairs = _toolbox_pairs(synth_root, index3)
    swapped = {0: pairs[1], 1: pairs[0]}
    path = tmp_path / "pairs.npy"
    np.save(path, {k: swapped[k] for k in (1, 0)})  # insertion order differs from pdx order
    frame = import_pairs(path, allow_pickle=True)
    assert frame["patch"].tolist() == index3["patch"].tolist()[::-1]


def test_malformed_entries(synth_root: Path, index3: pd.DataFrame, tmp_path: Path) -> None:
    pairs = _toolbox_pairs(synth_root, index3)
    path = tmp_path / "pairs.npy"
    bad = {0: {**pairs[0], "target": (int(pairs[0]["target"]) + 1) % 30}}
    np.save(path, bad)
    with pytest.raises(DataError, match=r"entry 0: indices .* disagree with its paths"):
        import_pairs(path, allow_pickle=True)
    np.save(path, {0: {"input": [0, 1, 2]}})
    with pytest.raises(DataError, match="entry 0: malformed entry"):
        import_pairs(path, allow_pickle=True)
    np.save(path, np.arange(4))
    with pytest.raises(DataError, match="holds a"):
        import_pairs(path, allow_pickle=True)
    path.write_bytes(b"not numpy")
    with pytest.raises(DataError, match="unreadable"):
        import_pairs(path, allow_pickle=True)
    with pytest.raises(DatasetNotFoundError):
        import_pairs(tmp_path / "none.npy", allow_pickle=True)


def test_wrong_L_and_missing_files(synth_root: Path, pair_file: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"L: 4 requested but .* entry 0 has 3 inputs"):
        import_pairs(pair_file, allow_pickle=True, L=4)
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DataError, match=r"\d+ referenced image\(s\) missing under"):
        import_pairs(pair_file, allow_pickle=True, root=tmp_path / "empty_root")
