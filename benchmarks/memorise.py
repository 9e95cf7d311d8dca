"""Memorisation speed: how many steps a model needs to fit a few hundred hands it trains on.

    python -m benchmarks memorise --models hm_resnet18,hm_resnet18_64,simcc_resnet18_64 --hands 512 --max-minutes 3

Each model trains from random weights on `hands` exact competition crops of the training split (no
augmentation, the modern recipe's AdamW and peak lr after a 50-step warm-up, batch 32, no EMA) and
every `eval_every` steps measures its mean joint error (EPE, crop px) on those same crops, in eval
mode. The row reports the steps (and images, seconds) until the train EPE first falls below
`threshold`, or that it did not within the step / time limit. A model that memorises slowly also
learns slowly from a small budget: the issue's diagnostic for "does the head learn at all".
"""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import torch

from lib import config, data, metrics, predict, train
from lib.models import create_model


def _epe(model: torch.nn.Module, crops: np.ndarray, kp: np.ndarray) -> float:
    """Mean joint error on the crops (no TTA), leaving the model in training mode."""
    pred = predict.predict(model, crops, flip=False, device="cpu", amp="off")
    model.train()
    return metrics.epe(pred, kp)


def memorise(name: str, crops: np.ndarray, kp: np.ndarray, vis: np.ndarray, threshold: float = 3.0,
             max_steps: int = 2000, max_minutes: float = 5.0, eval_every: int = 25, batch: int = 32,
             seed: int = 0, model_kwargs: dict | None = None) -> dict:
    """Train `name` on the crops until its EPE on them is below threshold (or a limit); one result row."""
    torch.manual_seed(seed)
    model = create_model(name, **(model_kwargs or {})).to(memory_format=torch.channels_last).train()
    recipe = config.RECIPES["modern"]
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    x = x.contiguous(memory_format=torch.channels_last)
    kp_t, vis_t = torch.from_numpy(kp).float(), torch.from_numpy(vis).float()
    rng = np.random.default_rng(seed)
    order, pos, step, reached, epe = rng.permutation(len(x)), 0, 0, None, float("nan")
    curve, t0 = [], time.perf_counter()
    while step < max_steps and time.perf_counter() - t0 < max_minutes * 60:
        if pos + batch > len(order):
            order, pos = rng.permutation(len(x)), 0
        idx = torch.from_numpy(order[pos:pos + batch])
        pos += batch
        for g in opt.param_groups:
            g["lr"] = recipe["lr"] * train.lr_factor(step, max_steps, 50, "constant")
        loss = model.loss(model(x[idx]), kp_t[idx], vis_t[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        last = step >= max_steps or time.perf_counter() - t0 >= max_minutes * 60
        if step % eval_every == 0 or last:
            epe = _epe(model, crops, kp)
            curve.append((step, epe))
            if epe < threshold:
                reached = step
                break
    seconds = time.perf_counter() - t0
    return {"model": name + (f" {model_kwargs}" if model_kwargs else ""), "hands": len(x),
            f"steps to EPE < {threshold:g} px": reached if reached is not None else f"> {step}",
            "images": str(reached * batch) if reached is not None else "",
            "train EPE at end (px)": round(epe, 2), "steps": step, "seconds": round(seconds),
            "curve": " ".join(f"{s}:{e:.1f}" for s, e in curve[:: max(1, len(curve) // 8)])}


def bench_memorise(models: list[str], hands: int = 512, threshold: float = 3.0, max_steps: int = 2000,
                   max_minutes: float = 5.0, data_dir: str = "auto", seed: int = 0) -> pd.DataFrame:
    """memorise() for each model on the same `hands` training crops (the cpu profile's data by default).
    A model entry may carry keyword arguments: NAME or NAME:JSON."""
    cfg = config.TrainConfig(model=models[0].split(":", 1)[0], profile="cpu", data_dir=data_dir,
                             limit_train=hands, seed=seed).resolved()
    files = data.find_data(cfg.data_dir)
    cache = data.build_cache(files.training)
    idx, _ = train.split_indices(files, cache, cfg)
    crops, kp, vis = cache.crop[idx], cache.kp[idx], cache.vis[idx]
    rows = []
    for entry in models:
        name, _, kw = entry.partition(":")
        row = memorise(name, crops, kp, vis, threshold, max_steps, max_minutes, seed=seed,
                       model_kwargs=json.loads(kw) if kw else None)
        print(row, flush=True)
        rows.append(row)
    return pd.DataFrame(rows)
