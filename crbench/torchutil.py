"""Device selection, mixed precision and checkpoint files shared by all learned methods.

Checkpoint directory layout (one directory per checkpoint):
``model.safetensors`` (weights), ``config.json`` (the method's config, checked on load) and,
for resumable training, ``trainer.pt`` (optimizer/EMA/step state, loaded with weights_only=True).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAINER_FILE = "trainer.pt"


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op on CPU."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler active only for fp16 autocast on CUDA."""
    fp16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=fp16)


def save_checkpoint(path: Path, state_dict: Mapping[str, torch.Tensor],
                    config: Mapping[str, Any], trainer_state: Mapping[str, Any] | None = None
                    ) -> Path:
    """Write a checkpoint directory atomically enough: files are written then renamed."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, str(path / (WEIGHTS_FILE + ".tmp")))
    (path / (WEIGHTS_FILE + ".tmp")).replace(path / WEIGHTS_FILE)
    (path / CONFIG_FILE).write_text(json.dumps(dict(config), indent=2, sort_keys=True))
    if trainer_state is not None:
        torch.save(dict(trainer_state), path / (TRAINER_FILE + ".tmp"))
        (path / (TRAINER_FILE + ".tmp")).replace(path / TRAINER_FILE)
    return path


def existing_checkpoint_files(path: Path) -> list[str]:
    """Names of the checkpoint files (weights, config, trainer state) already in ``path``."""
    return [f for f in (WEIGHTS_FILE, CONFIG_FILE, TRAINER_FILE) if (Path(path) / f).is_file()]


def checkpoint_sha256(path: Path) -> str:
    """Content hash of a checkpoint's weights: the sha256 of ``model.safetensors``, or for a
    plugin's own layout (no ``model.safetensors``), of every other file's name and sha256
    (trainer state, history and temporary files left out).

    Raises:
        CheckpointError: a file cannot be read.
    """
    path = Path(path)
    try:
        if (path / WEIGHTS_FILE).is_file():
            return _file_sha256(path / WEIGHTS_FILE)
        lines = [f"{f.relative_to(path).as_posix()} {_file_sha256(f)}\n"
                 for f in sorted(path.rglob("*")) if f.is_file()
                 and f.name not in (TRAINER_FILE, "history.csv") and f.suffix != ".tmp"]
    except OSError as exc:
        raise CheckpointError(f"checkpoint: {path}: cannot read its files ({exc})") from exc
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_config(path: Path) -> dict[str, Any]:
    """The config.json of checkpoint directory ``path``."""
    cfg = Path(path) / CONFIG_FILE
    if not cfg.is_file():
        raise CheckpointError(f"checkpoint: {path} has no {CONFIG_FILE}; expected a directory "
                              f"written by `crbench train` ({WEIGHTS_FILE} + {CONFIG_FILE})")
    try:
        return json.loads(cfg.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint: {cfg} is not valid JSON ({exc})") from exc


def check_config(config: Mapping[str, Any], path: Path, **expect: Any) -> None:
    """Refuse a checkpoint whose config disagrees with what the caller expects."""
    for key, want in expect.items():
        if want is None:
            continue
        have = config.get(key)
        if have != want:
            raise CheckpointError(
                f"checkpoint: {path} was trained with {key}={have!r} but {key}={want!r} was "
                f"asked for; train a model for {key}={want!r} or pass a matching checkpoint")


def load_checkpoint(path: Path, **expect: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state_dict, config) after checking ``expect`` against the stored config."""
    path = Path(path)
    config = read_config(path)
    check_config(config, path, **expect)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint: {weights} is missing")
    return load_file(str(weights)), config


def load_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into ``module``; a mismatch is a CheckpointError naming ``path``."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint: {path} does not fit the network its config.json "
                              f"describes ({str(exc).splitlines()[0]})") from exc


def load_trainer_state(path: Path) -> dict[str, Any] | None:
    """Optimizer/EMA/step state of a checkpoint, or None if it has none."""
    f = Path(path) / TRAINER_FILE
    return torch.load(f, map_location="cpu", weights_only=True) if f.is_file() else None


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Temporarily switch ``model`` to eval mode under no_grad."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was)
