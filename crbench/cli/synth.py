"""`crbench synth ROOT`: write a small synthetic SEN12MS-CR-TS tree in the real layout."""

from __future__ import annotations

import argparse
import sys

_EPILOG = """\
The tree follows the real layout ROOT/<ROIsXXXX>/<id>/{S1,S2}/<t>/<mod>_..._patch_<n>.tif
(30 dates of 2018, GeoTIFF in UTM at 10 m, S2 uint16 13 bands, S1 float32 VV/VH in dB) with
real ROI names, so the official train/val/test splits apply; ROIs are taken in the order
test, train, val, train, test, ... (--rois 4 gives one test, two train and one val ROI).
Ground-truth cloud/shadow maps and land cover go to ROOT/_truth/ (outside every ROI folder).

ROOT must be new, empty, or a previous `crbench synth` output (recognised by
ROOT/_truth/synth.json); a previous output is replaced (its ROI folders are removed first).
Any other non-empty ROOT is refused unless --force, which writes into it without deleting
anything. The same arguments always give byte-identical files."""


def _rois_arg(value: str) -> int | list[str]:
    """``--rois``: a count, or comma-separated ROI keys such as ROIs1868/119,ROIs1970/139."""
    value = value.strip()
    if value.lstrip("+-").isdigit():
        return int(value)
    return [v.strip() for v in value.split(",") if v.strip()]


def _size_arg(value: str) -> int | tuple[int, int] | str:
    """``--size``: ``64`` (square) or ``HxW`` such as ``101x100``; anything else is passed on
    as given, for the library's one-line refusal."""
    parts = value.strip().lower().split("x")
    if 1 <= len(parts) <= 2 and all(p.strip().isdigit() for p in parts):
        sides = [int(p) for p in parts]
        return sides[0] if len(sides) == 1 else (sides[0], sides[1])
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="write a synthetic SEN12MS-CR-TS tree (real layout, with clouds)",
        description="Write a small, physically plausible synthetic SEN12MS-CR-TS tree.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", metavar="ROOT", help="output directory")
    p.add_argument("--rois", type=_rois_arg, default=4, metavar="N",
                   help="number of official ROIs (1..53), or comma-separated ROI keys "
                        "(default: 4)")
    p.add_argument("--patches", type=int, default=2, metavar="N",
                   help="patches per ROI (default: 2)")
    p.add_argument("--size", default="128", metavar="PX|HxW",
                   help="patch side in pixels, or HEIGHTxWIDTH for non-square patches (e.g. "
                        "101x100), each at least 32 (default: 128)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    p.add_argument("--workers", type=int, default=1, metavar="W",
                   help="parallel processes (default: 1; the output does not depend on it)")
    p.add_argument("--blank-dates", type=int, default=0, metavar="N",
                   help="S2 images per patch written blank (all zeros), as real data has "
                        "some: crbench counts them fully cloudy, --protocol parity clear "
                        "(default: 0)")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty ROOT that is not a previous synth output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dataset", default="sen12mscrts", metavar="D",
                   help="sen12mscrts (default) or sen12mscr: the mono-temporal layout "
                        "ROOT/ROIsXXXX_<season>_{s1,s2,s2_cloudy}/<mod>_<scene>/..._p<n>.tif, "
                        "--rois N official scenes, one S1, clear and cloudy S2 per patch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import UsageError
    from ..synth import cr_line, synthesize, synthesize_cr
    from ..synth.tree import MIN_SIZE

    if args.dataset not in ("sen12mscrts", "sen12mscr"):
        raise UsageError(f"--dataset: unknown value {args.dataset!r}; expected sen12mscrts or "
                         "sen12mscr")
    try:
        if args.dataset == "sen12mscr":
            summary = synthesize_cr(Path(args.root), scenes=args.rois, patches=args.patches,
                                    size=_size_arg(args.size), seed=args.seed,
                                    force=args.force)
            print(cr_line(summary), file=sys.stdout)
            return 0
        summary = synthesize(Path(args.root), rois=args.rois, patches=args.patches,
                             size=_size_arg(args.size), seed=args.seed, progress=not args.quiet,
                             force=args.force, workers=args.workers,
                             blank_dates=args.blank_dates)
    except UsageError as exc:
        # Library messages name the parameter ("size: ..."); show it as the CLI option.
        msg = str(exc)
        head, sep, rest = msg.partition(": ")
        if head == "size" and args.dataset == "sen12mscr":
            msg = f"--size: got {args.size!r}; {rest.partition('; ')[2]}"
        elif head == "size":  # as typed: HEIGHTxWIDTH, not the library's (height, width)
            msg = (f"--size: got {args.size!r}; expected a side in pixels or HEIGHTxWIDTH "
                   f"(e.g. 101x100), each >= {MIN_SIZE}")
        elif sep and head in {"rois", "patches", "seed", "workers", "root", "blank_dates"}:
            flag = "ROOT" if head == "root" else "--" + head.replace("_", "-")
            msg = f"{flag}: {rest}"
        raise UsageError(msg) from None
    print(summary.line(), file=sys.stdout)
    return 0
