"""The evaluation loop of :mod:`crbench.runner`: one method at one L, batch by batch.

Per batch: inputs go to the device, ``method.predict`` sees only them (never the target),
metrics are computed on the device, optional GeoTIFF predictions are written, then the rows
are appended and fsync'ed. Nothing but the current batch is held in memory.

With ``--samples K`` (``mr.samples > 1``) ``method.predict_samples(inputs, K)`` gives K draws:
each is scored, the row holds the mean of each metric over the draws (the saved prediction is
the mean image) and the spread sidecar the std over the draws (ddof 0). The spread line is
written before the row, so a sample killed in between is recomputed on resume and its spread
line repeated; :func:`crbench.runner.store.read_spread` keeps the last one.

When a variance exists (the K draws' per-pixel variance, or ``method.predict_with_variance``
for a method with ``gives_variance``) the uncertainty sidecar gets, per sample, the metrics of
:mod:`crbench.metrics.uncertainty` of the scored prediction (the mean image of the draws)
against that variance, written like the spread line.

Scored bands: a method whose :attr:`~crbench.api.Method.bands` are a subset of the 13 (the
bands it predicts itself, e.g. STGAN's 4-band variants, which fill the rest from mosaicing)
is scored on those bands only (:func:`scored_bands`); the manifest's run entry records them
(``scored_bands``) and ``crbench report`` marks such rows. Every other method: all 13.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constants import S2_BANDS, S2_MAX
from ..errors import PluginError
from .store import (
    SPREAD_COLUMNS,
    UNCERTAINTY_COLUMNS,
    RowsWriter,
    done_keys,
    format_bins,
    prediction_path,
    rows_path,
    spread_path,
    uncertainty_path,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

    from ..api import Batch, Method
    from .config import MethodRun, RunConfig


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


def _check_prediction(pred: Any, target: torch.Tensor, name: str, k: int = 0) -> None:
    """``k`` = 0: ``predict``'s (B, 13, H, W); else ``predict_samples``' (k, B, 13, H, W)."""
    import torch

    want = (k, *target.shape) if k else tuple(target.shape)
    if not isinstance(pred, torch.Tensor) or tuple(pred.shape) != want:
        got = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
        call, form = ("predict_samples", "(K, B, 13, H, W)") if k else ("predict",
                                                                         "(B, 13, H, W)")
        raise PluginError(f"method {name!r}: {call} returned {got} for a batch whose target is "
                          f"{tuple(target.shape)}; expected a tensor {form} = {want}")


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
    loader = _loader(cfg, mr.L, todo, cache, device, getattr(method, "s1_db_range", None))
    bar = tqdm(total=len(selected), initial=mr.n_evaluated, desc=f"{mr.method} L={mr.L}",
               unit="sample", disable=not cfg.progress, dynamic_ncols=True, leave=True)
    sidecars = {"spread": (spread_path(cfg.out, mr.method, mr.L, cfg.shard), SPREAD_COLUMNS,
                           mr.samples > 1),
                "uncertainty": (uncertainty_path(cfg.out, mr.method, mr.L, cfg.shard),
                                UNCERTAINTY_COLUMNS, mr.uncertainty is not None)}
    try:
        with RowsWriter(rows_path(cfg.out, mr.method, mr.L, cfg.shard)) as writer, \
                contextlib.ExitStack() as stack:
            side = {kind: stack.enter_context(RowsWriter(path, columns))
                    for kind, (path, columns, wanted) in sidecars.items() if wanted}
            for batch in loader:
                out = _evaluate_batch(cfg, mr, method, batch, device, done)
                for kind, side_writer in side.items():  # sidecar lines before their rows
                    side_writer.append(out[kind])
                writer.append(out["rows"])
                mr.n_evaluated += len(out["rows"])
                mr.n_new += len(out["rows"])
                bar.update(len(out["rows"]))
    finally:
        bar.close()


def _loader(cfg: RunConfig, seq_len: int, todo: pd.DataFrame, cache: Any,
            device: torch.device, s1_db_range: Any = None) -> torch.utils.data.DataLoader:
    from torch.utils.data import DataLoader

    from ..api import collate
    from ..data.dataset import dataset_class

    ds = dataset_class(cfg.data)(cfg.data, split=cfg.split, L=seq_len, region=cfg.region,
                                 sampler="fixed", protocol=cfg.protocol, index=todo,
                                 only_matching=True, cache=cache, seed=cfg.seed,
                                 s1_db_range=s1_db_range)
    # workers read and decode while the device predicts; persistent for the loader's lifetime
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers,
                      collate_fn=collate, pin_memory=device.type == "cuda",
                      persistent_workers=cfg.workers > 0)


def _predict(mr: MethodRun, method: Method, inputs: Any, target: torch.Tensor,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """(K, B, 13, H, W) float32 draws on ``device`` (K = 1 without --samples), the per-pixel
    variance (of the K draws, or the method's own; None without either) and the prediction
    wall time per sample."""
    import torch

    start = time.perf_counter()
    var = None
    with torch.no_grad():
        if mr.samples > 1:
            draws = method.predict_samples(inputs, mr.samples)
        elif mr.uncertainty is not None:
            draws, var = method.predict_with_variance(inputs)
        else:
            draws = method.predict(inputs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / target.shape[0]
    _check_prediction(draws, target, mr.method, mr.samples if mr.samples > 1 else 0)
    draws = draws if mr.samples > 1 else draws.unsqueeze(0)
    draws = draws.to(device=device, dtype=torch.float32)
    if mr.samples > 1:
        var = draws.var(0, unbiased=False)
    elif var is not None:
        _check_prediction(var, target, f"{mr.method} (variance)")
        var = var.to(device=device, dtype=torch.float32)
    return draws, var, seconds


def _uncertainty_rows(mr: MethodRun, pred: torch.Tensor, target: torch.Tensor,
                      var: torch.Tensor | None, keys: list[dict[str, Any]]
                      ) -> list[dict[str, Any]]:
    """Uncertainty sidecar lines of a batch (none without a variance)."""
    if var is None:
        return []
    from ..metrics.uncertainty import uncertainty_metrics

    values, bins = uncertainty_metrics(pred, target, var)
    source = "draws" if mr.samples > 1 else "head"
    return [{**key, "source": source, **{k: float(v[i]) for k, v in values.items()},
             "bins": format_bins(bins[i].tolist())} for i, key in keys]


def scored_bands(method: Method) -> list[int] | None:
    """Indices of the bands ``crbench run`` scores for ``method``: those of ``method.bands``
    when they are a proper subset of the 13 S2 bands, else None (all 13).

    Raises:
        PluginError: ``bands`` empty, repeated or naming no S2 band.
    """
    names = [str(b) for b in method.bands]
    if not names or len(set(names)) != len(names) or not set(names) <= set(S2_BANDS):
        raise PluginError(f"method {method.name!r}: bands {names!r} are not distinct S2 band "
                          f"names; expected some of {', '.join(S2_BANDS)}")
    return None if len(names) == len(S2_BANDS) else [S2_BANDS.index(b) for b in names]


def _scores(cfg: RunConfig, draws: torch.Tensor, target: torch.Tensor, masks: torch.Tensor,
            bands: list[int] | None = None
            ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-sample mean and std (ddof 0) of each metric over the draws (on ``bands`` only
    when given)."""
    import torch

    from ..metrics import compute_metrics

    with torch.no_grad():
        per_draw = [compute_metrics(d, target, masks, cfg.mask_convention, bands=bands)
                    for d in draws]
    stacked = {k: torch.stack([s[k].detach().double() for s in per_draw])
               for k in per_draw[0]}
    means = {k: v.mean(0).cpu().tolist() for k, v in stacked.items()}
    stds = {k: v.std(0, unbiased=False).cpu().tolist() for k, v in stacked.items()}
    return means, stds


def _evaluate_batch(cfg: RunConfig, mr: MethodRun, method: Method, batch: Batch,
                    device: torch.device, done: set[tuple[str, int]]
                    ) -> dict[str, list[dict[str, Any]]]:
    """Predict, score and (optionally) save one batch; the ``rows``, ``spread`` and
    ``uncertainty`` lines of samples not done yet (the sidecars' only when they apply)."""
    import torch

    inputs = batch.inputs.to(device, non_blocking=True)
    first = batch.meta[0]
    torch.manual_seed(batch_seed(cfg.seed, mr.method, mr.L, first.roi, first.patch))
    target = batch.target.to(device, non_blocking=True)
    draws, var, per_sample = _predict(mr, method, inputs, target, device)
    values, stds = _scores(cfg, draws, target, inputs.masks, scored_bands(method))
    pred = draws.mean(0)
    if cfg.save_predictions:
        pred_np = pred.detach().cpu().numpy()
        for i, meta in enumerate(batch.meta):
            save_prediction(prediction_path(cfg.out, mr.method, mr.L, meta.roi, meta.patch),
                            pred_np[i], meta.target_path)
    rows, spread, keys = [], [], []
    for i, meta in enumerate(batch.meta):
        if (meta.roi, int(meta.patch)) in done:
            continue  # row kept from before; only its prediction file was missing
        cov = meta.coverage_inputs
        key = {"method": mr.method, "L": mr.L, "roi": meta.roi, "patch": int(meta.patch)}
        keys.append((i, key))
        rows.append({**key, "split": cfg.split,
                     "input_idx": ";".join(str(int(t)) for t in meta.input_idx),
                     "target_idx": int(meta.target_idx),
                     "coverage": float(sum(cov) / len(cov)) if cov else float("nan"),
                     **{k: float(v[i]) for k, v in values.items()},
                     "seconds": float(per_sample)})
        if mr.samples > 1:
            spread.append({**key, "samples": mr.samples,
                           **{f"{k}_std": float(v[i]) for k, v in stds.items()}})
    return {"rows": rows, "spread": spread,
            "uncertainty": _uncertainty_rows(mr, pred, target, var, keys)}
