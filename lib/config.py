"""One answer to "how big, on which data, on which device": profiles, recipes, the run config.

    from lib import config
    data_dir = config.ensure_data("auto", "smoke")   # real files in data/, else the synthetic default
    cfg = config.TrainConfig(model="cpm", profile="smoke").resolved()

- PROFILES: full (a GPU, the report's epochs), cpu (a 2-core machine, minutes), smoke (tests,
  seconds). Each holds its training limits and the size of its synthetic default dataset.
- RECIPES: paper (the 2018 report) and modern (what measurement showed best).
- TrainConfig: everything that defines a run; `resolved()` fills it from recipe, profile and device.
- resolve_device / resolve_amp / resolve_profile: the "auto" rules, written once.
- ensure_data: the competition files to use (given, real in data/, else the profile's synthetic
  set, rendered on first use).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lib import data, io, paths

# --------------------------------------------------------------------------- profiles and recipes

PROFILES: dict[str, dict] = {
    # synthetic: (training images, evaluation images) of the profile's synthetic default dataset
    "full": dict(synthetic=(40000, 2700), limit_train=None, limit_val=None, budget_minutes=None),  # GPU: report's epochs
    "cpu": dict(synthetic=(4000, 300), limit_train=None, limit_val=256, budget_minutes=2.5),    # 2 cores: minutes
    # a short GPU rental (~10 min on one H100): the full synthetic set, the modern model only (make run
    # PROFILE=gpu skips the report models' notebooks), 3 minutes of training steps
    "gpu": dict(synthetic=(40000, 2700), data="full", notebooks=("07_hm_resnet18",), limit_train=None,
                limit_val=1000, budget_minutes=3.0),
    "smoke": dict(synthetic=(40, 12), limit_train=16, limit_val=8, batch_size=8, budget_minutes=None,
                  epochs=1),                                                                     # tests: seconds
}
RECIPES: dict[str, dict] = {
    # the 2018 report: L2 loss, Adam 1e-4 fixed, batch 8, its augmentation and sliding-window sampler
    "paper": dict(optimizer="adam", lr=1e-4, weight_decay=0.0, schedule="constant", warmup_steps=0,
                  batch_size=8, augment="paper", augment_ramp=0.0, sampler="window", ema=0.0, grad_clip=0.0),
    # what measurement showed best (see BENCHMARKS.md): AdamW, one-cycle cosine, EMA, modern augmentation
    "modern": dict(optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine", warmup_steps=100,
                   batch_size=32, augment="modern", augment_ramp=0.0, sampler="shuffle", ema=0.998, grad_clip=5.0),
}
REPORT_EPOCHS = {"irv2": 108, "resnet34": 55, "cpm": 40, "inception_v3": 40}
REPORT_TRAIN_HANDS = 57_466  # the competition's training hands: one epoch of the report
MODERN_EPOCHS = 60
AMP = ("bf16", "fp16", "off")


# glibc's malloc hands a step's freed tensors back to the OS and faults the pages in again in the
# next step; on a CPU that cost ~10 % of an fp32 training step (BENCHMARKS §7n). Kept instead, with
# mallopt's M_MMAP_THRESHOLD (-3; glibc's maximum), M_TRIM_THRESHOLD (-1) and M_TOP_PAD (-2). The
# first must be set too (setting another one stops glibc raising it from 128 KB, which was slower
# still); it goes first, so that where glibc refuses it nothing else changes.
MALLOC_KEEP = ((-3, 32 << 20), (-1, 512 << 20), (-2, 64 << 20))


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory of freed tensors for the next step (a CPU training process;
    its forked DataLoader workers inherit it): hm_resnet18 at batch 32 peaked 0.03 GiB higher. False
    and nothing changed where there is no glibc (macOS, musl, Windows) or the environment already
    tunes malloc (MALLOC_*_ or GLIBC_TUNABLES=glibc.malloc.*: the user's settings stay)."""
    import ctypes
    import ctypes.util

    if any(k.startswith("MALLOC_") for k in os.environ) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in MALLOC_KEEP)


def resolve_device(device: str = "auto") -> str:
    """auto: cuda when there is one, else cpu; cuda:N must exist."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise ValueError(f"device: expected auto, cpu, cuda or cuda:N, found {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested but CUDA is not available")
        if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r} requested but there are {torch.cuda.device_count()} CUDA devices")
    return device


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX-BF16: AMD Zen 4 on, Intel Cooper
    Lake and Sapphire Rapids on); elsewhere bf16 is emulated, slower than fp32."""
    caps = getattr(torch.cpu, "get_capabilities", dict)()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_amp(amp: str, device: str) -> str:
    """auto: bf16 where the device computes it natively, else what is fastest there:
    - CUDA: bf16 from compute capability 8.0 on (A100, H100, RTX 30xx/40xx, L4), else fp16 with a
      gradient scaler (T4, V100, P100, Kaggle's and Colab's free GPUs: bf16 emulated or missing);
    - CPU: bf16 with bf16 instructions (`cpu_computes_bf16`; on the 2-core development machine 1.3x
      the training and 1.7x the prediction images per second of fp32, and a lower error at an equal
      time budget: BENCHMARKS.md §7h), else off (fp32)."""
    if amp == "auto":
        if not device.startswith("cuda"):
            return "bf16" if cpu_computes_bf16() else "off"
        return "bf16" if torch.version.hip or torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    if amp not in AMP:
        raise ValueError(f"amp: expected one of {list(AMP) + ['auto']}, found {amp!r}")
    return amp


def autocast(device: str, amp: str, cache: bool = True):
    """The mixed-precision context of a resolved device and amp setting (bf16 | fp16 | off);
    cache=False while a CUDA graph is being captured (no cast weights kept across the capture)."""
    return torch.autocast(device.split(":")[0], dtype=torch.float16 if amp == "fp16" else torch.bfloat16,
                          enabled=amp != "off", cache_enabled=cache)


def resolve_profile(profile: str, device: str = "auto") -> str:
    """auto: full on CUDA, else cpu."""
    if profile == "auto":
        return "full" if resolve_device(device).startswith("cuda") else "cpu"
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {sorted(PROFILES) + ['auto']}, found {profile!r}")
    return profile


def default_workers() -> int:
    """DataLoader workers: CPU cores - 1 (at most 16), none on a 2-core machine."""
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(16, cores - 1)


# --------------------------------------------------------------------------- the run config


@dataclass
class TrainConfig:
    """Everything that defines a run; None means: take it from the recipe or the profile."""

    model: str = "resnet34"           # one of lib.models.list_models()
    recipe: str = "modern"            # paper | modern
    profile: str = "auto"             # full | gpu | cpu | smoke | auto (full on CUDA, else cpu)
    data_dir: str = "auto"            # the competition files (training.h5, testing.h5); auto: the real ones in
    #                                   data/, else the profile's synthetic set (rendered on first use; ensure_data)
    run: str | None = None            # run name; default <model>_<recipe>_<profile>
    out_dir: str | None = None        # default: outputs/runs (HANDJOINTS_OUTPUTS moves it)
    resume: bool = True               # continue an unfinished run of the same name
    epochs: int | None = None         # passes over the training hands; default: full profile, the report's per model
    #                                   (REPORT_EPOCHS; MODERN_EPOCHS for others); other profiles, until their time budget
    batch_size: int | None = None     # global batch (split across torchrun processes)
    lr: float | None = None           # default: the recipe's, scaled linearly with the batch size
    weight_decay: float | None = None  # decoupled (adamw) or L2 (adam)
    optimizer: str | None = None      # adam | adamw
    schedule: str | None = None       # constant | cosine
    warmup_steps: int | None = None   # linear lr warm-up from 0
    ema: float | None = None          # EMA decay of the weights, 0 = off
    grad_clip: float | None = None    # max gradient norm, 0 = off
    augment: str | None = None        # none | paper | modern
    augment_ramp: float | None = None  # share of the run over which the share of augmented samples rises 0 -> 1
    sampler: str | None = None        # shuffle | window (the report's sliding window)
    budget_minutes: float | None = None  # wall-clock budget of the training steps (equal-time comparisons)
    eval_every: int = 0               # also validate every N steps (learning curves, curve.csv); 0: epoch ends only
    limit_train: int | None = None    # train on a fixed random subset of this many hands (the same for every seed)
    limit_val: int | None = None      # validate on a fixed random subset of this many hands (the same for every seed)
    val_fraction: float = 0.1         # share of the training images held out for validation (a fixed split per dataset)
    seed: int = 0                     # weights, augmentation and batch order
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    amp: str = "auto"                 # auto (bf16 on CUDA 8.0+ and on CPUs with bf16 instructions, fp16 on older GPUs, else off) | bf16 | fp16 | off
    channels_last: bool = True        # NHWC memory layout (faster convolutions on GPUs)
    compile: bool = False             # torch.compile the model (IRv2 block by block; minutes on a GPU)
    cuda_graph: bool | None = None    # the whole step as one CUDA graph replayed per batch; None: on for one
    #                                   CUDA process without fp16 (the Trainer decides; 4-7x at batch 8 on an H100)
    check_every: int = 50             # steps between the loop's looks at the loss (NaN/inf check, progress bar)
    pixel_ops: str = "auto"           # modern augmentation's colour/blur/noise/cutout: workers | device | compiled | auto (device on CUDA)
    warp_on_device: bool | None = None   # with pixel_ops device: the workers send the 192 context, the device warps it; None: on CUDA
    cache_on_device: bool | None = None  # with warp_on_device: the crop cache's images on the device, the main process draws the
    #                                      rest of each batch (lib.data.DrawnBatches: no DataLoader workers);
    #                                      None: on CUDA when they take at most half the free device memory (Trainer)
    workers: int | None = None        # DataLoader workers; default: CPU cores - 1 (0 on a 2-core box)
    model_kwargs: dict = field(default_factory=dict)  # JSON object of create_model's options, e.g. '{"input_size": 64}'

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Each field's comment above (its one documentation), for the command line's --help."""
        out, name = {}, None
        for line in inspect.getsource(cls).splitlines():
            if m := re.match(r"    (\w+): [^#]*(?:#\s*(.*))?$", line):
                name = m[1]
                out[name] = m[2] or ""
            elif (m := re.match(r"\s+#\s*(.*)", line)) and name:
                out[name] += " " + m[1]
            elif line.strip():
                name = None
        return out

    @property
    def pixels_on_device(self) -> bool:
        """The modern augmentation's pixel ops run on the batch side (--pixel-ops device or compiled)."""
        return self.pixel_ops in ("device", "compiled")

    def resolved(self) -> "TrainConfig":
        """A copy with every None and auto filled from the recipe, the profile and the device."""
        from lib.models import list_models

        if self.recipe not in RECIPES:
            raise ValueError(f"recipe: expected one of {sorted(RECIPES)}, found {self.recipe!r}")
        if self.model not in list_models():
            raise ValueError(f"model: expected one of {list_models()}, found {self.model!r}")
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"--model-kwargs: expected a JSON object, found {json.dumps(self.model_kwargs)}")
        c = dataclasses.replace(self, model_kwargs=dict(self.model_kwargs))
        c.device = resolve_device(c.device)
        c.profile = resolve_profile(c.profile, c.device)
        recipe = RECIPES[c.recipe]
        profile = {k: v for k, v in PROFILES[c.profile].items() if k not in ("synthetic", "data", "notebooks")}
        for k, v in {**recipe, **profile}.items():
            if getattr(c, k) is None:
                setattr(c, k, v)
        if c.epochs is None:
            c.epochs = REPORT_EPOCHS.get(c.model, MODERN_EPOCHS) if c.profile == "full" else 1000
        if self.lr is None and c.batch_size != recipe["batch_size"] and c.recipe != "paper":
            c.lr = recipe["lr"] * c.batch_size / recipe["batch_size"]
        c.amp = resolve_amp(c.amp, c.device)
        if c.pixel_ops == "auto":
            c.pixel_ops = "device" if c.device.startswith("cuda") and c.augment == "modern" else "workers"
        gpu_input = c.device.startswith("cuda") and c.pixels_on_device  # H100: the loop at 0.69-0.91 of the model
        if c.warp_on_device is None:
            c.warp_on_device = gpu_input
        if c.cache_on_device is None and not c.warp_on_device:
            c.cache_on_device = False  # else None stays: the Trainer decides once it knows the hands' number
        if c.cuda_graph is None and (not c.device.startswith("cuda") or c.amp == "fp16"):
            c.cuda_graph = False  # else None stays: the Trainer decides once it knows the number of processes
        if c.workers is None:
            c.workers = default_workers()
        c.data_dir = str(ensure_data(c.data_dir, c.profile, render=False).resolve())  # absolute: usable from anywhere
        c.run = c.run or f"{c.model}_{c.recipe}_{c.profile}"
        c._check()
        return c

    def _check(self) -> None:
        """Refuse settings that would crash later or silently do something else, naming the option."""
        def need(ok: bool, option: str, expected: str, found: object) -> None:
            if not ok:
                raise ValueError(f"--{option.replace('_', '-')}: expected {expected}, found {found!r}")

        for name in ("epochs", "batch_size", "check_every"):
            need(getattr(self, name) >= 1, name, "an integer >= 1", getattr(self, name))
        for name in ("warmup_steps", "workers", "eval_every"):
            need(getattr(self, name) >= 0, name, "an integer >= 0", getattr(self, name))
        for name in ("limit_train", "limit_val"):
            need(getattr(self, name) is None or getattr(self, name) >= 1, name, "an integer >= 1 (or none)",
                 getattr(self, name))
        need(math.isfinite(self.lr) and self.lr > 0, "lr", "a number > 0", self.lr)
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0",
             self.weight_decay)
        need(0 <= self.ema < 1, "ema", "a decay in [0, 1) (0: off)", self.ema)
        need(self.grad_clip >= 0, "grad_clip", "a number >= 0 (0: off)", self.grad_clip)
        need(self.budget_minutes is None or self.budget_minutes > 0, "budget_minutes", "minutes > 0",
             self.budget_minutes)
        need(0 < self.val_fraction < 1, "val_fraction", "a number in (0, 1)", self.val_fraction)
        need(0 <= self.augment_ramp <= 1, "augment_ramp", "a share of the run in [0, 1] (0: augment from the start)",
             self.augment_ramp)
        need(self.pixel_ops == "workers" or self.augment == "modern", "pixel_ops",
             "workers (device runs only the modern augmentation's pixel ops)", self.pixel_ops)
        need(not self.warp_on_device or self.pixels_on_device, "warp_on_device",
             "--pixel-ops device or compiled with it (the warp runs with the pixel ops)", self.warp_on_device)
        need(not self.cache_on_device or self.warp_on_device, "cache_on_device",
             "--warp-on-device with it (the images are warped where they are held)", self.cache_on_device)
        for name, allowed in (("optimizer", ("adam", "adamw")), ("schedule", ("constant", "cosine")),
                              ("pixel_ops", ("workers", "device", "compiled")),
                              ("sampler", ("shuffle", "window")), ("augment", ("none", "paper", "modern"))):
            need(getattr(self, name) in allowed, name, f"one of {list(allowed)}", getattr(self, name))
        need(self.run not in ("", ".", "..") and "/" not in self.run and "\\" not in self.run, "run",
             "a name (no path separators)", self.run)
        from lib.models import model_kwargs_error

        why = model_kwargs_error(self.model, self.model_kwargs)
        if why:
            raise ValueError(f"--model-kwargs {json.dumps(self.model_kwargs)}: {why}")


# --------------------------------------------------------------------------- data

STAMP = "synthetic.json"  # what a synthetic folder was built with


def synthetic_dir(profile: str) -> Path:
    """Where the profile's synthetic default lives: data/synthetic (cpu), data/synthetic-<profile>
    (gpu shares full's)."""
    profile = PROFILES[resolve_profile(profile)].get("data", resolve_profile(profile))
    return paths.data_root() / ("synthetic" if profile == "cpu" else f"synthetic-{profile}")


def synthetic_stamp(profile: str) -> dict:
    """What the profile's synthetic set is made of (its STAMP file): sizes, seeds, renderer version."""
    from lib.synth import RENDERER_VERSION

    n_train, n_eval = PROFILES[resolve_profile(profile)]["synthetic"]
    return {"training_images": n_train, "evaluation_images": n_eval, "seeds": [0, 1], "renderer": RENDERER_VERSION}


def _complete(d: Path) -> bool:
    return (d / "training.h5").exists() and (d / "testing.h5").exists()


def ensure_data(data_dir: str | os.PathLike = "auto", profile: str = "auto", workers: int | None = None,
                render: bool = True) -> Path:
    """The competition files to use: data_dir if given; else the real files in data/; else the
    profile's synthetic default (rendered and built on first use, with a notice; with
    render=False a missing one is a FileNotFoundError saying how to make it)."""
    if str(data_dir) != "auto":
        return data.find_data(data_dir).root
    real = paths.data_root()
    if _complete(real):
        if render:
            print(f"data: the real competition files in {real}")
        return real
    profile = resolve_profile(profile)
    out = synthetic_dir(profile)
    if not render:
        if _complete(out):
            return out
        raise FileNotFoundError(
            f"no competition files in {real} or in {out} (the {profile} profile's synthetic default); "
            f"render it with `python -m lib.pipeline --only data --profile {profile}`, or {data.HOW_TO_GET}")
    stamp = synthetic_stamp(profile)
    have = json.loads((out / STAMP).read_text()) if (out / STAMP).exists() else None
    if have == stamp and all((out / f).exists() for f in ("training.h5", "testing.h5", "solution.csv")):
        print(f"data: synthetic default in {out} (no real competition files in {real})")
        return out
    if have is not None and have != stamp:
        print(f"data: {out} holds another synthetic set ({have}); rendering it again as {stamp}", flush=True)
        shutil.rmtree(out / "rhd", ignore_errors=True)
    _require_render_space(out, stamp, profile)
    print(f"data: no real competition files in {real}; rendering the synthetic default "
          f"({stamp['training_images']} training + {stamp['evaluation_images']} evaluation images, "
          f"profile {profile}) into {out}", flush=True)
    _render_synthetic(out, stamp, workers or os.cpu_count() or 1)
    return out


# disk per rendered image, measured (2026-11-27, 300 training + 100 evaluation images): its PNGs in the
# RHD folder (colour, mask, depth) and its rows of the competition files (training.h5: the 320x320
# image; testing.h5: its hands' 128x128 crops). The crop cache is checked when it is built (lib.data).
DISK_PER_IMAGE = {"training": 555_000, "evaluation": 420_000}


def _require_render_space(out: Path, stamp: dict, profile: str) -> None:
    """Refuse a synthetic set that cannot fit before rendering it (the gpu and full profiles' is ~23 GB), not
    when the disk fills minutes later; the images of a stopped render count as written."""
    need = (stamp["training_images"] * DISK_PER_IMAGE["training"]
            + stamp["evaluation_images"] * DISK_PER_IMAGE["evaluation"])
    rhd = out / "rhd"
    have = sum(p.stat().st_size for p in rhd.rglob("*") if p.is_file()) if rhd.is_dir() else 0
    io.require_space(out, max(need - have, 0),
                     what=f"the {profile} profile's synthetic set ({stamp['training_images']} training + "
                          f"{stamp['evaluation_images']} evaluation images)",
                     hint=f", or set {paths.DATA_ENV} to a folder on a larger disk")


def _render_synthetic(out: Path, stamp: dict, workers: int) -> None:
    """Render (or finish rendering) the synthetic RHD folder, build the competition files, stamp them."""
    from lib import synth

    t = time.perf_counter()
    (out / STAMP).unlink(missing_ok=True)
    for split, n, seed in (("training", stamp["training_images"], 0), ("evaluation", stamp["evaluation_images"], 1)):
        pkl = out / "rhd" / split / f"anno_{split}.pickle"
        if pkl.exists() and len(data.read_rhd_annotations(out / "rhd", split)) == n:
            continue  # this split finished before the run was stopped
        try:  # resumes a killed render of the same size
            synth.render_dataset(out / "rhd", split, n, seed=seed, workers=workers, verbose=True)
        except FileExistsError:  # a finished render of another size
            synth.render_dataset(out / "rhd", split, n, seed=seed, workers=workers, overwrite=True, verbose=True)
    summary = data.build_competition(out / "rhd", out, overwrite=True)
    io.write_json(out / STAMP, stamp)
    print(f"data: {summary['train_hands']} training hands, {summary['test_hands']} test crops "
          f"in {time.perf_counter() - t:.0f} s", flush=True)
