"""The real training loop's speed against the model alone (python -m benchmarks loop).

Per (model, recipe, variant): lib.train.Trainer on the crop cache, with the recipe's augmentation,
DataLoader, deferred pixel ops, loss, clipping, optimizer and EMA, timed over one epoch of `steps`
batches after a warm-up epoch (workers started, cuDNN's kernels chosen, the CUDA graph captured):
loop img/s from the epoch's first batch on, and apart from it the epoch's start (the workers
refilling their queues), which a short epoch here pays far more often than a full-data epoch.
Then, unless breakdown=False, one more epoch with the device synchronised at every phase end of a
step: where the time goes (slower in total than the lean epoch, which never waits for the device).
"""
from __future__ import annotations

import tempfile
import time
from collections import defaultdict

import pandas as pd
import torch

from benchmarks import speed
from lib.config import RECIPES, REPORT_EPOCHS, REPORT_TRAIN_HANDS, TrainConfig, ensure_data


class PhaseTimer:
    """Trainer.timer: seconds per phase of a step, the device synchronised at each phase end."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.sums: dict[str, float] = defaultdict(float)
        self.last: float | None = None

    def __call__(self, phase: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self.last is not None:
            self.sums[phase] += now - self.last
        self.last = now


def report_minutes(model: str, img_s: float) -> float:
    """Minutes for `model`'s report epochs (lib.config.REPORT_EPOCHS) of the competition's training
    hands at `img_s` training images per second."""
    return REPORT_TRAIN_HANDS * REPORT_EPOCHS[model] / img_s / 60


def report_total(df: pd.DataFrame) -> str:
    """The four report models at report epochs from their fastest `paper` rows, as a sentence ('' when
    a model has no row)."""
    if "report epochs (min)" not in df:
        return ""
    fastest = df.dropna(subset=["report epochs (min)"]).groupby("model")["report epochs (min)"].min()
    if set(fastest.index) != set(REPORT_EPOCHS):
        return ""
    parts = ", ".join(f"{m} {e} epochs {fastest[m]:.0f} min" for m, e in REPORT_EPOCHS.items())
    return (f"the four report models at report epochs of {REPORT_TRAIN_HANDS:,} hands, from their fastest rows: "
            f"{fastest.sum():.0f} min in all ({parts}); the target is under 60")


def read_rows(path: str | None) -> pd.DataFrame | None:
    """The rows a `loop --csv` file holds (None when there is no such file)."""
    from pathlib import Path
    return pd.read_csv(path) if path and Path(path).exists() else None


def write_rows(path: str, df: pd.DataFrame) -> None:
    """`loop --csv`: the rows, written atomically (a killed call leaves the earlier rows)."""
    from lib.io import atomic_open
    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        df.to_csv(f, index=False)


def bench_loop(models: list[str], recipes: tuple[str, ...] = ("modern",), batch: int | None = None,
               steps: int | None = None, device: str = "auto", workers: int | None = None,
               graphs: tuple[bool, ...] = (False,), pixel_ops: str = "auto", data_dir: str = "auto",
               profile: str = "auto", breakdown: bool = True, warp_on_device: bool | None = None,
               progress=None, compile: bool = False, cache_on_device: bool | None = None,
               amps: tuple[str, ...] = ("auto",)) -> pd.DataFrame:
    """One row per (model, recipe, amp, CUDA graph off/on): loop img/s, model-only img/s, their ratio,
    host syncs per step, and (breakdown) milliseconds per step in each phase; `progress(table so
    far)` after each row."""
    from lib.config import resolve_amp, resolve_device
    from lib.train import Trainer

    device = resolve_device(device)
    cuda = device.startswith("cuda")
    steps = steps or (50 if cuda else 5)
    data_dir = str(ensure_data(data_dir, profile))
    rows, model_only = [], {}
    for model in models:
        for recipe, amp in ((r, resolve_amp(a, device)) for r in recipes for a in amps):
            b = batch or RECIPES[recipe]["batch_size"]
            if (model, b, amp) not in model_only:
                model_only[(model, b, amp)] = speed.bench_one_model(model, b, steps, device, amp)  # eager
            for graph in graphs:
                print(f"loop: {model} {recipe} batch {b} {amp}{' cuda graph' if graph else ''} ...", flush=True)
                with tempfile.TemporaryDirectory() as tmp:
                    cfg = TrainConfig(model=model, recipe=recipe, data_dir=data_dir, device=device, batch_size=b,
                                      limit_train=b * steps, limit_val=64, epochs=1000, run="loop", out_dir=tmp,
                                      resume=False, workers=workers, cuda_graph=graph, pixel_ops=pixel_ops,
                                      warp_on_device=warp_on_device, profile=profile, compile=compile,
                                      cache_on_device=cache_on_device, amp=amp)
                    trainer, alone = Trainer(cfg), model_only[(model, b, amp)]
                    trainer.time_epoch(0)  # warm-up
                    lean = trainer.time_epoch(1)
                    row = {"model": model, "recipe": recipe, "batch": b, "amp": trainer.cfg.amp, "cuda graph": graph,
                           "compile": compile,
                           "pixel ops": trainer.cfg.pixel_ops + (" + warp" if trainer.cfg.warp_on_device else "")
                           + (" + images on the device" if trainer.cfg.cache_on_device else ""),
                           "workers": "none: drawn" if trainer.cfg.cache_on_device else trainer.cfg.workers,
                           "loop img/s": lean["steady_img_s"], "model-only img/s": alone["train img/s"],
                           "loop / model": lean["steady_img_s"] / alone["train img/s"],
                           "epoch start (ms)": 1e3 * lean["start_s"], "with the start img/s": lean["img_s"],
                           "host syncs / step": lean["syncs"] / steps, "ms / step": 1e3 * lean["seconds"] / steps,
                           # the host's time inside the steps (nothing there waits for the device): with the
                           # graph, near "ms / step" when the device waits for the host (eagerly a full launch
                           # queue blocks inside the step too)
                           "host ms / step": 1e3 * lean["step_s"] / steps,
                           "graph capture (s)": trainer.graph.capture_s if trainer.graph else None,
                           "input in the graph": trainer.graph.with_input if trainer.graph else None,
                           # the eager model alone's ops per step; in a graph ~one kernel each (compiled: fewer)
                           "model ops / step": alone["ops / train step"],
                           "µs / op": (1e6 * b / lean["steady_img_s"] / alone["ops / train step"]
                                       if alone["ops / train step"] else None)}
                    if recipe == "paper" and model in REPORT_EPOCHS:  # the report's run at this rate
                        row["report epochs (min)"] = report_minutes(model, lean["steady_img_s"])
                    if breakdown:
                        trainer.timer = timer = PhaseTimer(device)
                        trainer.time_epoch(2)
                        row.update({f"{phase} (ms)": 1e3 * s / steps for phase, s in timer.sums.items()})
                    trainer.close()
                    del trainer
                print(f"loop: {row['loop img/s']:.0f} img/s = {row['loop / model']:.2f} x the model alone", flush=True)
                rows.append(row)
                if progress:
                    progress(pd.DataFrame(rows))
                if cuda:
                    torch.cuda.empty_cache()
    return pd.DataFrame(rows)
