"""``--dataset sen12mscr|sen12mscrts`` of the commands that read a data root."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("sen12mscrts or sen12mscr (default: detected from the layout: ROOT/ROIsXXXX/<id>/... is "
        "SEN12MS-CR-TS, ROOT/ROIsXXXX_<season>_{s1,s2,s2_cloudy}/... SEN12MS-CR, which gives "
        "L = 1 samples)")


def add_dataset_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--dataset``."""
    p.add_argument("--dataset", default=None, metavar="D", help=HELP)


def resolve(root: Path, dataset: str | None, flag: str, seq_lens: tuple[int, ...] = ()) -> str:
    """The data set of ``root`` (:func:`crbench.data.cr.resolve_dataset`); on SEN12MS-CR every
    L of ``seq_lens`` must be 1.

    Raises:
        UsageError / DatasetNotFoundError / DataError: one line naming the flag.
    """
    from ..data.cr import SEN12MSCR, resolve_dataset
    from ..errors import UsageError

    found = resolve_dataset(root, dataset, flag)
    bad = [L for L in seq_lens if L != 1]
    if found == SEN12MSCR and bad:
        raise UsageError(f"--L: bad value {bad[0]} for SEN12MS-CR ({flag} {root}), which has one "
                         "cloudy image per patch; expected 1")
    return found
