"""`crbench` entry point: builds the parser from the subcommand modules and maps errors to
exit codes (0 success, 1 metric regression, 2 bad usage or input, 130 interrupted).

Subcommand modules import only argparse-level code at import time; heavy imports (torch,
rasterio, s2cloudless) happen inside their ``run`` functions so that ``crbench --help`` is fast
and a broken optional dependency only affects the subcommand that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import CrbenchError, RegressionError

SUBCOMMAND_MODULES = ("synth", "data", "methods", "train", "convert", "run", "report", "check",
                      "demo")

_FLAGS = {"data_root": "--data", "min_cov": "--min-cov", "max_cov": "--max-cov",
          "workers": "--workers", "batch_size": "--batch-size", "steps": "--steps",
          "crop": "--crop", "split": "--split", "region": "--region", "protocol": "--protocol",
          "L": "--L", "seq_len": "--L", "allow_pickle": "--allow-pickle",
          "cache_dir": "--cache-dir", "seed": "--seed", "out": "--out",
          "methods": "--methods"}
"""Library parameter names -> the CLI flag that sets them, for messages ``"<name>: ..."``."""
_POSITIONAL = {("data", "data_root"): "ROOT", ("data", "root"): "ROOT",
               ("synth", "root"): "ROOT"}
"""(command, parameter) pairs given by a positional argument instead of a flag."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"crbench: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crbench", description="Cloud-removal benchmark on SEN12MS-CR-TS.")
    parser.add_argument("--version", action="version", version=f"crbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        module.register(sub)
    return parser


def user_message(exc: BaseException, command: str) -> str:
    """The one line to show for ``exc``: the original message of an error re-raised from a
    DataLoader worker (not the worker's traceback), its leading library parameter name
    replaced by the CLI flag (``min_cov: ...`` -> ``--min-cov: ...``)."""
    text = str(exc)
    if "\nOriginal Traceback" in text:  # torch's ExceptionWrapper: "Caught X in ... worker"
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    name, sep, rest = text.partition(": ")
    flag = _POSITIONAL.get((command, name)) or _FLAGS.get(name)
    if sep and flag:
        text = f"{flag}: {rest}"
    return " ".join(text.split("\n"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RegressionError as exc:
        print(f"crbench {args.command}: {exc}", file=sys.stderr)
        return 1
    except (CrbenchError, ValueError, FileNotFoundError) as exc:
        print(f"crbench {args.command}: error: {user_message(exc, args.command)}",
              file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `crbench report | head`: the reader left, nothing to say
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"crbench {args.command}: interrupted; results written so far are kept",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
