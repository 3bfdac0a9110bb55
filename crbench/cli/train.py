"""`crbench train METHOD --data ROOT --L N --out DIR [...]`: train a learned method.

The method is resolved through the registry (entry-point group ``crbench.methods``) and must be
a :class:`crbench.api.TrainableMethod`. ``--set KEY=VALUE`` (repeatable) overrides a preset
value; VALUE is parsed as JSON when possible (``--set lr=1e-3 --set generator='"unet"'`` or
simply ``--set generator=unet``). With ``--resume`` and no ``--preset``/``--set``, the
configuration stored in ``DIR/config.json`` is reused. At the start it prints the parameter
counts of the method's networks (``TrainableMethod.parameter_counts``); at the end one line from
``DIR/history.csv``: steps, time, and the first -> last value of every loss and validation score
(``val nrmse_cloudy``, ``val psnr_cloudy``, ``val psnr``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .dataset_arg import add_dataset_arg, resolve

_META_KEYS = ("method", "preset", "seq_len", "train_seq_len")  # config keys that are not settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a learned method (seq2point, stgan, seqdm, ...)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", metavar="METHOD",
                   help="registered method name (see `crbench methods`)")
    p.add_argument("--data", required=True, type=Path, metavar="ROOT",
                   help="SEN12MS-CR-TS or SEN12MS-CR root")
    add_dataset_arg(p)
    p.add_argument("--L", dest="seq_len", required=True, type=int, metavar="N",
                   help="number of input dates")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="checkpoint directory (model.safetensors, config.json, trainer.pt, "
                        "history.csv)")
    p.add_argument("--preset", default=None, help="configuration preset: full (default), tiny, "
                   "or a method's own (SeqDMs: paper = batch 1 for 10 epochs)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the "
                   "preset's epochs)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    p.add_argument("--crop", type=int, default=None, metavar="PX",
                   help="train on random square crops of this size")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that already holds a checkpoint, replacing "
                        "it (without --resume or --overwrite that is refused)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--region", default="all", help="train on one region's train split")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--no-temporal-training", action="store_true",
                   help="SeqDMs only: train only the cloud-free step (Eq. 27), the Table 4 "
                        "ablation; same as --set temporal_training=false")
    p.add_argument("--fusion", choices=("noise-then-fuse", "fuse-then-noise"), default=None,
                   help="SeqDMs only: sequential fusion order (default: the paper's "
                        "noise-then-fuse)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "generator=unet"]`` -> ``{"lr": 0.001, "generator": "unet"}``."""
    from ..errors import UsageError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set: bad value {item!r}; expected KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def build_method(args: argparse.Namespace) -> Any:
    """The TrainableMethod to train, from the arguments (or the stored config on --resume)."""
    from ..api import TrainableMethod
    from ..errors import UsageError
    from ..registry import get_method_class
    from ..torchutil import CONFIG_FILE, check_config, read_config

    cls = get_method_class(args.method)
    if not (isinstance(cls, type) and issubclass(cls, TrainableMethod)):
        raise UsageError(f"METHOD: {args.method!r} has no weights to train; trainable methods "
                         "are those listed by `crbench methods` as trainable")
    overrides = parse_overrides(args.overrides)
    if getattr(args, "no_temporal_training", False):
        overrides["temporal_training"] = False
    if getattr(args, "fusion", None):
        overrides["fusion"] = args.fusion
    if args.resume and (args.out / CONFIG_FILE).is_file() and args.preset is None \
            and not overrides:
        config = read_config(args.out)
        check_config(config, args.out, method=args.method)
        preset = config.get("preset", "full")
        overrides = {k: v for k, v in config.items() if k not in _META_KEYS}
        return _construct(cls, args.seq_len, preset, overrides, f"{args.out}/{CONFIG_FILE}")
    return _construct(cls, args.seq_len, args.preset or "full", overrides, "--set")


def _construct(cls: type, seq_len: int, preset: str, overrides: dict[str, Any],
               source: str) -> Any:
    """``cls(seq_len, preset, **overrides)``; a model that cannot be built from the values
    (``--set channels=-4``) is a UsageError naming ``source`` and the values."""
    from ..errors import CrbenchError, UsageError

    try:
        return cls(seq_len=seq_len, preset=preset, **overrides)
    except UsageError as exc:
        key = str(exc).partition(":")[0]
        if key in overrides:  # a setting's own check: say where the value came from
            raise UsageError(f"{source} {exc}") from None
        raise
    except CrbenchError:
        raise
    except (RuntimeError, ValueError, TypeError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "no overrides"
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{source}: cannot build a {cls.__name__} model from {given} "
                         f"({first}); expected values the preset's network accepts") from None


def check_args(args: argparse.Namespace) -> None:
    """Argument checks before anything is read or written: counts are in range, --out is
    not a file.

    Raises:
        UsageError: naming the flag, the value and what is expected.
    """
    from ..errors import UsageError
    from ..training.options import check_fit_args

    # its messages name the parameters; cli.main turns them into the flags (--batch-size ...)
    check_fit_args(args.steps, args.batch_size, args.crop, args.workers)
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out: {args.out} is a file; expected a checkpoint directory "
                         "(created if missing)")


def history_summary(out: Path, method: str, seconds: float) -> str | None:
    """The one-line summary of ``out/history.csv`` (None without one; a note if unreadable).

    ``seconds`` (this command's wall time) is shown when the history has no ``seconds``.
    """
    from ..errors import DataError
    from ..training import HISTORY_FILE
    from ..training.history import read_history, summary_line

    path = Path(out) / HISTORY_FILE
    if not path.is_file():
        return None
    try:
        return summary_line(read_history(path), method, seconds)
    except DataError as exc:
        return f"{method}: no summary ({exc})"


def check_fresh_out(args: argparse.Namespace) -> None:
    """Refuse to start afresh over an existing checkpoint unless ``--overwrite`` says so."""
    from ..errors import UsageError
    from ..torchutil import existing_checkpoint_files

    found = [] if args.resume or getattr(args, "overwrite", False) or not args.out.is_dir() \
        else existing_checkpoint_files(args.out)
    if found:
        raise UsageError(f"--out: {args.out} already holds a checkpoint ({', '.join(found)}); "
                         "pass --resume to continue it or --overwrite to replace it")


def parameter_line(method: str, counts: dict[str, int]) -> str:
    """``crbench train: seq2point parameters: network 38,474,253`` (one entry per network)."""
    listed = ", ".join(f"{name} {count:,}" for name, count in counts.items()) or "none"
    return f"crbench train: {method} parameters: {listed}"


def check_s1(name: str, data: Path, region: str, needs: Any = None) -> None:
    """Before the model is built on the data: a method that needs S1 and a tree without S1
    for the train split are refused in one line naming --data and the methods that need S1
    (the method's ``fit`` refuses too, without the list). ``needs``: the built instance's
    (a preset may drop S1, e.g. UnCRtainTS' ``use_sar=false``); None: the class's."""
    from ..api import Need
    from ..registry import get_method_class, method_names
    from ..training import check_train_s1

    s1_methods = [m for m in method_names() if Need.S1 in get_method_class(m).needs]
    needs = get_method_class(name).needs if needs is None else needs
    check_train_s1(name, needs, data, region, s1_methods)


def run(args: argparse.Namespace) -> int:
    from ..data.index import check_root

    check_args(args)
    check_fresh_out(args)
    method = build_method(args)
    check_root(args.data, flag="--data")
    resolve(args.data, args.dataset, "--data", (args.seq_len,))
    check_s1(args.method, args.data, args.region, method.needs)
    if os.environ.get("RANK", "0") == "0":
        print(parameter_line(args.method, method.parameter_counts()), file=sys.stdout,
              flush=True)
    start = time.perf_counter()
    path = method.fit(args.data, args.out, steps=args.steps, batch_size=args.batch_size,
                      device=args.device, resume=args.resume, seed=args.seed,
                      progress=not args.no_progress, workers=args.workers,
                      region=args.region, crop=args.crop)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(f"crbench train: {args.method} checkpoint written to {path}", file=sys.stdout)
        line = history_summary(path, args.method, time.perf_counter() - start)
        if line is not None:
            print(line, file=sys.stdout)
    return 0
