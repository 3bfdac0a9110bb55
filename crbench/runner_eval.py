"""The evaluation loop of :mod:`crbench.runner`: one method at one L, batch by batch.

Per batch: inputs go to the device, ``method.predict`` sees only them (never the target),
metrics are computed on the device, optional GeoTIFF predictions are written, then the rows
are appended and fsync'ed. Nothing but the current batch is held in memory.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .constants import S2_BANDS, S2_MAX
from .errors import PluginError
from .runner_store import RowsWriter, done_keys, prediction_path, rows_path

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

    from .api import Batch, Method
    from .runner import MethodRun, RunConfig


def batch_seed(seed: int, method: str, seq_len: int, roi: str, patch: int) -> int:
    """Seed for a batch, from the run seed and the batch's first sample (reproducible per
    batch composition, independent of what ran before)."""
    text = f"{seed}|{method}|{seq_len}|{roi}|{patch}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def save_prediction(path: Path, pred: np.ndarray, target_path: str | Path) -> Path:
    """Write one prediction as a 13-band uint16 GeoTIFF (S2 DN = pred x 10000, clipped to
    [0, 10000]) with the target file's transform and CRS; atomic (temp file + rename)."""
    import numpy as np
    import rasterio

    with rasterio.open(target_path) as src:
        transform, crs = src.transform, src.crs
    data = np.clip(np.rint(np.asarray(pred, dtype=np.float64) * S2_MAX), 0, S2_MAX)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    profile = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2],
               "count": data.shape[0], "dtype": "uint16", "transform": transform, "crs": crs,
               "compress": "deflate"}
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data.astype(np.uint16))
        dst.descriptions = tuple(S2_BANDS[:data.shape[0]])
    os.replace(tmp, path)
    return path


def _check_prediction(pred: Any, target: torch.Tensor, name: str) -> None:
    import torch

    if not isinstance(pred, torch.Tensor) or tuple(pred.shape) != tuple(target.shape):
        got = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
        raise PluginError(f"method {name!r}: predict returned {got} for a batch whose target is "
                          f"{tuple(target.shape)}; expected a tensor (B, 13, H, W)")


def count_evaluated(cfg: RunConfig, mr: MethodRun, selected: pd.DataFrame) -> int:
    """Selected samples that have a row in the run directory (any shard's file)."""
    done = done_keys(cfg.out, mr.method, mr.L)
    keys = zip(selected["roi"].astype(str), selected["patch"].astype(int), strict=True)
    return sum(k in done for k in keys)


def _todo(cfg: RunConfig, mr: MethodRun, selected: pd.DataFrame
          ) -> tuple[pd.DataFrame, set[tuple[str, int]]]:
    """Selected samples still to compute, and the (roi, patch) keys that already have rows."""
    done = done_keys(cfg.out, mr.method, mr.L)
    keys = list(zip(selected["roi"].astype(str), selected["patch"].astype(int), strict=True))
    mr.n_evaluated = sum(k in done for k in keys)

    def needed(key: tuple[str, int]) -> bool:
        if key not in done:
            return True
        return cfg.save_predictions and not prediction_path(cfg.out, mr.method, mr.L,
                                                            *key).is_file()

    mask = [needed(k) for k in keys]
    return selected[mask].reset_index(drop=True), done


def evaluate(cfg: RunConfig, mr: MethodRun, method: Method, selected: pd.DataFrame,
             cache: Any, device: torch.device) -> None:
    """Evaluate ``method`` on the selected samples not done yet, appending rows."""
    from tqdm.auto import tqdm

    todo, done = _todo(cfg, mr, selected)
    if todo.empty:
        return
    loader = _loader(cfg, mr.L, todo, cache, device)
    bar = tqdm(total=len(selected), initial=mr.n_evaluated, desc=f"{mr.method} L={mr.L}",
               unit="sample", disable=not cfg.progress, dynamic_ncols=True, leave=True)
    try:
        with RowsWriter(rows_path(cfg.out, mr.method, mr.L, cfg.shard)) as writer:
            for batch in loader:
                rows = _evaluate_batch(cfg, mr, method, batch, device, done)
                writer.append(rows)
                mr.n_evaluated += len(rows)
                mr.n_new += len(rows)
                bar.update(len(rows))
    finally:
        bar.close()


def _loader(cfg: RunConfig, seq_len: int, todo: pd.DataFrame, cache: Any,
            device: torch.device) -> torch.utils.data.DataLoader:
    from torch.utils.data import DataLoader

    from .api import collate
    from .data.dataset import SEN12MSCRTS

    ds = SEN12MSCRTS(cfg.data, split=cfg.split, L=seq_len, region=cfg.region, sampler="fixed",
                     protocol=cfg.protocol, index=todo, only_matching=True, cache=cache,
                     seed=cfg.seed)
    # workers read and decode while the device predicts; persistent for the loader's lifetime
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                      collate_fn=collate, pin_memory=device.type == "cuda",
                      persistent_workers=cfg.workers > 0)


def _evaluate_batch(cfg: RunConfig, mr: MethodRun, method: Method, batch: Batch,
                    device: torch.device, done: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """Predict, score and (optionally) save one batch; the rows of samples not done yet."""
    import torch

    from .metrics import compute_metrics

    inputs = batch.inputs.to(device, non_blocking=True)
    first = batch.meta[0]
    torch.manual_seed(batch_seed(cfg.seed, mr.method, mr.L, first.roi, first.patch))
    start = time.perf_counter()
    with torch.no_grad():
        pred = method.predict(inputs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    per_sample = (time.perf_counter() - start) / len(batch.meta)
    target = batch.target.to(device, non_blocking=True)
    _check_prediction(pred, target, mr.method)
    pred = pred.to(device=device, dtype=torch.float32)
    with torch.no_grad():
        scores = compute_metrics(pred, target, inputs.masks, cfg.mask_convention)
    values = {k: v.detach().double().cpu().tolist() for k, v in scores.items()}
    if cfg.save_predictions:
        pred_np = pred.detach().cpu().numpy()
        for i, meta in enumerate(batch.meta):
            save_prediction(prediction_path(cfg.out, mr.method, mr.L, meta.roi, meta.patch),
                            pred_np[i], meta.target_path)
    rows = []
    for i, meta in enumerate(batch.meta):
        if (meta.roi, int(meta.patch)) in done:
            continue  # row kept from before; only its prediction file was missing
        cov = meta.coverage_inputs
        rows.append({"method": mr.method, "L": mr.L, "split": cfg.split, "roi": meta.roi,
                     "patch": int(meta.patch),
                     "input_idx": ";".join(str(int(t)) for t in meta.input_idx),
                     "target_idx": int(meta.target_idx),
                     "coverage": float(sum(cov) / len(cov)) if cov else float("nan"),
                     **{k: float(v[i]) for k, v in values.items()},
                     "seconds": float(per_sample)})
    return rows
