"""Reading SEN12MS-CR-TS GeoTIFFs with rasterio, and the scaling of DESIGN.md.

Every read goes through :func:`read_raster`, which turns the many ways a file can be broken
(missing, not a GeoTIFF, truncated, wrong band count) into one clear :class:`DataError` or
:class:`DatasetNotFoundError` that names the file, and replaces NaN/inf pixels by 0 while
counting them, so nothing is silently dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crbench.constants import N_S1_BANDS, N_S2_BANDS, S1_DB_MAX, S1_DB_MIN, S2_MAX
from crbench.data.layout import not_a_file
from crbench.errors import DataError, DatasetNotFoundError, UsageError

# Do not list the directory on every open (a date directory of the real dataset holds
# hundreds of patches; we never use sidecar files such as .aux.xml or .ovr).
_GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


class BandCountError(DataError):
    """A GeoTIFF has another number of bands than its modality needs."""

    def __init__(self, path: Path, found: int, expected: int) -> None:
        super().__init__(f"{path}: wrong band count: found {found} bands, expected {expected}")
        self.path, self.found, self.expected = Path(path), found, expected


@dataclass
class RasterRead:
    """The pixels of one image and where they lie.

    Attributes:
        array: Pixel values, ``np.float32`` of shape (C, H, W); NaN/inf replaced by 0.
        nonfinite: How many values (over all bands) were NaN or inf before replacement.
        transform: The affine geotransform (``affine.Affine``) of the file.
        crs: The coordinate reference system (``rasterio.crs.CRS``), or None.
        dtype: The file's stored data type (e.g. ``"uint16"``, ``"float32"``).
    """

    array: np.ndarray
    nonfinite: int
    transform: Any
    crs: Any
    dtype: str = "float32"


S2_ODD_MAX = 256.0
"""An S2 image whose largest digital number is below this is not L1C data."""
S1_ODD_MEDIAN = 1.0
"""An S1 image with no negative value and a median below this is not in dB."""


def _cause(err: BaseException) -> str:
    """The most specific message of a rasterio error chain (GDAL puts details in the cause)."""
    parts = [str(err)]
    cause = err.__cause__ or err.__context__
    if cause is not None and str(cause) and str(cause) not in parts[0]:
        parts.append(str(cause))
    return "; ".join(p for p in parts if p)


def _check_is_file(path: Path, expected: str) -> None:
    """Raise unless ``path`` is a regular file (naming a directory or a broken link)."""
    if path.is_file():
        return
    why = not_a_file(path)
    if why is not None:
        raise DataError(f"{path} {why}; expected {expected}")
    raise DatasetNotFoundError(f"{path}: file not found (expected {expected})")


def odd_values(read: RasterRead, mod: str) -> str | None:
    """Why an image's values look like other units than the dataset's, or None.

    S2 must be L1C digital numbers (reflectance x 10000, stored as uint16): a file stored as
    uint8, or whose largest value is below 256 (e.g. float reflectance 0..1), is odd. S1
    must be backscatter in dB (mostly negative): all values >= 0 with a median below 1
    (linear power, or dB already rescaled to [0, 1]) is odd. All-zero images are left to
    the blank check.

    Args:
        read: the image as read by :func:`read_raster`.
        mod: "S1" or "S2".
    """
    arr = read.array
    if arr.size == 0:
        return None
    lo, hi = float(arr.min()), float(arr.max())
    seen = f"values {lo:.4g}..{hi:.4g}, stored as {read.dtype}"
    if mod.upper() == "S2" and hi > 0 and (read.dtype == "uint8" or hi < S2_ODD_MAX):
        return (f"S2 {seen}: implausible for L1C digital numbers (reflectance x 10000, "
                "uint16, mostly 0..10000)")
    if mod.upper() == "S1" and hi > 0 and lo >= 0 and float(np.median(arr)) < S1_ODD_MEDIAN:
        return f"S1 {seen}: looks like linear units, expected backscatter in dB (e.g. -25..0)"
    return None


def read_header(path: Path) -> tuple[int, tuple[int, int], str]:
    """Open a GeoTIFF's header only: (band count, (height, width), dtype).

    Raises:
        DatasetNotFoundError: ``path`` does not exist.
        DataError: the file cannot be opened as a raster (corrupt, not a GeoTIFF).
    """
    import rasterio
    from rasterio.errors import RasterioError

    path = Path(path)
    _check_is_file(path, "a GeoTIFF image")
    try:
        with warnings.catch_warnings(), rasterio.Env(**_GDAL_ENV):
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.count, (src.height, src.width), src.dtypes[0]
    except RasterioError as err:
        raise DataError(f"{path}: unreadable GeoTIFF ({_cause(err)}); the file is corrupt, "
                        "truncated or not a GeoTIFF") from err


def read_raster(path: Path, bands: int) -> RasterRead:
    """Read all bands of a GeoTIFF as float32, checking the band count.

    Args:
        path: The image file.
        bands: The number of bands the file must have (13 for S2, 2 for S1).

    Returns:
        The pixels (NaN/inf replaced by 0 and counted) with transform and CRS.

    Raises:
        DatasetNotFoundError: ``path`` does not exist.
        DataError: corrupt or truncated file, or a band count other than ``bands``;
            the message names the file, the count found and the count expected.
    """
    import rasterio
    from rasterio.errors import RasterioError

    path = Path(path)
    _check_is_file(path, f"a GeoTIFF with {bands} bands")
    try:
        with warnings.catch_warnings(), rasterio.Env(**_GDAL_ENV):
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if src.count != bands:
                    raise BandCountError(path, src.count, bands)
                array = src.read(out_dtype=np.float32)
                transform, crs, dtype = src.transform, src.crs, src.dtypes[0]
    except RasterioError as err:
        raise DataError(f"{path}: unreadable GeoTIFF ({_cause(err)}); the file is corrupt, "
                        "truncated or not a GeoTIFF") from err
    nonfinite = 0
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        nonfinite = int(np.count_nonzero(bad))
        if nonfinite:
            array[bad] = 0.0
    return RasterRead(array=array, nonfinite=nonfinite, transform=transform, crs=crs,
                      dtype=dtype)


def read_s2(path: Path) -> RasterRead:
    """Read a Sentinel-2 image: 13 bands of raw digital numbers (reflectance x 10000)."""
    return read_raster(path, N_S2_BANDS)


def read_s1(path: Path) -> RasterRead:
    """Read a Sentinel-1 image: 2 bands (VV, VH) in dB."""
    return read_raster(path, N_S1_BANDS)


def scale_s2(raw: np.ndarray) -> np.ndarray:
    """Raw S2 digital numbers -> [0, 1]: clip to [0, 10000], then divide by 10000 (float32)."""
    raw = np.asarray(raw, dtype=np.float32)
    return np.clip(raw, 0.0, S2_MAX) / np.float32(S2_MAX)


def scale_s1(db: np.ndarray, ranges: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
    """S1 backscatter in dB -> [0, 1]: clip each band to its dB range, then rescale linearly.

    Args:
        db: (2, H, W) (VV, VH) in dB; without ``ranges`` any shape (one range for all values).
        ranges: (min, max) dB of each band, e.g. ``((-25, 0), (-32.5, 0))``; None: [-25, 0]
            dB for every value (crbench's default, DESIGN.md).

    Returns:
        float32 of the shape of ``db``.
    """
    db = np.asarray(db, dtype=np.float32)
    if ranges is None:
        span = np.float32(S1_DB_MAX - S1_DB_MIN)
        return (np.clip(db, S1_DB_MIN, S1_DB_MAX) - np.float32(S1_DB_MIN)) / span
    out = np.empty_like(db)
    for band, (low, high) in enumerate(ranges):
        lo, hi = np.float32(low), np.float32(high)
        out[band] = (np.clip(db[band], lo, hi) - lo) / (hi - lo)
    return out


def check_s1_range(ranges: Any) -> tuple[tuple[float, float], ...] | None:
    """``ranges`` as a tuple of (min, max) dB per S1 band (None stays None: the default).

    Raises:
        UsageError: not one (min, max) pair with min < max for each of VV and VH.
    """
    if ranges is None:
        return None
    try:
        pairs = tuple((float(lo), float(hi)) for lo, hi in ranges)
    except (TypeError, ValueError):
        pairs = ()
    if len(pairs) != N_S1_BANDS or any(not lo < hi for lo, hi in pairs):
        raise UsageError(f"s1_db_range: bad value {ranges!r}; expected ((vv_min, vv_max), "
                         "(vh_min, vh_max)) in dB with min < max, e.g. ((-25, 0), (-32.5, 0))")
    return pairs
