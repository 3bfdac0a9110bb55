"""Device selection, mixed precision, padding to a network's stride, the toolbox's weight
initialisation and checkpoint files shared by all learned methods.

Checkpoint directory layout (one directory per checkpoint):
``model.safetensors`` (weights), ``config.json`` (the method's config, checked on load) and,
for resumable training, ``trainer.pt`` (optimizer/EMA/step state, loaded with weights_only=True).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
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


def amp_dtype(device: torch.device, dtype: torch.dtype | None = None) -> torch.dtype | None:
    """The autocast dtype on ``device``: None (full precision) on CPU; on CUDA ``dtype`` if
    given (e.g. ``torch.float16``, the paper's FP16 training), else bf16 where supported,
    else fp16."""
    if device.type != "cuda":
        return None
    if dtype is not None:
        return dtype
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True, dtype: torch.dtype | None = None
             ) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA in :func:`amp_dtype`'s dtype; a no-op on CPU."""
    chosen = amp_dtype(device, dtype)
    if chosen is None or not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=chosen)


def grad_scaler(device: torch.device, dtype: torch.dtype | None = None) -> torch.amp.GradScaler:
    """A GradScaler active only when :func:`amp_dtype` is fp16 on CUDA (bf16 has fp32's
    exponent range and needs no loss scaling)."""
    fp16 = amp_dtype(device, dtype) == torch.float16
    return torch.amp.GradScaler("cuda", enabled=fp16)


def load_scaler_state(scaler: torch.amp.GradScaler, state: Mapping[str, Any]) -> None:
    """Restore a GradScaler; an empty state (written by a disabled scaler: a CPU or bf16 run)
    leaves it at its initial scale, so a run started on CPU or a bf16 GPU can be resumed on
    an fp16-only GPU (torch refuses to load an empty state into an enabled scaler)."""
    if state:
        scaler.load_state_dict(dict(state))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Edge-pad (replicate) the last two axes of ``x`` at the bottom and right to multiples of
    ``multiple``, for networks that downsample by that factor; any leading axes.

    Returns:
        The padded tensor (``x`` itself when nothing is missing) and the original (H, W),
        for :func:`crop_to` on the network's output.

    Raises:
        ValueError: ``multiple`` < 1 or ``x`` with fewer than two axes (a programming error).
    """
    if multiple < 1 or x.ndim < 2:
        raise ValueError(f"pad_to_multiple: multiple {multiple} on shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x, (h, w)
    flat = torch.nn.functional.pad(x.reshape(-1, h, w), (0, pw, 0, ph), mode="replicate")
    return flat.reshape(*x.shape[:-2], h + ph, w + pw), (h, w)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The top-left ``size`` = (H, W) of the last two axes of ``x``: undoes
    :func:`pad_to_multiple`."""
    return x[..., :size[0], :size[1]]


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
        config = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint: {cfg} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint: {cfg} holds a JSON {type(config).__name__}, "
                              "expected a JSON object (the method's config written by "
                              "`crbench train`)")
    return config


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
    weights = check_weights(path)
    try:
        return load_file(str(weights)), config
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise _invalid(weights, "checkpoint", exc) from None


def _invalid(path: Path, what: str, exc: BaseException) -> CheckpointError:
    first = (str(exc).splitlines() or [type(exc).__name__])[0].split(". ")[0]
    return CheckpointError(f"checkpoint: {path} is not a valid crbench {what} ({first}); it "
                           "is truncated, damaged or was not written by `crbench train`")


def check_weights(path: Path) -> Path:
    """The weights file of checkpoint directory ``path`` after reading its header only
    (cheap: the tensors are not loaded).

    Raises:
        CheckpointError: missing, or not a valid safetensors file (truncated, damaged);
            the message names the file.
    """
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint: {weights} is missing")
    try:
        with safe_open(str(weights), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise _invalid(weights, "checkpoint", exc) from None
    return weights


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
    if not f.is_file():
        return None
    try:
        with warnings.catch_warnings():  # torch's note on a foreign pickle's protocol
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(f, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise _invalid(f, "trainer state", _short(exc)) from None
    if not isinstance(state, dict):
        raise _invalid(f, "trainer state", TypeError(f"holds a {type(state).__name__}"))
    return state


def _short(exc: BaseException) -> BaseException:
    """A pickle refusal without torch's advice to load it unsafely (weights_only=False)."""
    if isinstance(exc, pickle.UnpicklingError):
        return pickle.UnpicklingError("it holds objects other than tensors and plain values")
    return exc


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


def init_normal(net: torch.nn.Module, gain: float = 0.02) -> torch.nn.Module:
    """The pix2pix / SEN12MS-CR-TS toolbox's ``init_weights(net, "normal", gain)``: conv and
    linear weights N(0, gain) with zero biases, batch-norm weights N(1, gain) with zero biases
    (its Seq2point and STGAN presets); returns ``net``."""

    def init(m: torch.nn.Module) -> None:
        name = m.__class__.__name__
        weight = getattr(m, "weight", None)
        if weight is not None and ("Conv" in name or "Linear" in name):
            torch.nn.init.normal_(weight, 0.0, gain)
            if getattr(m, "bias", None) is not None:
                torch.nn.init.zeros_(m.bias)
        elif "BatchNorm2d" in name and weight is not None:
            torch.nn.init.normal_(weight, 1.0, gain)
            torch.nn.init.zeros_(m.bias)

    with torch.no_grad():
        net.apply(init)
    return net
