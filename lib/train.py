"""The one training loop, for every model: CPU, one GPU, or many through torchrun.

    python -m lib.train --model irv2 --recipe paper                  # the report's recipe
    python -m lib.train --model hm_resnet18 --recipe modern --profile cpu
    torchrun --nproc_per_node=8 -m lib.train --model irv2 --batch-size 1024
    python -m lib.train --model resnet34 --run myrun                 # resumes outputs/runs/myrun

A run lives in outputs/runs/NAME/: config.json (the resolved config), log.csv (one row per
epoch: train and validation loss, every metric of lib.metrics), last.pt and best.pt
(by validation kaggle_mse), all written atomically. Killing a run and starting it again with
the same name continues exactly where the last checkpoint left off.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from lib import augment as augment_lib
from lib import data, io, metrics, paths
from lib.models import create_model, list_models

REPO = paths.REPO
REPORT_EPOCHS = {"irv2": 108, "resnet34": 55, "cpm": 40, "inception_v3": 40}
MODERN_EPOCHS = 60

RECIPES: dict[str, dict] = {
    # the 2018 report: L2 loss, Adam 1e-4 fixed, batch 8, its augmentation and sliding-window sampler
    "paper": dict(optimizer="adam", lr=1e-4, weight_decay=0.0, schedule="constant", warmup_steps=0,
                  batch_size=8, augment="paper", sampler="window", ema=0.0, grad_clip=0.0),
    # what measurement showed best (see BENCHMARKS.md): AdamW, one-cycle cosine, EMA, modern augmentation
    "modern": dict(optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine", warmup_steps=100,
                   batch_size=32, augment="modern", sampler="shuffle", ema=0.998, grad_clip=5.0),
}
PROFILES: dict[str, dict] = {
    "full": dict(limit_train=None, limit_val=None, budget_minutes=None),  # GPU: the report's epochs
    "cpu": dict(limit_train=None, limit_val=256, budget_minutes=2.5),     # a 2-core machine: minutes
    "smoke": dict(limit_train=16, limit_val=8, batch_size=8, budget_minutes=None, epochs=1),  # tests: seconds
}


@dataclass
class TrainConfig:
    """Everything that defines a run; None means: take it from the recipe or the profile."""

    model: str = "resnet34"
    recipe: str = "modern"            # paper | modern
    profile: str = "auto"             # full | cpu | smoke | auto (full on CUDA, else cpu)
    data_dir: str = "auto"            # a dir with training.h5/testing.h5; auto: data/, else data/synthetic
    run: str | None = None            # run name; default <model>_<recipe>_<profile>
    out_dir: str | None = None        # default: outputs/runs (HANDJOINTS_OUTPUTS moves it)
    resume: bool = True               # continue an unfinished run of the same name
    epochs: int | None = None
    batch_size: int | None = None     # global batch (split across torchrun processes)
    lr: float | None = None           # default: the recipe's, scaled linearly with the batch size
    weight_decay: float | None = None
    optimizer: str | None = None      # adam | adamw
    schedule: str | None = None       # constant | cosine
    warmup_steps: int | None = None
    ema: float | None = None          # EMA decay of the weights, 0 = off
    grad_clip: float | None = None    # max gradient norm, 0 = off
    augment: str | None = None        # none | paper | modern
    sampler: str | None = None        # shuffle | window (the report's sliding window)
    budget_minutes: float | None = None  # wall-clock budget of the training steps (equal-time comparisons)
    limit_train: int | None = None
    limit_val: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    amp: str = "auto"                 # auto (bf16 on CUDA) | bf16 | fp16 | off
    channels_last: bool = True
    compile: bool = False
    workers: int | None = None        # DataLoader workers; default: CPU cores - 1 (0 on a 2-core box)
    model_kwargs: dict = field(default_factory=dict)

    def resolved(self) -> "TrainConfig":
        """A copy with every None filled from the recipe, the profile and the device."""
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe: expected one of {sorted(RECIPES)}, found {self.recipe!r}")
        if self.model not in list_models():
            raise ValueError(f"model: expected one of {list_models()}, found {self.model!r}")
        c = dataclasses.replace(self, model_kwargs=dict(self.model_kwargs))
        c.device = resolve_device(c.device)
        if c.profile == "auto":
            c.profile = "full" if c.device.startswith("cuda") else "cpu"
        if c.profile not in PROFILES:
            raise ValueError(f"profile: expected one of {sorted(PROFILES) + ['auto']}, found {c.profile!r}")
        recipe, profile = RECIPES[c.recipe], PROFILES[c.profile]
        base_batch = recipe["batch_size"]
        for k, v in {**recipe, **profile}.items():
            if getattr(c, k, None) is None:
                setattr(c, k, v)
        if c.epochs is None:
            c.epochs = REPORT_EPOCHS.get(c.model, MODERN_EPOCHS) if c.profile == "full" else 1000
        if self.lr is None and c.batch_size != base_batch and c.recipe != "paper":
            c.lr = recipe["lr"] * c.batch_size / base_batch
        if c.amp == "auto":
            c.amp = "bf16" if c.device.startswith("cuda") else "off"
        if c.workers is None:
            c.workers = 0 if (os.cpu_count() or 1) <= 2 else min(8, (os.cpu_count() or 1) - 1)
        c.data_dir = str(resolve_data_dir(c.data_dir))
        c.run = c.run or f"{c.model}_{c.recipe}_{c.profile}"
        return c


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available")
    return device


def resolve_data_dir(data_dir: str | os.PathLike) -> Path:
    """`auto`: the real competition files in data/ when present, else the synthetic default."""
    if str(data_dir) != "auto":
        data.find_data(data_dir)  # raises with instructions when missing
        return Path(data_dir)
    root = paths.data_root()
    for candidate in (root, root / "synthetic"):
        if (candidate / "training.h5").exists() and (candidate / "testing.h5").exists():
            return candidate
    raise FileNotFoundError(f"no competition files in {root} or {root / 'synthetic'}; {data.HOW_TO_GET}")


# --------------------------------------------------------------------------- distributed


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _setup_distributed(device: str) -> tuple[int, int, str]:
    rank, world, local = dist_info()
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
    return rank, world, device


# --------------------------------------------------------------------------- batches


class EpochBatches:
    """Batches of (index, sample seed) for one epoch, deterministic from (seed, epoch).

    Runs in the main process, so a persistent DataLoader sees `set_epoch` between epochs.
    Each torchrun process takes its share of every global batch; `skip` resumes mid-epoch.
    """

    def __init__(self, n: int, batch_size: int, kind: str, seed: int, rank: int = 0, world: int = 1):
        if batch_size > n:
            raise ValueError(f"batch_size: expected at most the {n} training samples, found {batch_size}")
        self.n, self.batch_size, self.kind, self.seed, self.rank, self.world = n, batch_size, kind, seed, rank, world
        self.window = augment_lib.SlidingWindowBatchSampler(n, batch_size, seed=seed) if kind == "window" else None
        if kind not in ("shuffle", "window"):
            raise ValueError(f"sampler: expected 'shuffle' or 'window', found {kind!r}")
        self.set_epoch(0)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        if self.window is not None:
            self.window.set_epoch(epoch)
            batches = [list(b) for b in self.window]
        else:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            nb = self.n // self.batch_size
            batches = [perm[i * self.batch_size : (i + 1) * self.batch_size].tolist() for i in range(nb)]
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches) - self.skip

    def __iter__(self):
        for step in range(self.skip, len(self.batches)):
            batch = self.batches[step]
            seeds = np.random.default_rng([self.seed, self.epoch, step]).integers(0, 2**31, len(batch))
            yield [(int(i), int(s)) for i, s in zip(batch, seeds)][self.rank :: self.world]


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict) -> None:
    with io.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, model_name: str | None = None) -> dict:
    """Load a checkpoint safely (weights_only); refuse a corrupt file or another model's."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means a bad file
        raise ValueError(f"{path}: not a readable checkpoint (corrupt or not ours): {e}") from e
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{path}: not a checkpoint of lib.train (expected keys 'model' and 'config')")
    found = state["config"].get("model")
    if model_name is not None and found != model_name:
        raise ValueError(f"{path}: a checkpoint of model {found!r}, expected {model_name!r}")
    return state


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def load_model(run_dir: str | os.PathLike, which: str = "best", device: str = "cpu") -> torch.nn.Module:
    """The trained model of a run (EMA weights when the run used EMA), in eval mode."""
    state = load_checkpoint(Path(run_dir) / f"{which}.pt")
    cfg = state["config"]
    model = create_model(cfg["model"], **cfg.get("model_kwargs", {}))
    model.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
    return model.to(device).eval()


# --------------------------------------------------------------------------- the loop


def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Linear warm-up (at most a tenth of the run, so short budgeted runs reach the peak), then
    constant or cosine down to 2% of the peak."""
    warmup = min(warmup, total // 10)
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))


def _to_input(batch: dict, device: str, channels_last: bool) -> torch.Tensor:
    x = batch["image"].to(device, non_blocking=True).float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: str, amp: str, channels_last: bool) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(mean loss, predictions, targets, visibility) over a loader of exact crops."""
    model.eval()
    losses, preds, gts, vis = [], [], [], []
    for batch in loader:
        x = _to_input(batch, device, channels_last)
        with torch.autocast(device.split(":")[0], dtype=_amp_dtype(amp), enabled=amp != "off"):
            out = model(x)
        kp, v = batch["kp"].to(device), batch["vis"].to(device)
        losses.append(float(model.loss({k: _f32(t) for k, t in out.items()}, kp, v)) * len(x))
        preds.append(out["kp"].float().cpu().numpy())
        gts.append(batch["kp"].numpy())
        vis.append(batch["vis"].numpy())
    n = sum(len(p) for p in preds)
    return sum(losses) / max(n, 1), np.concatenate(preds), np.concatenate(gts), np.concatenate(vis)


def _f32(t):
    if isinstance(t, torch.Tensor):
        return t.float()
    if isinstance(t, (list, tuple)):
        return type(t)(_f32(x) for x in t)
    return t


def _amp_dtype(amp: str) -> torch.dtype:
    return torch.float16 if amp == "fp16" else torch.bfloat16


def split_indices(files: data.DataPaths, cache: data.CropCache, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation cache indices of a resolved config: the saved split, then the profile's limits."""
    val_mask = data.load_or_make_split(files.root, cache.image_ids, data.fingerprint(files.training), cfg.val_fraction)
    train_idx, val_idx = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    if cfg.limit_train:  # fixed subsets: every run of a profile sees the same samples
        rng = np.random.default_rng([cfg.seed, 1])
        train_idx = np.sort(rng.choice(train_idx, min(cfg.limit_train, len(train_idx)), replace=False))
    if cfg.limit_val:
        rng = np.random.default_rng([cfg.seed, 2])
        val_idx = np.sort(rng.choice(val_idx, min(cfg.limit_val, len(val_idx)), replace=False))
    return train_idx, val_idx


def fit(cfg: TrainConfig | None = None, **overrides) -> Path:
    """Train (or resume, or return a finished run); returns the run directory."""
    return train_model(cfg, **overrides)[0]


def train_model(cfg: TrainConfig | None = None, **overrides) -> tuple[Path, torch.nn.Module]:
    """fit(), also returning this process's trained model (e.g. to compare torchrun ranks)."""
    from tqdm import tqdm

    cfg = (dataclasses.replace(cfg, **overrides) if cfg else TrainConfig(**overrides)).resolved()
    rank, world, device = _setup_distributed(cfg.device)
    is_main = rank == 0
    run_dir = Path(cfg.out_dir or paths.runs()) / cfg.run
    torch.manual_seed(cfg.seed)

    # data: the crop cache, the saved split, profile limits
    files = data.find_data(cfg.data_dir)
    if is_main:  # the main process builds the cache and the split; the others wait, then read them
        cache = data.build_cache(files.training)
        train_idx, val_idx = split_indices(files, cache, cfg)
    if world > 1:
        dist.barrier()
    if not is_main:
        cache = data.build_cache(files.training)
        train_idx, val_idx = split_indices(files, cache, cfg)
    train_ds = data.HandDataset(cache, train_idx, augment_lib.build(cfg.augment), cfg.seed)
    val_ds = data.HandDataset(cache, val_idx)
    batches = EpochBatches(len(train_ds), cfg.batch_size, cfg.sampler, cfg.seed, rank, world)
    loader_kw = dict(num_workers=cfg.workers, pin_memory=device.startswith("cuda"),
                     persistent_workers=cfg.workers > 0)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_sampler=batches, **loader_kw)
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=64, **loader_kw)

    # model, optimizer, EMA
    model = create_model(cfg.model, **cfg.model_kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(cfg.optimizer)
    if opt_cls is None:
        raise ValueError(f"optimizer: expected 'adam' or 'adamw', found {cfg.optimizer!r}")
    optimizer = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(enabled=cfg.amp == "fp16")
    ema = None
    if cfg.ema:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=cfg.ema, use_warmup=True)

    # resume
    state = {"epoch": 0, "step": 0, "skip": 0, "best_mse": float("inf"), "total_steps": None, "finished": False}
    last = run_dir / "last.pt"
    if cfg.resume and last.exists():
        ck = load_checkpoint(last, cfg.model)
        if ck["config"].get("recipe") != cfg.recipe:
            raise ValueError(f"{last}: a run with recipe {ck['config'].get('recipe')!r}; use another run name or resume=False")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        if ema is not None and ck.get("ema") is not None:
            ema.module.load_state_dict(ck["ema"])
        torch.set_rng_state(ck["torch_rng"])
        state.update(ck["state"])
        if state["finished"] and cfg.epochs <= ck["config"]["epochs"]:
            if is_main:
                print(f"{cfg.run}: finished run found in {run_dir}; nothing to train")
            return run_dir, model
        state["finished"] = False
        if is_main:
            print(f"{cfg.run}: resuming from epoch {state['epoch']} step {state['step']}")
    elif is_main:
        for stale in ("last.pt", "best.pt", "log.csv"):
            (run_dir / stale).unlink(missing_ok=True)
    if is_main:
        io.write_json(run_dir / "config.json", {**dataclasses.asdict(cfg), "world_size": world,
                                                 "torch": torch.__version__, "train_size": len(train_ds),
                                                 "val_size": len(val_ds)})
        io.save_npy(run_dir / "val_index.npy", val_idx)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[int(device.split(":")[1])] if device.startswith("cuda") else None)
    if cfg.compile:
        net = torch.compile(net)

    steps_per_epoch = len(batches.batches)
    total = state["total_steps"] or cfg.epochs * steps_per_epoch
    log_path = run_dir / "log.csv"
    history = pd.read_csv(log_path).to_dict("records") if log_path.exists() and state["epoch"] else []
    elapsed = float(state.get("elapsed", 0.0))
    calibrate_at = 6 if cfg.budget_minutes and state["total_steps"] is None else None

    for epoch in range(state["epoch"], cfg.epochs):
        batches.set_epoch(epoch, state["skip"])
        net.train()
        t_epoch, seen, loss_sum, t_cal = time.perf_counter(), 0, 0.0, None
        bar = tqdm(train_loader, desc=f"{cfg.run} epoch {epoch + 1}", disable=not is_main, leave=False,
                   mininterval=2.0, total=len(batches))
        stop = False
        for batch in bar:
            step = state["step"]
            for g in optimizer.param_groups:
                g["lr"] = cfg.lr * _lr_factor(step, total, cfg.warmup_steps, cfg.schedule)
            x = _to_input(batch, device, cfg.channels_last)
            kp, vis = batch["kp"].to(device, non_blocking=True), batch["vis"].to(device, non_blocking=True)
            with torch.autocast(device.split(":")[0], dtype=_amp_dtype(cfg.amp), enabled=cfg.amp != "off"):
                out = net(x)
            loss = model.loss({k: _f32(t) for k, t in out.items()}, kp, vis)
            check = loss.detach().clone()
            if world > 1:
                dist.all_reduce(check)
                check /= world
            if not torch.isfinite(check):
                raise FloatingPointError(
                    f"{cfg.run}: loss became {float(check)} at epoch {epoch + 1} step {step}; stopped. "
                    f"The last good checkpoint is {last if last.exists() else 'none (first epoch)'}; "
                    f"try a lower lr (now {cfg.lr}) or --grad-clip")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model, step=step)
            state["step"] += 1
            state["skip"] += 1
            seen += len(x) * world
            loss_sum += float(check) * len(x) * world
            dt = time.perf_counter() - t_epoch
            bar.set_postfix(loss=f"{float(check):.4g}", img_s=f"{seen / max(dt, 1e-9):.1f}", refresh=False)
            if calibrate_at is not None:  # time a few steps, then fix the schedule length to the budget
                if t_cal is None:
                    t_cal, s_cal = time.perf_counter(), state["step"]
                elif state["step"] - s_cal >= calibrate_at:
                    per_step = (time.perf_counter() - t_cal) / (state["step"] - s_cal)
                    budget_steps = int(cfg.budget_minutes * 60 / per_step)
                    total = max(state["step"] + 1, min(budget_steps, cfg.epochs * steps_per_epoch))
                    state["total_steps"], calibrate_at = total, None
                    if is_main:
                        print(f"{cfg.run}: {per_step * 1000:.0f} ms/step -> {total} steps "
                              f"({total / steps_per_epoch:.1f} epochs) in {cfg.budget_minutes} min", flush=True)
            if state["step"] >= total:
                stop = True
                break
        bar.close()
        epoch_time = time.perf_counter() - t_epoch
        elapsed += epoch_time
        finished_epoch = not stop or state["skip"] >= steps_per_epoch
        state["epoch"], state["skip"] = (epoch + 1, 0) if finished_epoch else (epoch, state["skip"])

        # validation, log, checkpoints (main process)
        if is_main:
            eval_model = ema.module if ema is not None else model
            val_loss, pred, gt, vis = evaluate(eval_model, val_loader, device, cfg.amp, cfg.channels_last)
            row = {"epoch": epoch + 1, "step": state["step"], "lr": optimizer.param_groups[0]["lr"],
                   "train_loss": loss_sum / max(seen, 1), "val_loss": val_loss,
                   **metrics.summary(pred, gt, vis), "img_s": seen / max(epoch_time, 1e-9),
                   "epoch_s": epoch_time, "elapsed_s": elapsed}
            history.append(row)
            best = row["kaggle_mse"] < state["best_mse"]
            state["best_mse"] = min(state["best_mse"], row["kaggle_mse"])
            state["finished"] = stop or epoch + 1 >= cfg.epochs
            state["elapsed"] = elapsed
            ck = {"model": model.state_dict(), "ema": ema.module.state_dict() if ema is not None else None,
                  "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                  "torch_rng": torch.get_rng_state(), "state": dict(state),
                  "config": dataclasses.asdict(cfg)}
            if best:  # weights only: resuming reads last.pt, so best.pt leaves out the optimizer state
                save_checkpoint(run_dir / "best.pt", {k: v for k, v in ck.items() if k not in ("optimizer", "scaler")})
            save_checkpoint(last, ck)
            with io.atomic_open(log_path, "w", newline="") as f:
                pd.DataFrame(history).to_csv(f, index=False)
            print(f"{cfg.run} epoch {epoch + 1}: train_loss {row['train_loss']:.4g} val_loss {val_loss:.4g} "
                  f"kaggle_mse {row['kaggle_mse']:.3f} epe {row['epe']:.3f} pck@2px {row['pck@2px']:.3f} "
                  f"{row['img_s']:.1f} img/s{' *best' if best else ''}", flush=True)
        if world > 1:
            dist.barrier()
        if stop:
            break
    if world > 1:
        dist.destroy_process_group()
    return run_dir, model


def history(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The per-epoch log of a run."""
    return pd.read_csv(Path(run_dir) / "log.csv")


def _parse(argv: list[str] | None) -> TrainConfig:
    ap = argparse.ArgumentParser(prog="python -m lib.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "model_kwargs":
            ap.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON dict for create_model")
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = {int: int, float: float}.get(type(default), str)
            if default is None:
                kind = float if f.name in ("lr", "weight_decay", "ema", "grad_clip", "budget_minutes") else \
                    int if f.name in ("epochs", "batch_size", "warmup_steps", "limit_train", "limit_val", "workers") else str
            ap.add_argument(flag, type=kind, default=default)
    return TrainConfig(**vars(ap.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    cfg = _parse(argv)
    try:
        run_dir = fit(cfg)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if dist_info()[0] == 0:
        print(f"run: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
