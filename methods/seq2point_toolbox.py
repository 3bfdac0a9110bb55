"""Converting a toolbox Seq2point checkpoint into a crbench one.

The SEN12MS-CR-TS toolbox (PatrickTUM/SEN12MS-CR-TS) saves its Seq2point generator
(``--netG resnet3d_9blocks_withoutBottleneck --alter_initial_model``) as ``<epoch>_net_G.pth``:
a state dict of ``ResnetGenerator3DWithoutBottleneck`` (models/networks_branched.py) whose keys
are

- ``model_initial.0``: the single-date ResNet's first 3x3 conv (15 -> F);
- ``model_initial.{2..B+1}.conv_block.{0,2}``: its B residual blocks (the 256 -> 64 and
  64 -> 13 layers of the pretrained ResNet are cut off by ``define_G``);
- ``model_final.0``: the first fusion Conv3d (zero padding 1);
- ``model_final.{2..FB+1}.conv_block.{1,4}``: FB residual 3D blocks (index 0 and 3 are their
  pads);
- ``model_final.{FB+3}``: the output Conv3d with kernel (L, 3, 3) (FB + 2 is its pad);

each with ``.weight`` and ``.bias``. :func:`convert_toolbox_seq2point` reads such a file with
``torch.load(weights_only=True)`` (never a full pickle), maps every key onto
:class:`~crbench_methods.seq2point.Seq2PointNet` one to one (strictly: a missing, unexpected
or misshapen key is refused naming the file and the first such key) and writes a checkpoint of
Seq2point's ``toolbox`` preset (zero-padded first fusion conv; the toolbox's "resnet" input
scaling as the input adapter), so ``crbench run --checkpoints OUT`` evaluates it.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from crbench.errors import CheckpointError, UsageError

from .seq2point import IN_CHANNELS, Seq2Point

_BLOCK = re.compile(r"model_initial\.(\d+)\.conv_block\.0\.weight")
_BLOCK3D = re.compile(r"model_final\.(\d+)\.conv_block\.1\.weight")


def toolbox_key_map(blocks: int, fusion_blocks: int) -> dict[str, str]:
    """crbench ``Seq2PointNet`` key -> toolbox key, for B ``blocks`` and FB ``fusion_blocks``."""
    pairs = [("branch.head.0", "model_initial.0")]
    pairs += [(f"branch.blocks.{i}.body.{c}", f"model_initial.{i + 2}.conv_block.{c}")
              for i in range(blocks) for c in (0, 2)]
    pairs += [("fusion.0", "model_final.0")]
    pairs += [(f"fusion.{j + 2}.body.{c}", f"model_final.{j + 2}.conv_block.{t}")
              for j in range(fusion_blocks) for c, t in ((0, 1), (2, 4))]
    pairs += [("out", f"model_final.{fusion_blocks + 3}")]
    return {f"{ours}.{p}": f"{theirs}.{p}" for ours, theirs in pairs for p in ("weight", "bias")}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ``.pth`` state dict loaded with ``weights_only=True``.

    Raises:
        CheckpointError: missing file, not a torch file, a full pickle of other objects, or
            not a flat mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; expected a toolbox <epoch>_net_G.pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a PyTorch state dict readable with "
                              f"weights_only=True ({first}); expected a toolbox "
                              "<epoch>_net_G.pth") from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict of "
                              "tensors; expected a toolbox <epoch>_net_G.pth")
    return state


def _architecture(path: Path, state: dict[str, torch.Tensor]) -> dict[str, int]:
    """channels, blocks, fusion_blocks and L of a toolbox Seq2point state dict."""
    first = state.get("model_initial.0.weight")
    if first is None or first.ndim != 4:
        raise CheckpointError(f"{path}: missing key 'model_initial.0.weight'; expected a "
                              "toolbox Seq2point <epoch>_net_G.pth (netG "
                              "resnet3d_9blocks_withoutBottleneck)")
    blocks = sum(1 for k in state if _BLOCK.fullmatch(k))
    fusion_blocks = sum(1 for k in state if _BLOCK3D.fullmatch(k))
    out = state.get(f"model_final.{fusion_blocks + 3}.weight")
    return {"channels": int(first.shape[0]), "in_channels": int(first.shape[1]),
            "blocks": blocks, "fusion_blocks": fusion_blocks,
            "seq_len": int(out.shape[2]) if out is not None and out.ndim == 5 else -1}


def _mapped(path: Path, state: dict[str, torch.Tensor], net: torch.nn.Module,
            key_map: dict[str, str]) -> dict[str, torch.Tensor]:
    """``state`` renamed to ``net``'s keys; CheckpointError at the first mismatch."""
    ours = net.state_dict()
    expected = set(key_map.values())
    for crbench_key, key in key_map.items():
        if key not in state:
            raise CheckpointError(f"{path}: missing key {key!r}; expected the "
                                  f"{len(key_map)} tensors of a toolbox Seq2point generator")
        if tuple(state[key].shape) != tuple(ours[crbench_key].shape):
            raise CheckpointError(f"{path}: key {key!r} has shape {tuple(state[key].shape)}, "
                                  f"expected {tuple(ours[crbench_key].shape)}")
    for key in state:
        if key not in expected:
            raise CheckpointError(f"{path}: unexpected key {key!r}; expected only the "
                                  f"{len(key_map)} tensors of a toolbox Seq2point generator")
    return {crbench_key: state[key].float() for crbench_key, key in key_map.items()}


def toolbox_model(path: Path, seq_len: int) -> Seq2Point:
    """A ``toolbox``-preset Seq2point holding the weights of toolbox file ``path``.

    Raises:
        UsageError: ``seq_len`` is not the L the file's output conv is built for.
        CheckpointError: unreadable file or a key mismatch (names the file and the key).
    """
    path = Path(path)
    state = read_state_dict(path)
    arch = _architecture(path, state)
    if arch["in_channels"] != IN_CHANNELS:
        raise CheckpointError(f"{path}: model_initial.0.weight takes {arch['in_channels']} "
                              f"input channels, expected {IN_CHANNELS} (13 S2 + 2 S1 bands)")
    if arch["seq_len"] > 0 and arch["seq_len"] != seq_len:
        raise UsageError(f"L: bad value {seq_len}; {path} is built for L={arch['seq_len']} "
                         "(its output Conv3d's kernel)")
    model = Seq2Point(seq_len, "toolbox", channels=arch["channels"], blocks=arch["blocks"],
                      fusion_blocks=arch["fusion_blocks"])
    key_map = toolbox_key_map(arch["blocks"], arch["fusion_blocks"])
    model.net.load_state_dict(_mapped(path, state, model.net, key_map), strict=True)
    return model


def convert_toolbox_seq2point(path: Path, seq_len: int, out: Path) -> Path:
    """Write ``out/seq2point/L<seq_len>/`` (a crbench checkpoint) from toolbox file ``path``.

    Returns:
        The checkpoint directory.

    Raises:
        UsageError: bad ``seq_len``, or the target already holds a checkpoint.
        CheckpointError: see :func:`toolbox_model`.
    """
    from crbench.torchutil import existing_checkpoint_files

    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise UsageError(f"L: bad value {seq_len!r}; expected an integer >= 1")
    target = Path(out) / Seq2Point.name / f"L{seq_len}"
    found = existing_checkpoint_files(target) if target.is_dir() else []
    if found:
        raise UsageError(f"out: {target} already holds a checkpoint ({', '.join(found)}); "
                         "expected a new directory")
    model = toolbox_model(path, seq_len)
    model.save(target)
    return target

