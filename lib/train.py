"""The one training loop, for every model: CPU, one GPU, or many through torchrun.

    python -m lib.train --model irv2 --recipe paper                  # the report's recipe
    python -m lib.train --model hm_resnet18 --recipe modern --profile cpu
    torchrun --nproc_per_node=8 -m lib.train --model irv2 --batch-size 1024
    python -m lib.train --model resnet34 --run myrun                 # resumes outputs/runs/myrun

What a run is made of (TrainConfig, recipes, profiles, data, device) is lib.config; where its
files go (config.json, log.csv, last.pt, best.pt, ...) is lib.runs. Killing a run and starting
it again with the same name continues exactly where the last checkpoint left off.

The step is lean: nothing in it waits for the GPU (the loss is summed on the device and read
every --check-every steps; a NaN is still named at its step), the optimizer is fused, and on one
GPU the whole step is one CUDA graph replayed per batch (--no-cuda-graph: eagerly). `python -m benchmarks loop`
measures it against the model alone.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import copy
import dataclasses
import json
import math
import os
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from lib import augment, cli, data, metrics, paths
from lib.config import TrainConfig, autocast, ensure_data, keep_freed_memory, resolve_device, resolve_profile
from lib.models import compile_model, create_model, drop_batchnorm_counters, list_models
from lib.runs import Run, labels_fingerprint
from lib.samplers import EpochBatches

REPO = paths.REPO
CALIBRATION_STEPS = 6  # steps timed before a wall-clock budget fixes the schedule length


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


# --------------------------------------------------------------------------- pieces of a step


def lr_factor(step: int, total: int, warmup: int, schedule: str, progress: float | None = None) -> float:
    """Linear warm-up (at most a tenth of the run, so short budgeted runs reach the peak), then
    constant or cosine down to 2% of the peak. `progress` (0..1) replaces step / total, e.g. the
    share of a wall-clock budget spent."""
    warmup = min(warmup, total // 10)
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if progress is None:
        progress = (step - warmup) / max(1, total - warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def to_input(batch: dict, device: str, channels_last: bool, compiled: bool = False,
             images: data.DeviceImages | None = None) -> torch.Tensor:
    """The uint8 image batch as float input on the device, after its deferred pixel ops if it has
    them (`--pixel-ops device`: lib.augment.apply_pixels on the device; `compiled`: through torch.compile).
    A batch without images (`--cache-on-device`) takes them from `images` by index."""
    return assemble(stage(batch, device), channels_last, compiled, images)


def stage(batch: dict, device: str, out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The batch's input on the device, copied without waiting: its images (or their cache rows,
    `index` and `exact`), the pixel-op parameters and their noise, drawn from the batch's noise
    seed read on the host. `assemble` makes the model's input of it: a CUDA graph holds that part,
    and stages each batch into its own tensors (`out`: written in place and returned)."""
    keys = [k for k in (("image", "pixel") if "image" in batch else ("index", "exact", "pixel")) if k in batch]
    if out is None:
        out = {k: batch[k].to(device, non_blocking=True) for k in keys}
    else:
        for k in keys:
            out[k].copy_(batch[k], non_blocking=True)
    if "pixel" in batch:
        shape = batch["image"].shape if "image" in batch else (len(batch["index"]), 3, data.CTX_SIZE, data.CTX_SIZE)
        out["noise"] = augment.pixel_noise(shape, augment.batch_noise_seed(batch["pixel"]), device, out=out.get("noise"))
    return out


def assemble(staged: dict[str, torch.Tensor], channels_last: bool, compiled: bool = False,
             images: data.DeviceImages | None = None) -> torch.Tensor:
    """The model's float input from a staged batch (`stage`), on the device only: the images (gathered
    from `images` by index with `--cache-on-device`), then the warp and pixel ops when the batch has them."""
    x = staged["image"] if "image" in staged else images.batch(staged["index"], staged["exact"])
    if "pixel" in staged:
        x = augment.apply_pixels(x, staged["pixel"], compiled=compiled, noise=staged["noise"])
    else:
        x = x.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def cpu_copy(obj):
    """A nested checkpoint (dicts, lists, tuples) with every tensor copied to the CPU; a state dict
    keeps its type and version metadata."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = type(obj)((k, cpu_copy(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: str, amp: str, channels_last: bool) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(mean loss, predictions, targets, visibility) over a loader of exact crops."""
    model.eval()
    losses, preds, gts, vis = [], [], [], []
    for batch in loader:
        x = to_input(batch, device, channels_last)
        with autocast(device, amp):
            out = model(x)
        losses.append(float(model.loss(out, batch["kp"].to(device), batch["vis"].to(device))) * len(x))
        preds.append(out["kp"].float().cpu().numpy())
        gts.append(batch["kp"].numpy())
        vis.append(batch["vis"].numpy())
    n = sum(len(p) for p in preds)
    return sum(losses) / max(n, 1), np.concatenate(preds), np.concatenate(gts), np.concatenate(vis)


def split_indices(files: data.DataPaths, cache: data.CropCache, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation cache indices of a resolved config: the saved split, then the profile's limits."""
    val_mask = data.load_or_make_split(files.root, cache.image_ids, data.fingerprint(files.training), cfg.val_fraction)
    train_idx, val_idx = np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    # fixed subsets, not drawn with the run's seed: every run of a profile, whatever its seed, trains
    # and validates on the same samples (runs of other seeds compare, and ensemble, on one validation set)
    if cfg.limit_train:
        rng = np.random.default_rng([0, 1])
        train_idx = np.sort(rng.choice(train_idx, min(cfg.limit_train, len(train_idx)), replace=False))
    if cfg.limit_val:
        rng = np.random.default_rng([0, 2])
        val_idx = np.sort(rng.choice(val_idx, min(cfg.limit_val, len(val_idx)), replace=False))
    return train_idx, val_idx


# --------------------------------------------------------------------------- the lean step


class LossMeter:
    """The training loss summed on the device and read with one host synchronisation when asked,
    so a step never waits for the GPU. It also keeps the first non-finite loss (step and value)."""

    def __init__(self, device: str):
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # [this epoch, since the last curve point]
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_value = torch.zeros((), dtype=torch.float32, device=device)

    def add(self, loss: torch.Tensor, weight: float, step: int) -> None:
        """Queue (no sync): sums += loss * weight; remember `step` if this is the first non-finite loss."""
        loss = loss.detach().float()
        self.sums += loss.double() * weight
        new = (self.bad_step < 0) & ~torch.isfinite(loss)
        self.bad_step = torch.where(new, step, self.bad_step)
        self.bad_value = torch.where(new, loss, self.bad_value)

    def read(self, world: int = 1) -> tuple[float, float, int, float]:
        """(epoch sum, sum since the last curve point, first bad step or -1, its loss), summed over
        torchrun processes (the bad step: the largest)."""
        sums, bad = self.sums.clone(), self.bad_step.clone()
        if world > 1:
            dist.all_reduce(sums)
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        epoch, since = sums.tolist()
        return epoch, since, int(bad), float(self.bad_value)


class LeanEma:
    """timm's ModelEmaV3 (decay warm-up, foreach lerp) over tensor lists gathered once, instead of
    two state_dict() calls per step (~1 ms of Python for the deeper models)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        from timm.utils import ModelEmaV3

        self.timm = ModelEmaV3(model, decay=decay, use_warmup=True)
        self.module = self.timm.module
        self.pairs: tuple[list, list, list, list] | None = None

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        if self.pairs is None:  # BatchNorm's counters left out: unread, and dropped in training (state dicts hold 0)
            ema, live = ([v for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")]
                         for m in (self.module, model))
            fl = [i for i, t in enumerate(ema) if t.is_floating_point()]
            other = [i for i, t in enumerate(ema) if not t.is_floating_point()]
            self.pairs = ([ema[i] for i in fl], [live[i] for i in fl], [ema[i] for i in other], [live[i] for i in other])
        ema_f, live_f, ema_o, live_o = self.pairs
        torch._foreach_lerp_(ema_f, live_f, 1.0 - self.timm.get_decay(step))
        if ema_o:
            torch._foreach_copy_(ema_o, live_o)


def optimizer_state_across_layouts(model: torch.nn.Module, weights: dict, opt_state: dict) -> dict | None:
    """The optimizer state of a run saved in an older layout of `model` (layers since fused or renamed,
    which its loading hooks map, e.g. Inception-v3's FusedHeads), for `model`'s parameters: each
    per-parameter tensor (Adam's moments) goes where loading puts that parameter's weight. `weights`
    and `opt_state` are that run's model and optimizer state dicts (one parameter group). None where
    they do not pair up (then the run cannot be resumed)."""
    groups, state = opt_state.get("param_groups", []), opt_state.get("state", {})
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    names = [k for k in weights if not k.endswith(buffers)]  # the old parameters, in their order
    if not names or len(groups) != 1 or groups[0]["params"] != list(range(len(names))) \
            or set(state) != set(range(len(names))):
        return None
    per_param = [k for k, v in state[0].items() if torch.is_tensor(v) and v.shape == weights[names[0]].shape]
    if not per_param or any(state[i][k].shape != weights[n].shape for i, n in enumerate(names) for k in per_param):
        return None
    mapped = {}
    for key in per_param:
        twin = copy.deepcopy(model)
        try:
            twin.load_state_dict({**weights, **{n: state[i][key] for i, n in enumerate(names)}})
        except (RuntimeError, KeyError):
            return None
        mapped[key] = [p.detach() for p in twin.parameters()]
    n = len(mapped[per_param[0]])
    shared = {k: v for k, v in state[0].items() if k not in per_param}  # e.g. Adam's step, the same for all
    own = lambda v: v.clone() if torch.is_tensor(v) else v  # noqa: E731 (a fused optimizer adds to each step in place)
    return {"state": {i: {**{k: own(v) for k, v in shared.items()}, **{k: mapped[k][i] for k in per_param}}
                      for i in range(n)},
            "param_groups": [{**groups[0], "params": list(range(n))}]}


class GraphStep:
    """The whole optimisation step (the input's gather, warp and pixel ops, forward, loss, backward,
    clipping, optimizer) as one CUDA graph, replayed per batch: small batches stop paying a kernel
    launch per layer and per pixel op from Python (at batch 32 the input alone is ~250 ops).

    Captured on the first batch (after 3 warm-up steps whose effect on weights, BatchNorm statistics
    and optimizer state is undone, also when the capture fails); the learning rate is a device
    tensor filled each step; each batch is staged straight into the graph's own tensors (`stage`).
    with_input=False: the input is assembled eagerly and only the step is in the graph (the fallback
    when the input's capture fails). A batch of another size (the window sampler's last) runs eagerly."""

    WARMUP = 3

    def __init__(self, trainer: "Trainer", net: torch.nn.Module, batch: dict, with_input: bool = True):
        start = time.perf_counter()
        # a weak reference: no trainer <-> graph cycle, so a dropped trainer goes at once (with its workers)
        self.trainer, self.net, self.model, self.opt = weakref.proxy(trainer), net, trainer.model, trainer.optimizer
        self.with_input = with_input
        for g in self.opt.param_groups:
            g["lr"] = torch.tensor(float(g["lr"]), device=trainer.device)
        self.spec = {k: (v.shape, v.dtype) for k, v in batch.items() if torch.is_tensor(v)}
        staged = stage(batch, trainer.device)
        self.inputs = staged if with_input else {"x": self._assemble(staged)}
        self.kp, self.vis = batch["kp"].to(trainer.device), batch["vis"].to(trainer.device)
        saved = {k: v.detach().clone() for k, v in self._state().items()}
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP):
                    self._body()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):  # DataLoader threads go on
                self.loss = self._body()
        finally:
            with torch.no_grad():  # undo the warm-up; optimizer state it created starts at zero, as Adam's does
                for k, v in self._state().items():
                    v.copy_(saved[k]) if k in saved else v.zero_()
        torch.cuda.synchronize()
        self.capture_s = time.perf_counter() - start
        what = "step" if with_input else "step (the input eagerly)"
        trainer._say(f"{trainer.cfg.run}: CUDA graph of the {what} captured in {self.capture_s:.1f} s")

    def _state(self) -> dict[tuple, torch.Tensor]:
        """Everything a step changes: weights, buffers, optimizer moments and step counts."""
        out = {("w", i): t for i, t in enumerate([*self.model.parameters(), *self.model.buffers()])}
        for i, p in enumerate(self.model.parameters()):
            out.update({("opt", i, k): v for k, v in self.opt.state.get(p, {}).items() if torch.is_tensor(v)})
        return out

    def _assemble(self, staged: dict[str, torch.Tensor]) -> torch.Tensor:
        t = self.trainer
        return assemble(staged, t.cfg.channels_last, t.cfg.pixel_ops == "compiled", t.images)

    def _body(self) -> torch.Tensor:
        """The trainer's own input and step on the graph's tensors (its gradients land in the graph's memory)."""
        x = self._assemble(self.inputs) if self.with_input else self.inputs["x"]
        return self.trainer._update(self.net, x, self.kp, self.vis, capturing=True).detach()

    def fits(self, batch: dict) -> bool:
        """A batch of the captured one's fields, shapes and types."""
        return {k: (v.shape, v.dtype) for k, v in batch.items() if torch.is_tensor(v)} == self.spec

    def __call__(self, batch: dict, mark=None) -> torch.Tensor:
        """One step on this batch (the learning rate: its tensor, filled by the trainer)."""
        mark = mark or (lambda phase: None)
        if self.with_input:
            stage(batch, self.trainer.device, out=self.inputs)
        else:
            self.inputs["x"].copy_(self._assemble(stage(batch, self.trainer.device)))
        self.kp.copy_(batch["kp"], non_blocking=True)
        self.vis.copy_(batch["vis"], non_blocking=True)
        ops = self.with_input and "pixel" in self.inputs  # the pixel ops in the graph: phases named so
        mark("to device" if ops else "to device + pixel ops")
        self.graph.replay()
        mark("pixel ops + forward + backward + optimizer (graph)" if ops else "forward + backward + optimizer (graph)")
        return self.loss


# --------------------------------------------------------------------------- the loop


class Trainer:
    """One run of the loop, in named steps: data, model, resume, step, end of epoch.

    `Trainer(cfg).fit()` is `lib.train.fit`; the steps are methods so a notebook can look inside.
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg = cfg.resolved()
        self.rank, self.world, self.device = _setup_distributed(cfg.device)
        if self.device == "cpu":
            keep_freed_memory()  # ~10 % of an fp32 CPU step went to faulting in the memory the last one freed
        self.is_main = self.rank == 0
        if cfg.cuda_graph is None:  # auto (CUDA, no fp16): one process replays a graph; torchrun's do not
            cfg.cuda_graph = self.world == 1
        self.run = Run(Path(cfg.out_dir or paths.runs()) / cfg.run)
        self.state = {"epoch": 0, "step": 0, "skip": 0, "best_mse": float("inf"), "total_steps": None,
                      "finished": False}
        self.history: list[dict] = []
        self.curve: list[dict] = []  # every validation: the learning curve (curve.csv)
        self.paused = 0.0            # seconds spent validating inside epochs, left out of training time
        self.since_n, self.since_loss = 0, float("nan")  # training images / mean loss since the last curve point
        self.syncs = 0               # host synchronisations of the loop (lean: one per check_every steps)
        self.lr_now = 0.0
        self.graph: GraphStep | bool | None = None  # None: not tried yet; False: its capture failed
        self.writer, self.pending = None, None  # the end-of-epoch files are written behind the next epoch
        self.timer = None            # a callable(phase) marking the end of each phase of a step (lib.bench loop)
        torch.manual_seed(cfg.seed)
        self._build_data()
        self._build_model()

    # ---------------------------------------------------------------- setup
    def _build_data(self) -> None:
        """The crop cache and the saved split (built by the main process, read by the others), loaders."""
        cfg = self.cfg
        files = data.find_data(cfg.data_dir)
        if self.is_main:
            cache = data.build_cache(files.training)
            train_idx, self.val_idx = split_indices(files, cache, cfg)
        if self.world > 1:
            dist.barrier()
        if not self.is_main:
            cache = data.build_cache(files.training)
            train_idx, self.val_idx = split_indices(files, cache, cfg)
        self.labels = labels_fingerprint(cache.kp, cache.vis)
        if cfg.cache_on_device is None:  # auto (CUDA, warp on the device): the images there when they fit easily
            cfg.cache_on_device = data.DeviceImages.fits(cache, self.device, share=0.5)
        deferred = {"defer_pixels": True, "defer_warp": cfg.warp_on_device} if cfg.pixels_on_device else {}
        self.train_ds = data.HandDataset(cache, train_idx, augment.build(cfg.augment, **deferred), cfg.seed)
        self.images = data.DeviceImages(cache, self.device) if cfg.cache_on_device else None
        self.val_ds = data.HandDataset(cache, self.val_idx)
        self.batches = EpochBatches(len(self.train_ds), cfg.batch_size, cfg.sampler, cfg.seed, self.rank, self.world)
        self.whole_batch = len(range(self.rank, cfg.batch_size, self.world))  # this process's share of a whole batch
        if cfg.augment != "none" and cfg.augment_ramp > 0:  # weak early, strong late: exact crops first
            self.batches.aug_share = lambda step: min(1.0, step / max(1.0, cfg.augment_ramp * self.total))
        kw = dict(num_workers=cfg.workers, pin_memory=self.device.startswith("cuda"), persistent_workers=cfg.workers > 0,
                  worker_init_fn=data.worker_init if cfg.workers else None,
                  prefetch_factor=4 if cfg.workers else None)  # small steps: keep batches queued
        if cfg.cache_on_device:  # the images are on the device: the main process draws the rest, no workers
            self.train_loader = data.DrawnBatches(cache, train_idx, self.train_ds.augment, self.batches,
                                                  pin=self.device.startswith("cuda"))
        else:
            self.train_loader = torch.utils.data.DataLoader(self.train_ds, batch_sampler=self.batches, **kw)
        self.val_loader = torch.utils.data.DataLoader(self.val_ds, batch_size=64, **kw)

    def _build_model(self) -> None:
        """Model (channels-last), optimizer, gradient scaler and EMA."""
        cfg = self.cfg
        # without BatchNorm's step counters: one kernel per layer and step less, the same state dicts
        self.model = drop_batchnorm_counters(create_model(cfg.model, **cfg.model_kwargs)).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]  # checked by resolved()
        # fused: one kernel for all weights (CPU too: ~4x faster than foreach there); capturable for CUDA graphs
        self.optimizer = opt_cls(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True,
                                 capturable=cfg.cuda_graph)
        self.scaler = torch.amp.GradScaler(enabled=cfg.amp == "fp16")
        self.ema = LeanEma(self.model, cfg.ema) if cfg.ema else None
        self.meter = LossMeter(self.device)
        if self.device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels

    def _resume(self) -> bool:
        """Continue from last.pt when there is one (True: that run had finished); else start afresh,
        removing every file of an earlier run of this name."""
        cfg, run = self.cfg, self.run
        if not (cfg.resume and run.has_checkpoint("last")):
            if self.is_main:
                run.clear()
            return False
        ck = run.load_checkpoint("last", cfg.model)
        before = ck["config"]
        if before.get("recipe") != cfg.recipe:
            raise ValueError(f"{run.checkpoint_path('last')}: a run with recipe {before.get('recipe')!r}; "
                             f"use another run name or --no-resume")
        if before.get("labels", self.labels) != self.labels:
            raise ValueError(f"{run.checkpoint_path('last')}: trained on other hands than {cfg.data_dir} holds now "
                             f"(labels {before.get('labels')} then, {self.labels} now: the training file changed); "
                             f"use the original data, another run name, or --no-resume")
        self.model.load_state_dict(ck["model"])
        self.state.update(ck["state"])
        # the log as of the checkpoint: a kill between writing last.pt and log.csv loses no row
        self.curve = list(ck.get("curve", []))
        if "history" in ck:
            self.history = list(ck["history"])
        else:  # checkpoints from before the history was kept inside
            log = run.history()
            self.history = log[log["step"] <= self.state["step"]].to_dict("records") if len(log) else []
        if self.state["finished"] and cfg.epochs <= before["epochs"]:  # the rest is only for training on
            self._say(f"{cfg.run}: finished run found in {run.dir}; nothing to train")
            return True
        # the groups' setup flags are this run's: loading would set those of the saved run (capturable=False
        # from an eager one: no CUDA graph here; True from a graph's: a slower eager step)
        setup = {k: v for k, v in self.optimizer.param_groups[0].items() if k in ("fused", "foreach", "capturable")}
        saved = {**ck["optimizer"], "param_groups": [{**g, **setup} for g in ck["optimizer"]["param_groups"]]}
        try:
            self.optimizer.load_state_dict(saved)
        except ValueError as e:  # e.g. a run saved before its model's layers were fused (its weights still load)
            mapped = optimizer_state_across_layouts(self.model, ck["model"], saved)
            if mapped is None:
                raise ValueError(f"{run.checkpoint_path('last')}: its optimizer state does not fit {cfg.model}'s "
                                 f"parameters of now ({e}); the model's layout changed since this run was saved: use "
                                 f"--no-resume or another run name") from None
            self.optimizer.load_state_dict(mapped)
            self._say(f"{cfg.run}: the run was saved in an older layout of {cfg.model}; its optimizer state was "
                      f"mapped onto the layers of now")
        if ck["scaler"]:  # empty when that run had no fp16 (a run resumed in fp16 starts a fresh scale)
            self.scaler.load_state_dict(ck["scaler"])
        if self.ema is not None:  # a run saved without an EMA starts it from its weights, not from random ones
            self.ema.module.load_state_dict(ck["ema"] if ck.get("ema") is not None else ck["model"])
        for g in self.optimizer.param_groups:  # a CUDA graph's run saved it as a tensor; GraphStep makes it one again
            g["lr"] = float(g["lr"])
        torch.set_rng_state(ck["torch_rng"])
        self.state["finished"] = False
        self._say(f"{cfg.run}: resuming from epoch {self.state['epoch']} step {self.state['step']}")
        return False

    def _clock(self) -> float:
        """Training time: wall-clock seconds without the validations inside epochs."""
        return time.perf_counter() - self.paused

    def _validate(self) -> tuple[dict, float]:
        """Validate the model that gets saved (EMA when kept): (its metrics, val loss)."""
        cfg = self.cfg
        model = self.ema.module if self.ema is not None else self.model
        val_loss, pred, gt, vis = evaluate(model, self.val_loader, self.device, cfg.amp, cfg.channels_last)
        return metrics.summary(pred, gt, vis), val_loss

    def _curve_point(self, scores: dict, elapsed: float) -> dict:
        """A learning-curve row for the current step (replacing one of the same step), with the
        training loss since the previous row (read by every process just before: _read_loss(since=True))."""
        state = self.state
        row = {"step": state["step"], "images": state["step"] * self.cfg.batch_size, "elapsed_s": elapsed,
               "lr": self.lr_now, "train_loss": self.since_loss,
               **{k: scores[k] for k in ("kaggle_mse", "epe", "pck@2px")}}
        if self.curve and self.curve[-1]["step"] == row["step"]:
            self.curve.pop()
        self.curve.append(row)
        return row

    def _say(self, text: str) -> None:
        if self.is_main:
            print(text, flush=True)

    # ---------------------------------------------------------------- training
    def _step(self, net: torch.nn.Module, batch: dict, lr: float) -> int:
        """One optimisation step at learning rate lr; returns the global batch size.

        Lean: nothing here waits for the device. The loss goes into self.meter, which the loop reads
        (one host synchronisation) every check_every steps and at the end of an epoch."""
        cfg, model, step, mark = self.cfg, self.model, self.state["step"], self.timer or (lambda phase: None)
        mark("waiting for data")
        n = len(batch["kp"])
        # captured on a whole batch: a resume may start at the window sampler's short last one
        if cfg.cuda_graph and self.graph is None and n == self.whole_batch:
            self.graph = self._capture(net, batch)
        self.lr_now = lr
        for g in self.optimizer.param_groups:  # a tensor under a CUDA graph: filled, so a replay sees it
            if torch.is_tensor(g["lr"]):
                g["lr"].fill_(lr)
            else:
                g["lr"] = lr
        if self.graph and self.graph.fits(batch):
            loss = self.graph(batch, mark)
        else:
            x = to_input(batch, self.device, cfg.channels_last, cfg.pixel_ops == "compiled", self.images)
            kp = batch["kp"].to(self.device, non_blocking=True)
            vis = batch["vis"].to(self.device, non_blocking=True)
            mark("to device + pixel ops")
            loss = self._update(net, x, kp, vis, mark)
        if self.ema is not None:
            self.ema.update(model, step=step)
            mark("EMA")
        self.meter.add(loss, n, step)
        self.state["step"] += 1
        self.state["skip"] += 1
        return n * self.world

    def _capture(self, net: torch.nn.Module, batch: dict) -> GraphStep | bool:
        """The CUDA graph of the step with its input; where the input cannot be captured, of the step
        alone; where neither can, False (the same steps, eagerly), each with one line saying why."""
        def why(e: BaseException) -> str:
            return (str(e).strip().splitlines() or [type(e).__name__])[0]

        try:
            return GraphStep(self, net, batch)
        except RuntimeError as e:  # an op the graph cannot hold
            first = why(e)
        self._say(f"{self.cfg.run}: CUDA graph capture of the input failed ({first}); its ops will run eagerly, "
                  f"capturing the step without them")
        try:
            return GraphStep(self, net, batch, with_input=False)
        except RuntimeError as e:
            self._say(f"{self.cfg.run}: CUDA graph capture failed ({why(e)}); training without it")
            return False

    def _update(self, net: torch.nn.Module, x: torch.Tensor, kp: torch.Tensor, vis: torch.Tensor,
                mark=None, capturing: bool = False) -> torch.Tensor:
        """Forward, loss, backward, clipping and the optimizer step, at the groups' current lr; run
        eagerly, or once into a CUDA graph (GraphStep: capturing, no phase marks). Returns the loss."""
        cfg, mark = self.cfg, mark or (lambda phase: None)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, cfg.amp, cache=not capturing):
            out = net(x)
        loss = self.model.loss(out, kp, vis)
        self.scaler.scale(loss).backward()
        mark("forward + backward")
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        mark("optimizer")
        return loss

    def _read_loss(self, since: bool = False) -> float:
        """The training-loss sum of this epoch over processes (every process calls it): one host sync.
        FloatingPointError, naming the first non-finite step, when the loss stopped being finite.
        since=True: also set since_loss (mean since the last curve point) and start the next span."""
        self.syncs += 1
        epoch_sum, since_sum, bad, value = self.meter.read(self.world)
        if bad >= 0:
            raise FloatingPointError(
                f"{self.cfg.run}: loss became {value} at epoch {self.state['epoch'] + 1} step {bad}; stopped. "
                f"The last good checkpoint is {self._last_good()}; try a lower lr (now {self.cfg.lr}) or --grad-clip")
        if self.pending is not None and self.pending.done():  # a failed write of the epoch files stops the run now,
            self._wait_for_writes()                           # not an epoch of training later
        if since:
            self.since_loss = since_sum / self.since_n if self.since_n else float("nan")
            self.meter.sums[1].zero_()
            self.since_n = 0
        return epoch_sum

    def _sync_device(self) -> None:
        """Wait for the device (the wall-clock calibration's two ends)."""
        if self.device.startswith("cuda"):
            self.syncs += 1
            torch.cuda.synchronize(self.device)

    def _budget_steps(self, per_step: float, steps_per_epoch: int) -> int:
        """The schedule length that fits the wall-clock budget, from the measured time per step."""
        cfg = self.cfg
        total = max(self.state["step"] + 1, min(int(cfg.budget_minutes * 60 / per_step), cfg.epochs * steps_per_epoch))
        self._say(f"{cfg.run}: {per_step * 1000:.0f} ms/step -> {total} steps "
                  f"({total / steps_per_epoch:.1f} epochs) in {cfg.budget_minutes} min")
        return total

    def _end_of_epoch(self, epoch: int, stop: str, seen: int, loss_sum: float, epoch_time: float,
                      elapsed: float) -> None:
        """Validation, the log row, then config.json, best.pt, last.pt and log.csv (main process).

        Nothing is written unless every weight and buffer (EMA included) and the validation are
        finite: the previous last.pt stays the last good one."""
        cfg, state = self.cfg, self.state
        scores, val_loss = self._validate()
        row = {"epoch": epoch + 1, "step": state["step"], "images": state["step"] * cfg.batch_size,
               "lr": self.lr_now, "train_loss": loss_sum / max(seen, 1), "val_loss": val_loss,
               **scores, "img_s": seen / max(epoch_time, 1e-9),
               "epoch_s": epoch_time, "elapsed_s": elapsed, "stopped_by": stop}
        self._refuse_non_finite(epoch, row)
        self.history.append(row)
        self._curve_point(scores, elapsed)
        best = row["kaggle_mse"] < state["best_mse"]
        state["best_mse"] = min(state["best_mse"], row["kaggle_mse"])
        state["finished"] = bool(stop) or epoch + 1 >= cfg.epochs
        state["elapsed"] = elapsed
        config = {**dataclasses.asdict(cfg), "labels": self.labels}
        ck = {"model": self.model.state_dict(), "ema": self.ema.module.state_dict() if self.ema is not None else None,
              "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
              "torch_rng": torch.get_rng_state(), "state": dict(state), "config": config,
              "history": list(self.history), "curve": list(self.curve)}
        ck = cpu_copy(ck)
        run_config = {**config, "world_size": self.world, "torch": torch.__version__,
                      "train_size": len(self.train_ds), "val_size": len(self.val_ds)}

        def write() -> None:  # in this order, so a kill between two files leaves a consistent run
            self.run.write_config(run_config)
            self.run.save_val_index(self.val_idx)
            if best:  # weights only: resuming reads last.pt, so best.pt leaves out the optimizer state
                self.run.save_checkpoint("best", {k: v for k, v in ck.items() if k not in ("optimizer", "scaler")})
            self.run.save_checkpoint("last", ck)
            self.run.write_history(ck["history"])
            self.run.write_curve(ck["curve"])

        self._write_behind(write)
        print(f"{cfg.run} epoch {epoch + 1}: train_loss {row['train_loss']:.4g} val_loss {val_loss:.4g} "
              f"kaggle_mse {row['kaggle_mse']:.3f} epe {row['epe']:.3f} pck@2px {row['pck@2px']:.3f} "
              f"{row['img_s']:.1f} img/s{' *best' if best else ''}"
              f"{'; stopped by the ' + str(cfg.budget_minutes) + '-minute budget' if stop == 'budget' else ''}",
              flush=True)

    def _write_behind(self, write) -> None:
        """Run `write` in the background (training goes on; its tensors are CPU copies), after the
        previous one has finished: one pending write at a time, in order."""
        self._wait_for_writes()
        if self.writer is None:
            self.writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self.pending = self.writer.submit(write)

    def _wait_for_writes(self) -> None:
        """Block until the background write is done; its error, if any, is raised here."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def _refuse_non_finite(self, epoch: int, row: dict) -> None:
        """FloatingPointError naming what is not finite (weights, BatchNorm statistics, validation)."""
        bad = [k for k in ("val_loss", "kaggle_mse") if not math.isfinite(row[k])]
        for label, module in (("model", self.model), ("EMA", self.ema.module if self.ema is not None else None)):
            if module is not None:
                bad += [f"{label} {n}" for n, t in module.state_dict().items()
                        if t.is_floating_point() and not torch.isfinite(t).all()][:3]
        if bad:
            raise FloatingPointError(
                f"{self.cfg.run}: not finite after epoch {epoch + 1}: {', '.join(bad)}; nothing saved. "
                f"The last good checkpoint is {self._last_good()}; try a lower lr (now {self.cfg.lr}) or --grad-clip")

    def _last_good(self) -> str:
        """The last good checkpoint, for a message: once the epoch files in flight are written."""
        note = ""
        try:
            self._wait_for_writes()
        except Exception as e:  # noqa: BLE001 - told in the message, which is the error raised
            note = f" (the files of the epoch after it failed to write: {e})"
        last = self.run.checkpoint_path("last")
        return f"{last if last.exists() else 'none (first epoch)'}{note}"

    def _wrap(self) -> torch.nn.Module:
        """The model as the steps call it: DistributedDataParallel under torchrun, compiled on request."""
        net = self.model
        if self.cfg.cuda_graph and (self.world > 1 or not self.device.startswith("cuda") or self.cfg.amp == "fp16"):
            raise ValueError(f"--cuda-graph: expected one CUDA process without fp16 "
                             f"(found device {self.device}, {self.world} processes, amp {self.cfg.amp})")
        if self.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[int(self.device.split(":")[1])] if self.device.startswith("cuda") else None)
        return compile_model(net) if self.cfg.compile else net

    def _epoch(self, net: torch.nn.Module, epoch: int, elapsed: float) -> tuple[str, int, float]:
        """The training steps of one epoch; returns (why it stopped early: "" | "schedule" | "budget",
        images, loss sum). `elapsed`: training seconds of the run before this epoch.

        Under a wall-clock budget the time itself is bounded: the run stops when its training time
        reaches the budget (or the epochs end), and the cosine schedule follows the share of the
        budget spent. The first CALIBRATION_STEPS steps (across epochs if need be) estimate the
        steps it will get, which caps the warm-up at a tenth of them."""
        cfg, state = self.cfg, self.state
        budget_s = cfg.budget_minutes * 60 if cfg.budget_minutes else None
        self.batches.set_epoch(epoch, state["skip"], state["step"])
        net.train()
        self.meter.sums[0].zero_()
        t_epoch, seen, stop, shown = self._clock(), 0, "", (0, 0.0)
        bar = tqdm(self.train_loader, desc=f"{cfg.run} epoch {epoch + 1}", disable=not self.is_main,
                   leave=False, mininterval=2.0, total=len(self.batches))
        for batch in bar:
            spent = elapsed + self._clock() - t_epoch
            progress = min(1.0, spent / budget_s) if budget_s else None
            lr = cfg.lr * lr_factor(state["step"], self.total, cfg.warmup_steps, cfg.schedule, progress)
            n = self._step(net, batch, lr)
            seen += n
            self.since_n += n
            if state["step"] % cfg.check_every == 0:  # the lean loop's one look at the device's numbers
                loss_sum = self._read_loss()
                bar.set_postfix(loss=f"{(loss_sum - shown[1]) / max(seen - shown[0], 1):.4g}",
                                img_s=f"{seen / max(self._clock() - t_epoch, 1e-9):.1f}", refresh=False)
                shown = (seen, loss_sum)
            if self.calibration == "first step":  # timed from the end of the first step (start-up excluded)
                self._sync_device()
                self.calibration = (self._clock(), state["step"])
            elif self.calibration is not None:
                t_cal, s_cal = self.calibration
                if state["step"] - s_cal >= CALIBRATION_STEPS:
                    self._sync_device()
                    per_step = (self._clock() - t_cal) / (state["step"] - s_cal)
                    self.total = state["total_steps"] = self._budget_steps(per_step, len(self.batches.batches))
                    self.calibration = None
            now = self._clock()
            if budget_s and elapsed + now - t_epoch >= budget_s:
                stop = "budget"
            elif not budget_s and state["step"] >= self.total:
                stop = "schedule"
            if stop:
                break
            last_of_epoch = state["skip"] >= len(self.batches.batches)  # the epoch end validates anyway
            if cfg.eval_every and state["step"] % cfg.eval_every == 0 and not last_of_epoch:
                self._read_loss(since=True)
                if self.is_main:
                    self._eval_inside_epoch(net, elapsed + now - t_epoch)
        bar.close()
        return self._agree(stop), seen, self._read_loss(since=True)

    def _eval_inside_epoch(self, net: torch.nn.Module, elapsed: float) -> None:
        """A learning-curve point between two steps (main process); its time is not training time."""
        t = time.perf_counter()
        scores, _ = self._validate()
        row = self._curve_point(scores, elapsed)
        net.train()
        self.paused += time.perf_counter() - t
        tqdm.write(f"{self.cfg.run} step {row['step']}: kaggle_mse {row['kaggle_mse']:.1f} epe {row['epe']:.2f} "
                   f"({row['images']} images, {elapsed:.0f} s)")

    def _agree(self, stop: str) -> str:
        """Under torchrun every process stops when one does (each sees its own clock)."""
        if self.world == 1:
            return stop
        flag = torch.tensor([{"": 0, "schedule": 1, "budget": 2}[stop]], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return ["", "schedule", "budget"][int(flag)]

    def time_epoch(self, epoch: int) -> dict:
        """One epoch of training steps exactly as fit() runs them, timed, with no validation and
        nothing written (python -m benchmarks loop): {"seconds", "images", "img_s", "syncs",
        "start_s" (to the first batch: the workers refill), "steady_img_s" (from the first batch on),
        "step_s" (the host's time inside the steps: as long as the epoch's when the device waits for
        the host, far less when the host waits for the device)}; the device is synchronised before
        and after. Set `timer` first for a per-phase breakdown."""
        if not hasattr(self, "total"):
            self.net, self.total, self.calibration = self._wrap(), 10**9, None
        first: list[float] = []  # when the first batch arrived
        original, step, busy = self.timer, self._step, [0.0]

        def timed_step(*a, **k):  # nothing in a step waits for the device: this is the host's share
            t0 = time.perf_counter()
            try:
                return step(*a, **k)
            finally:
                busy[0] += time.perf_counter() - t0

        def timer(phase: str) -> None:
            if not first:
                first.append(time.perf_counter())
            if original:
                original(phase)

        self.timer, self._step = timer, timed_step
        self._sync_device()
        syncs, t = self.syncs, time.perf_counter()
        try:
            _, images, _ = self._epoch(self.net, epoch, 0.0)
        finally:
            self.timer = original
            del self._step  # the method again
        syncs = self.syncs - syncs
        self._sync_device()
        end = time.perf_counter()
        self.state["skip"] = 0
        steady = images / max(end - first[0], 1e-9)  # every step's work, without the wait for the first batch
        return {"seconds": end - t, "images": images, "img_s": images / (end - t), "syncs": syncs,
                "start_s": first[0] - t, "steady_img_s": steady, "step_s": busy[0]}

    def fit(self) -> tuple[Path, torch.nn.Module]:
        """Train to the end of the schedule (or the budget); returns (run directory, model)."""
        with self.run.lock("training") if self.is_main else contextlib.nullcontext():
            return self._fit()

    def _fit(self) -> tuple[Path, torch.nn.Module]:
        try:
            return self._fit_epochs()
        finally:  # every file of the last epoch is on disk before fit() returns or raises
            try:
                self._wait_for_writes()
            finally:  # also when that write failed: no writer thread or DataLoader worker outlives fit()
                if self.writer is not None:
                    self.writer.shutdown()
                self.close()

    def close(self) -> None:
        """Stop the DataLoader workers now (fit() does at its end; a loader used again starts new ones).

        They persist across epochs, so they would otherwise live until this trainer is collected; when
        that happens in the garbage collector or at interpreter exit, PyTorch waits its 5-s join
        timeout for each worker (75 s for 15 workers, seen on the H100)."""
        for loader in (self.train_loader, self.val_loader):
            it = getattr(loader, "_iterator", None)  # a DataLoader's (DrawnBatches has no workers)
            if it is not None:
                loader._iterator = None
                if hasattr(it, "_shutdown_workers"):
                    it._shutdown_workers()

    def _fit_epochs(self) -> tuple[Path, torch.nn.Module]:
        cfg, state = self.cfg, self.state
        if self._resume():
            return self.run.dir, self.model
        net = self._wrap()
        steps_per_epoch = len(self.batches.batches)
        self.total = state["total_steps"] or cfg.epochs * steps_per_epoch
        self.calibration = "first step" if cfg.budget_minutes and not state["total_steps"] else None
        elapsed = float(state.get("elapsed", 0.0))
        for epoch in range(state["epoch"], cfg.epochs):
            t_epoch = self._clock()
            stop, seen, loss_sum = self._epoch(net, epoch, elapsed)
            epoch_time = self._clock() - t_epoch
            elapsed += epoch_time
            finished_epoch = not stop or state["skip"] >= steps_per_epoch
            state["epoch"], state["skip"] = (epoch + 1, 0) if finished_epoch else (epoch, state["skip"])
            if self.is_main:
                self._end_of_epoch(epoch, stop, seen, loss_sum, epoch_time, elapsed)
            if self.world > 1:
                dist.barrier()
            if stop:
                break
        if self.world > 1:
            dist.destroy_process_group()
        return self.run.dir, self.model


def fit(cfg: TrainConfig | None = None, **overrides) -> Path:
    """Train (or resume, or return a finished run); returns the run directory."""
    return train_model(cfg, **overrides)[0]


def train_model(cfg: TrainConfig | None = None, **overrides) -> tuple[Path, torch.nn.Module]:
    """fit(), also returning this process's trained model (e.g. to compare torchrun ranks)."""
    cfg = dataclasses.replace(cfg, **overrides) if cfg else TrainConfig(**overrides)
    return Trainer(cfg).fit()


# --------------------------------------------------------------------------- CLI


def parser() -> argparse.ArgumentParser:
    """The command line: one option per TrainConfig field, its help from the field's comment."""
    ap = argparse.ArgumentParser(prog="python -m lib.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Options without a default take the recipe's or the profile's value "
                                        "(lib.config RECIPES, PROFILES).")
    hints, helps = {f.name: f.type for f in dataclasses.fields(TrainConfig)}, TrainConfig.field_help()
    helps["model"] += ": " + ", ".join(list_models())
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = {} if f.name == "model_kwargs" else f.default
        text = helps[f.name].replace("%", "%%") + ("" if default is None else " (default: %(default)s)")
        if f.name == "model_kwargs":
            ap.add_argument(flag, type=json.loads, default=default, help=text)
        elif isinstance(f.default, bool) or str(hints[f.name]) == "bool | None":  # None: auto
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        else:
            hint = str(hints[f.name])
            kind = float if "float" in hint else int if "int" in hint else str
            ap.add_argument(flag, type=kind, default=default, help=text)
    return ap


def _parse(argv: list[str] | None) -> TrainConfig:
    return TrainConfig(**vars(parser().parse_args(argv)))


def _main(argv: list[str] | None = None) -> int:
    cfg = _parse(argv)
    if dist_info()[1] == 1:  # one process: render the synthetic default when no data is there yet
        ensure_data(cfg.data_dir, resolve_profile(cfg.profile, resolve_device(cfg.device)))
    run_dir = fit(cfg)
    if dist_info()[0] == 0:
        print(f"run: {run_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
