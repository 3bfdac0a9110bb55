"""`crbench data verify|masks|index`: check a dataset tree, fill the cloud-mask cache, write
the sample index CSV (DESIGN.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .dataset_arg import add_dataset_arg, resolve

_SPLITS = ("train", "val", "test", "all")
_REGIONS = ("all", "africa", "america", "asiaEast", "asiaWest", "europa")
_LAYOUT_HINT = ("ROOT is the SEN12MS-CR-TS root: ROOT/<ROIsXXXX>/<id>/{S1,S2}/<t>/*.tif, or the "
                "SEN12MS-CR root: ROOT/ROIsXXXX_<season>_{s1,s2,s2_cloudy}/<mod>_<scene>/*.tif "
                "(try `crbench synth ROOT` for a small synthetic one)")


def _add_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", metavar="ROOT", type=Path, help=_LAYOUT_HINT)
    add_dataset_arg(p)


def _add_split_region(p: argparse.ArgumentParser, split_default: str | None) -> None:
    p.add_argument("--split", default=split_default, required=split_default is None,
                   metavar="S", help=f"data split: one of {', '.join(_SPLITS)} "
                   + (f"(default: {split_default})" if split_default else "(required)"))
    p.add_argument("--region", default="all", metavar="R",
                   help=f"region: one of {', '.join(_REGIONS)} (default: all)")


def _add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes computing missing cloud masks (default: 1)")
    p.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                   help="cloud-mask cache directory (default: $CRBENCH_CACHE_DIR/<hash of "
                   "ROOT> if that is set, else ROOT/.crbench/masks, or "
                   "~/.cache/crbench/<hash of ROOT> if ROOT is read-only)")
    p.add_argument("--no-progress", action="store_true",
                   help="do not show a progress bar while computing masks")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `crbench data` and its subcommands verify, masks and index."""
    p = sub.add_parser("data", help="check a dataset, precompute cloud masks, write the index",
                       description="Dataset tools for SEN12MS-CR-TS and SEN12MS-CR trees.")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", parser_class=type(p))
    dsub.required = True

    v = dsub.add_parser("verify", help="report missing, unreadable or inconsistent images",
                        description="Check layout and readability; names every missing date or "
                        "modality, unreadable file, wrong band count, S1/S2 patch mismatch and "
                        "blank image. Exit code 2 if the tree is unusable.")
    _add_root(v)
    v.add_argument("--workers", type=int, default=4, metavar="N",
                   help="threads reading images (default: 4)")
    v.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    v.set_defaults(func=run, data_func=_run_verify)

    m = dsub.add_parser("masks", help="precompute the cloud-mask cache (s2cloudless)",
                        description="Compute the s2cloudless cloud mask of every S2 image of a "
                        "split once and store it in the cache; cached masks are not recomputed.")
    _add_root(m)
    _add_split_region(m, "all")
    _add_cache(m)
    m.set_defaults(func=run, data_func=_run_masks)

    i = dsub.add_parser("index", help="write the sample index CSV (fixed sampler)",
                        description="Choose inputs and target of every patch with the 'fixed' "
                        "sampler of DESIGN.md (or import the toolbox's pairing file) and write "
                        "the CSV: roi, patch, input_idx, target_idx, coverage_inputs, "
                        "coverage_target, match.")
    _add_root(i)
    _add_split_region(i, None)
    i.add_argument("--L", dest="L", type=int, required=True, metavar="N",
                   help="number of input dates per sample, 1..29")
    i.add_argument("--min-dates", type=int, default=None, metavar="N",
                   help="partial trees: index only patches with at least N dates (default "
                        "L + 1, the fewest the fixed sampler can use)")
    i.add_argument("--min-cov", type=float, default=0.0, metavar="A",
                   help="lowest cloud coverage of an input date, in [0, 1] (default: 0.0)")
    i.add_argument("--max-cov", type=float, default=1.0, metavar="B",
                   help="highest cloud coverage of an input date, in [0, 1] (default: 1.0)")
    i.add_argument("--protocol", default="toolbox", metavar="P",
                   help="toolbox: the target may also be an input (as the SEN12MS-CR-TS "
                   "toolbox); strict: never; parity: toolbox, and a blank S2 image counts as "
                   "clear (coverage 0.0) as in the toolbox (default: toolbox)")
    i.add_argument("--import-pairs", type=Path, default=None, metavar="FILE",
                   help="convert the toolbox's pairing file "
                   "generic_<L>_<split>_<region>_s2cloudless_mask.npy instead of sampling "
                   "(needs --allow-pickle)")
    i.add_argument("--allow-pickle", action="store_true",
                   help="allow loading --import-pairs FILE: it is a Python pickle, and "
                   "unpickling can execute arbitrary code, so only pass this for a file from "
                   "a source you trust")
    i.add_argument("--out", type=Path, required=True, metavar="FILE.csv",
                   help="where to write the index CSV")
    _add_cache(i)
    i.set_defaults(func=run, data_func=_run_index)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen data subcommand."""
    return int(args.data_func(args) or 0)


def _cache(args: argparse.Namespace):
    from ..data.masks import MaskCache

    return MaskCache(args.root, cache_dir=args.cache_dir)


def _check_cache_dir(cache_dir: Path | None) -> None:
    """UsageError if ``--cache-dir`` (or the nearest existing folder above it) is a file."""
    from ..errors import UsageError

    if cache_dir is None:
        return
    above = next((p for p in (cache_dir, *cache_dir.parents) if p.exists()), None)
    if above is not None and not above.is_dir():
        where = "" if above == cache_dir else f" ({above} is a file)"
        raise UsageError(f"--cache-dir: {cache_dir} is a file{where}; expected a directory "
                         "for the cloud-mask cache (created if missing)")


def _check_out_file(out: Path) -> None:
    """UsageError if ``--out`` of `data index` is a directory."""
    from ..errors import UsageError

    if out.is_dir():
        raise UsageError(f"--out: {out} is a directory; expected the path of the index CSV "
                         "file to write, e.g. index.csv")


def _check_pairs_file(path: Path | None) -> None:
    """UsageError if ``--import-pairs`` is missing or not a file (before any pickle talk)."""
    from ..errors import UsageError

    if path is None or path.is_file():
        return
    what = "is a directory" if path.is_dir() else "does not exist"
    raise UsageError(f"--import-pairs: {path} {what}; expected the toolbox's pairing file "
                     "generic_<L>_<split>_<region>_s2cloudless_mask.npy")


def _dataset(args: argparse.Namespace, seq_lens: tuple[int, ...] = ()) -> str:
    """The data set of ROOT. Without --dataset, a root that is missing or matches neither
    layout is left to the SEN12MS-CR-TS reader, whose message names what it expected."""
    from ..data.cr import SEN12MSCRTS, detect_dataset

    if args.dataset is None and detect_dataset(args.root) is None:
        return SEN12MSCRTS
    return resolve(args.root, args.dataset, "ROOT", seq_lens)


def _run_verify(args: argparse.Namespace) -> int:
    from ..data.verify import verify_tree
    from ..errors import UsageError

    if args.workers < 1:
        raise UsageError(f"--workers: bad value {args.workers}; expected a positive integer")
    if _dataset(args) == "sen12mscr":
        from ..data.verify_cr import verify_cr

        report = verify_cr(args.root, progress=not args.no_progress, workers=args.workers)
    else:
        report = verify_tree(args.root, progress=not args.no_progress, workers=args.workers)
    print(report.summary())
    return 0 if report.usable else 2


def _run_masks(args: argparse.Namespace) -> int:
    from ..data.index import scan_tree

    _check_cache_dir(args.cache_dir)
    _dataset(args)
    records = scan_tree(args.root, args.split, args.region)
    cache = _cache(args)
    stats = cache.precompute([p for rec in records for p in rec.s2], workers=args.workers,
                             progress=not args.no_progress)
    print(f"cloud masks of split {args.split!r} (region {args.region!r}): {stats.total} images, "
          f"{stats.computed} computed, {stats.cached} already cached, {len(stats.failed)} "
          f"failed, {stats.seconds:.1f} s; cache {cache.cache_dir}")
    for path, message in stats.failed:
        print(f"  failed: {message if path in message else f'{path}: {message}'}",
              file=sys.stderr)
    return 2 if stats.failed else 0


def _run_index(args: argparse.Namespace) -> int:
    from ..data.index import (
        build_index,
        check_min_dates,
        check_root,
        check_split_region,
        write_index,
    )
    from ..data.sampler import Protocol, check_cov_bounds, check_seq_len
    from ..errors import UsageError

    check_seq_len(args.L)
    check_min_dates(args.min_dates, args.L)
    check_cov_bounds(args.min_cov, args.max_cov)
    _check_out_file(args.out)
    _check_pairs_file(args.import_pairs)
    _check_cache_dir(args.cache_dir)
    protocol = Protocol.parse(args.protocol)
    check_split_region(args.split, args.region)
    check_root(args.root)  # before the cache, whose default directory lives under ROOT
    if _dataset(args, (args.L,)) == "sen12mscr" and args.import_pairs is not None:
        raise UsageError(f"--import-pairs: {args.import_pairs.name} pairs SEN12MS-CR-TS dates, "
                         "but ROOT is a SEN12MS-CR tree (one cloudy and one clear image per "
                         "patch); leave --import-pairs out")
    if args.import_pairs is not None:
        frame = _import(args)
    else:
        frame = build_index(args.root, args.split, args.L, args.region, args.min_cov,
                            args.max_cov, protocol, cache=_cache(args),
                            progress=not args.no_progress, workers=args.workers,
                            min_dates=args.min_dates)
    write_index(frame, args.out)
    n_match = int(frame["match"].sum())
    print(f"index of split {args.split!r} (region {args.region!r}, L={args.L}): "
          f"{len(frame)} patches, {n_match} matching, {len(frame) - n_match} skipped "
          f"(non-matching); wrote {args.out}")
    return 0


def _import(args: argparse.Namespace):
    from ..data.index import check_root
    from ..data.pairing import import_pairs, parse_pairing_name
    from ..data.sampler import Protocol
    from ..errors import UsageError

    named = parse_pairing_name(args.import_pairs)
    if named is not None:
        for key in ("L", "split", "region"):
            if named[key] != getattr(args, key):
                raise UsageError(f"--{key}: {getattr(args, key)!r} given but the pairing file "
                                 f"{args.import_pairs.name} is for {key} {named[key]!r}")
    root = check_root(args.root)
    return import_pairs(args.import_pairs, allow_pickle=args.allow_pickle, root=root,
                        cache=_cache(args), L=args.L,
                        blank_clear=Protocol.parse(args.protocol).blank_is_clear)
