"""``crbench demo``: the whole pipeline on a small synthetic dataset, on CPU in minutes.

Steps (all through library calls, no subprocesses):

1. synthesize a tree (:func:`crbench.synth.synthesize`; default 6 ROIs = 2 test, 3 train,
   1 val, 3 patches each, 64 x 64 px, seed 0) into ``OUT/data`` (or use an existing tree
   given as ``data``);
2. precompute the cloud-mask cache of every image (:class:`crbench.data.masks.MaskCache`);
3. train each learned method (:data:`LEARNED`, steps :data:`TRAIN_STEPS`) with its ``tiny``
   preset on the train split into ``OUT/checkpoints/<method>/``; a method whose import fails
   is skipped and the summary says which and why. Each method is trained once at the
   smallest L; a method whose checkpoint refuses the other L values (a model tied to L, like
   Seq2point) is trained again for each of them into ``OUT/checkpoints/<method>/L<L>/`` (the
   runner's lookup rule), so every method appears at every L in Table 2;
4. run least_cloudy, mosaicing and the trained methods at L = 3, 4, 5 on the test split
   under the strict protocol with ``--save-predictions`` and 2 draws per input of SeqDMs
   (``--samples 2``) into ``OUT/run`` (:func:`crbench.runner.run`);
5. report: Tables 1-4 (Markdown, with ``--by-coverage``), the spread and calibration tables
   (SeqDMs' draws, UnCRtainTS' predicted variance), Figures 3-4, the coverage figures and the
   reliability diagram into ``OUT/run/report``.

``quick`` shrinks everything (4 ROIs, 2 patches, L = 3 only, 2 training steps on 32 px
crops) for a smoke test. The output directory is reused by a later demo (its ``data``,
``checkpoints`` and ``run`` are replaced); a non-empty directory that is not a demo output is
refused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import CheckpointError, CrbenchError, UsageError

DEFAULT_OUT = Path("crbench-demo")
MARKER = ".crbench-demo.json"
BASELINES: tuple[str, ...] = ("least_cloudy", "mosaicing")
LEARNED: tuple[str, ...] = ("seq2point", "stgan", "seqdm", "seqdm_no_tts", "uncrtaints")


TRAIN_STEPS: Mapping[str, int | None] = {"seq2point": 75, "stgan": 300, "seqdm": 500,
                                         "seqdm_no_tts": 500, "uncrtaints": 200}
"""Training steps of the full demo: enough for Seq2point and STGAN to fill the cloudy region
clearly better than least cloudy (issue #16: nrmse_cloudy 0.037 and 0.06 against 0.26 at L = 3,
strict protocol; Seq2point about 20 s on 2 cores; STGAN 300 steps, about 60 s, because at 100
its outputs are still checkerboard patterns in Figure 3; UnCRtainTS 200 steps, about 20 s).
SeqDMs trains its tiny preset's 500 iterations (batch 4 on 32 px crops, no attention layers;
75-105 s for seqdm, 50-70 s for the ablation), and the whole demo takes about 5 minutes
(255-335 s on 2 cores, with the machine's speed; nrmse_cloudy at L = 3: seqdm 0.053,
seqdm_no_tts 0.069, least cloudy 0.26, mosaicing 0.094)."""
TRAIN_BATCH: Mapping[str, int | None] = {"seq2point": 4, "stgan": 4, "seqdm": None,
                                         "seqdm_no_tts": None, "uncrtaints": 4}
"""Training batch per method; None: the tiny preset's own (SeqDMs: 4, on its 32 px crops)."""


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of one demo run.

    Attributes:
        rois: synthetic ROIs (interleaved test, train, val, train, test, ...).
        patches: patches per ROI.
        size: patch side in pixels.
        seq_lens: the L values evaluated.
        train_steps: optimisation steps per learned method (and per L where tied to L); None
            (or a method left out) trains for the tiny preset's default.
        train_batch: training batch per learned method; None (or a method left out) uses
            the tiny preset's own.
        batch_size: evaluation batch size.
        train_crop: random crop (px) for training; None trains on whole patches (or the
            preset's own crop).
        protocol: the evaluation protocol; "strict" (the target is never an input), so that
            least cloudy cannot copy the target and every method has clouds to fill.
        samples: draws per input of the stochastic methods (SeqDMs): with 2 or more their
            spread gives the calibration table and reliability diagram beside UnCRtainTS'
            predicted variance (the rows hold the mean metric over the draws, Figure 3 the
            mean image).
        seed: synthesis and training seed.
    """

    rois: int = 6
    patches: int = 3
    size: int = 64
    seq_lens: tuple[int, ...] = (3, 4, 5)
    train_steps: Mapping[str, int | None] = field(default_factory=lambda: dict(TRAIN_STEPS))
    train_batch: Mapping[str, int | None] = field(default_factory=lambda: dict(TRAIN_BATCH))
    batch_size: int = 4
    train_crop: int | None = None
    protocol: str = "strict"
    samples: int = 2
    seed: int = 0


FULL = DemoConfig()
QUICK = DemoConfig(rois=4, patches=2, seq_lens=(3,), train_steps=dict.fromkeys(LEARNED, 2),
                   train_crop=32, samples=1)


@dataclass
class DemoSummary:
    """What :func:`run_demo` did; :meth:`text` is what the CLI prints."""

    out: Path
    config: DemoConfig
    data_root: Path
    run_dir: Path
    report_dir: Path
    methods: list[str] = field(default_factory=list)
    trained: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    report_text: str = ""

    def text(self) -> str:
        """Human-readable summary: the tables, then where everything is."""
        lines = [self.report_text.rstrip(), ""]
        for name, why in self.skipped.items():
            lines.append(f"skipped {name}: {why}")
        for name, where in self.trained.items():
            lines.append(f"trained {name} ({', '.join(where)})")
        lines += [f"note: {m}" for m in self.messages]
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        lines += [f"demo finished in {sum(self.seconds.values()):.1f} s ({steps})",
                  f"data:    {self.data_root}", f"run:     {self.run_dir}",
                  f"tables:  {self.report_dir} ({', '.join(p.name for p in self.tables)})",
                  f"figures: {self.report_dir / 'figures'} "
                  f"({', '.join(p.name for p in self.figures) or 'none'})"]
        return "\n".join(lines)


def _prepare_out(out: Path, config: DemoConfig) -> None:
    """Create ``out`` or clear a previous demo's outputs; refuse foreign non-empty dirs."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} is a file; expected a directory for the demo")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UsageError(f"--out: {out} is not empty and holds no previous demo ({MARKER}); "
                         "pass a new or empty directory")
    for sub in ("checkpoints", "run"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps(asdict(config), indent=2) + "\n")


class _Timer:
    """Accumulates wall time per step into a dict."""

    def __init__(self, sink: dict[str, float], name: str) -> None:
        self.sink, self.name = sink, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.sink[self.name] = self.sink.get(self.name, 0.0) + time.perf_counter() - self.start


def _masks(root: Path, progress: bool) -> None:
    from .data.index import scan_tree
    from .data.masks import MaskCache

    paths = [p for rec in scan_tree(root, split="all") for p in rec.s2]
    workers = max(1, min(2, os.cpu_count() or 1))
    stats = MaskCache(root).precompute(paths, workers=workers, progress=progress)
    if stats.failed:
        path, why = stats.failed[0]
        raise CrbenchError(f"demo: {len(stats.failed)} cloud masks could not be computed "
                           f"(first: {path}: {why})")


def _train(name: str, root: Path, ckpts: Path, config: DemoConfig, device: str | None,
           progress: bool) -> list[str]:
    """Train ``name`` (tiny preset) once, and again per L if its checkpoint is tied to L.

    Returns:
        What was trained, e.g. ``["L=3"]`` or ``["L=3", "L=4", "L=5"]``.
    """
    from .registry import create_method, get_method_class

    cls = get_method_class(name)
    opts = {"steps": config.train_steps.get(name), "batch_size": config.train_batch.get(name),
            "device": device, "seed": config.seed, "progress": progress,
            "crop": config.train_crop}
    first, *others = config.seq_lens
    shared = ckpts / name
    cls(seq_len=first, preset="tiny").fit(root, shared, **opts)
    trained = [f"L={first}"]
    for L in others:
        try:
            create_method(name, checkpoint=shared, seq_len=L)
        except (CheckpointError, UsageError):  # tied to the L it was trained for
            cls(seq_len=L, preset="tiny").fit(root, shared / f"L{L}", **opts)
            trained.append(f"L={L}")
    if others and len(trained) == 1:
        trained = [f"L={first}, used for every L"]
    return trained


def run_demo(out: Path = DEFAULT_OUT, quick: bool = False, device: str | None = None,
             progress: bool = True, data: Path | None = None) -> DemoSummary:
    """Run the whole pipeline (module docstring) and return what it did.

    Args:
        out: output directory (created; a previous demo's outputs are replaced).
        quick: smaller everything (:data:`QUICK`) for a smoke test.
        device: torch device for training and evaluation (default CUDA if available).
        progress: progress bars on stderr.
        data: use this existing dataset tree instead of synthesizing one (its mask cache is
            filled as by ``crbench data masks``).

    Raises:
        UsageError: ``out`` is a foreign non-empty directory or a file.
    """
    from .report import build_report
    from .runner import RunConfig
    from .runner import run as run_methods
    from .synth import synthesize

    config = QUICK if quick else FULL
    out = Path(out)
    if data is not None and not Path(data).is_dir():
        raise UsageError(f"--data: {data} is not a directory; expected a SEN12MS-CR-TS tree "
                         "(or leave --data out to synthesize one)")
    _prepare_out(out, config)
    root = out / "data" if data is None else Path(data)
    ckpts, run_dir = out / "checkpoints", out / "run"
    summary = DemoSummary(out, config, root, run_dir, run_dir / "report")
    if data is None:
        with _Timer(summary.seconds, "synth"):
            synthesize(root, rois=config.rois, patches=config.patches, size=config.size,
                       seed=config.seed, progress=progress)
    with _Timer(summary.seconds, "masks"):
        _masks(root, progress)
    methods = list(BASELINES)
    with _Timer(summary.seconds, "train"):
        for name in LEARNED:
            try:
                summary.trained[name] = _train(name, root, ckpts, config, device, progress)
            except CrbenchError as exc:
                summary.skipped[name] = f"{type(exc).__name__}: {exc}"
            else:
                methods.append(name)
    summary.methods = methods
    with _Timer(summary.seconds, "run"):
        run_methods(RunConfig(data=root, methods=methods, seq_lens=config.seq_lens,
                              split="test", protocol=config.protocol, checkpoints=ckpts,
                              out=run_dir,
                              batch_size=config.batch_size, device=device,
                              save_predictions=True, seed=config.seed, progress=progress,
                              samples=config.samples))
    with _Timer(summary.seconds, "report"):
        report = build_report(run_dir, by_coverage=True, fmt="md", figures=True,
                              progress=progress)
    summary.tables, summary.figures = report.files, report.figures
    summary.messages, summary.report_text = report.messages, report.text()
    return summary
