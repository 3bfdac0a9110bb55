"""Fixed conventions of SEN12MS-CR-TS as used by the toolbox (Ebel et al. 2022) and crbench.

Everything a user could look up in the dataset paper lives here, once: band names, the
official ROI lists, regions and splits, the scaling ranges and the s2cloudless settings.
"""

from __future__ import annotations

from datetime import date

S2_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)
S1_BANDS: tuple[str, ...] = ("VV", "VH")
N_S2_BANDS = len(S2_BANDS)
N_S1_BANDS = len(S1_BANDS)
RGB_IDX: tuple[int, int, int] = (3, 2, 1)  # B04, B03, B02
RGBN_IDX: tuple[int, int, int, int] = (3, 2, 1, 7)  # B04, B03, B02, B08 (STGAN's bands)
N_DATES = 30
MODALITIES: tuple[str, str] = ("S1", "S2")

# Scaling (DESIGN.md): S2 clip [0, 10000] / 10000; S1 clip [-25, 0] dB -> [0, 1].
S2_MAX = 10000.0
S1_DB_MIN, S1_DB_MAX = -25.0, 0.0

# s2cloudless settings, exactly as the toolbox (DESIGN.md).
S2CLOUDLESS_KWARGS = {"threshold": 0.4, "all_bands": True, "average_over": 4, "dilation_size": 2}
BLANK_EPS = 1e-5  # an image with mean and std below this counts as fully cloudy
TARGET_CLEAR_MAX = 1e-3  # a sample "matches" only if the target coverage is at most this

S1_LAUNCH = date(2014, 4, 3)  # reference for day offsets, as in the toolbox

# Official ROI lists of the SEN12MS-CR-TS toolbox (data/dataLoader.py).
ROIS: dict[str, tuple[str, ...]] = {
    "ROIs1158": ("106",),
    "ROIs1868": ("17", "36", "56", "73", "85", "100", "114", "119", "121", "126", "127", "139",
                 "142", "143"),
    "ROIs1970": ("20", "21", "35", "40", "57", "65", "71", "82", "83", "91", "112", "116", "119",
                 "128", "132", "133", "135", "139", "142", "144", "149"),
    "ROIs2017": ("8", "22", "25", "32", "49", "61", "63", "69", "75", "103", "108", "115", "116",
                 "117", "130", "140", "146"),
}
ALL_ROIS: tuple[str, ...] = tuple(f"{k}/{v}" for k, vs in ROIS.items() for v in vs)

_TEST_ALL = ("ROIs1868/119", "ROIs1970/139", "ROIs2017/108", "ROIs2017/63", "ROIs1158/106",
             "ROIs1868/73", "ROIs2017/32", "ROIs1868/100", "ROIs1970/132", "ROIs2017/103",
             "ROIs1868/142", "ROIs1970/20", "ROIs2017/140")
_VAL_ALL = ("ROIs2017/22", "ROIs1970/65", "ROIs2017/117", "ROIs1868/127", "ROIs1868/17")

# region -> split -> ROI keys "ROIsXXXX/<id>". The toolbox's asiaWest train list names
# ROIs1970/115 and ROIs1970/130, which do not exist (115 and 130 are ROIs2017); we keep the
# toolbox's lists verbatim, so those two entries match nothing, exactly as in the toolbox.
SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "all": {
        "test": _TEST_ALL,
        "val": _VAL_ALL,
        "train": tuple(r for r in ALL_ROIS if r not in _TEST_ALL and r not in _VAL_ALL),
    },
    "africa": {
        "test": ("ROIs2017/32", "ROIs2017/140"),
        "val": ("ROIs2017/22",),
        "train": ("ROIs1970/21", "ROIs1970/35", "ROIs1970/40", "ROIs2017/8", "ROIs2017/61",
                  "ROIs2017/75"),
    },
    "america": {
        "test": ("ROIs1158/106", "ROIs1970/132"),
        "val": ("ROIs1970/65",),
        "train": ("ROIs1868/36", "ROIs1868/85", "ROIs1970/82", "ROIs1970/142", "ROIs2017/49",
                  "ROIs2017/116"),
    },
    "asiaEast": {
        "test": ("ROIs1868/73", "ROIs1868/119", "ROIs1970/139"),
        "val": ("ROIs2017/117",),
        "train": ("ROIs1868/114", "ROIs1868/126", "ROIs1868/143", "ROIs1970/116", "ROIs1970/135",
                  "ROIs2017/25"),
    },
    "asiaWest": {
        "test": ("ROIs1868/100",),
        "val": ("ROIs1868/127",),
        "train": ("ROIs1970/57", "ROIs1970/83", "ROIs1970/112", "ROIs2017/69", "ROIs1970/115",
                  "ROIs1970/130"),
    },
    "europa": {
        "test": ("ROIs2017/63", "ROIs2017/103", "ROIs2017/108", "ROIs1868/142", "ROIs1970/20"),
        "val": ("ROIs1868/17",),
        "train": ("ROIs1868/56", "ROIs1868/121", "ROIs1868/139", "ROIs1970/71", "ROIs1970/91",
                  "ROIs1970/119", "ROIs1970/128", "ROIs1970/133", "ROIs1970/144", "ROIs1970/149",
                  "ROIs2017/146"),
    },
}
REGIONS: tuple[str, ...] = tuple(SPLITS)
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test", "all")
SEQ_LEN_MIN, SEQ_LEN_MAX = 1, 29


def rois_for(split: str, region: str = "all") -> tuple[str, ...]:
    """ROI keys of one split in one region ("all" concatenates train, test, val like the toolbox).

    Raises:
        ValueError: unknown split or region, naming the allowed values.
    """
    if region not in SPLITS:
        raise ValueError(f"region: unknown value {region!r}; expected one of {', '.join(REGIONS)}")
    if split not in SPLIT_NAMES:
        raise ValueError(
            f"split: unknown value {split!r}; expected one of {', '.join(SPLIT_NAMES)}")
    parts = SPLITS[region]
    if split == "all":
        return parts["train"] + parts["test"] + parts["val"]
    return parts[split]
