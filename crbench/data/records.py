"""One patch's images, as both data sets' scanners list them (:class:`PatchRecord`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError


@dataclass
class PatchRecord:
    """All dates of one patch.

    A SEN12MS-CR patch (:mod:`crbench.data.cr`) is a record of two "dates": t = 0 the cloudy
    S2 image, t = 1 the cloud-free one, both with the patch's single S1 image.

    Attributes:
        roi: ROI key, e.g. ``"ROIs1868/119"`` (SEN12MS-CR: ``"ROIs1868_summer/19"``).
        patch: patch number from the file names.
        s1: the S1 GeoTIFF of each date in ``ts`` (None where that date has no S1 image).
        s2: the S2 GeoTIFF of each date in ``ts``.
        days: S2 acquisition day of each date, counted from the S1 launch (2014-04-03);
            0 for SEN12MS-CR, whose file names carry no date.
        ts: the date indices t (as in the file names) the patch has S2 images of, in
            temporal order; all of 0..29 for a complete patch (the default when empty).
    """

    roi: str
    patch: int
    s1: list[Path | None] = field(default_factory=list)
    s2: list[Path] = field(default_factory=list)
    days: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ts:
            self.ts = list(range(len(self.s2)))

    def pos(self, t: int) -> int:
        """Position in ``s1``/``s2``/``days`` of date index ``t``.

        Raises:
            DataError: the patch has no image of date ``t``.
        """
        try:
            return self.ts.index(int(t))
        except ValueError:
            have = ";".join(str(v) for v in self.ts)
            raise DataError(f"{self.roi} patch {self.patch}: no S2 image of date t={t} (the "
                            f"patch has t = {have}); rebuild the index") from None

    @property
    def has_s1(self) -> bool:
        """Whether every date of the patch has its S1 image."""
        return all(p is not None for p in self.s1)
