"""`crbench convert toolbox-seq2point FILE.pth --L N --out DIR`: import a toolbox checkpoint.

Converts the SEN12MS-CR-TS toolbox's Seq2point generator (``<epoch>_net_G.pth`` of
``--netG resnet3d_9blocks_withoutBottleneck``, read with ``torch.load(weights_only=True)``,
never as a full pickle) into a crbench checkpoint ``DIR/seq2point/L<N>/`` of Seq2point's
``toolbox`` preset (the toolbox's input scaling and zero-padded first fusion conv), so that
``crbench run --methods seq2point --L N --checkpoints DIR`` evaluates it. Keys are mapped
strictly: a missing, unexpected or misshapen key is refused naming FILE and the key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("toolbox-seq2point",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a toolbox checkpoint (toolbox-seq2point)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("format", metavar="FORMAT", choices=FORMATS,
                   help="source format: toolbox-seq2point")
    p.add_argument("file", metavar="FILE", type=Path, help="toolbox <epoch>_net_G.pth")
    p.add_argument("--L", dest="seq_len", required=True, type=int, metavar="N",
                   help="number of input dates the network was trained for")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="checkpoints directory; the checkpoint goes to DIR/seq2point/L<N>/")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crbench_methods.seq2point_toolbox import convert_toolbox_seq2point

    if args.out.exists() and not args.out.is_dir():
        from ..errors import UsageError

        raise UsageError(f"--out: {args.out} is a file; expected a checkpoints directory")
    path = convert_toolbox_seq2point(args.file, args.seq_len, args.out)
    print(f"crbench convert: {args.file} -> {path} (seq2point, preset toolbox, "
          f"L={args.seq_len})", file=sys.stdout)
    return 0
