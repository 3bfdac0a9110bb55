"""Synthetic SEN12MS-CR-TS in the real layout, with ground-truth clouds (``crbench synth``).

Owns: :mod:`.tree` (writing the tree, the ground truth and its manifest: :func:`synthesize`,
:func:`load_truth`), :mod:`.scene` (land cover, reflectance, SAR), :mod:`.clouds` (cloud
fields, radiometry, shadows, truth classes), :mod:`.noise` (deterministic noise fields),
:mod:`.cr_tree` (the mono-temporal SEN12MS-CR tree: :func:`synthesize_cr`).

May import: ``crbench.errors``, ``crbench.constants`` and ``crbench.data`` (the file layout);
nothing that evaluates or reports (see README, "Architecture").
"""

from .cr_tree import cr_line, synthesize_cr
from .tree import (
    LandCover,
    PatchTruth,
    SynthSummary,
    TruthClass,
    interleaved_rois,
    load_truth,
    roi_dates,
    roi_georef,
    synthesize,
    truth_path,
)

__all__ = [
    "LandCover",
    "PatchTruth",
    "SynthSummary",
    "TruthClass",
    "cr_line",
    "interleaved_rois",
    "load_truth",
    "roi_dates",
    "roi_georef",
    "synthesize",
    "synthesize_cr",
    "truth_path",
]
