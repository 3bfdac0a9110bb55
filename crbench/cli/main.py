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

SUBCOMMAND_MODULES = ("synth", "data", "methods", "train", "run", "report", "check", "demo")


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RegressionError as exc:
        print(f"crbench {args.command}: {exc}", file=sys.stderr)
        return 1
    except (CrbenchError, ValueError, FileNotFoundError) as exc:
        print(f"crbench {args.command}: error: {exc}", file=sys.stderr)
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
