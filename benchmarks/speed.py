"""Speed: the input pipeline (crops/s), model throughput (img/s, memory, FLOPs) and DDP scaling.

Each model is measured in its own subprocess (`python -m benchmarks _one ...`, cwd = the repo),
so its peak memory is its own (CUDA: max allocated; CPU: the process's peak RSS).
"""
from __future__ import annotations

import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib import cli, paths
from lib.config import autocast, keep_freed_memory, resolve_amp, resolve_device
from lib.data import CROP_SIZE
from lib.joints import NUM_JOINTS

TEST_CROPS = 3611
# dense bf16 tensor-core peak, TFLOP/s (vendor figures, without sparsity)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
# what the host does on CUDA: modern-deferred (--pixel-ops device) the workers make the geometry and the
# pixel-op draws, modern-context (also --warp-on-device) only the draws, sending the 192 context;
# modern-drawn (also --cache-on-device) the main process draws a batch at a time (lib.data.DrawnBatches), no worker
PIPELINES = ("none", "paper", "modern", "modern-deferred", "modern-context", "modern-drawn")


class BenchmarkError(cli.UserError, RuntimeError):
    """A measurement that could not be made (its subprocess failed); the message says how to see why."""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1].removeprefix("error: ") if lines else "no output"


# --------------------------------------------------------------------------- input pipeline
def bench_input(n: int = 3000, workers: tuple[int, ...] = (0, 1, 2), batch: int = 64,
                pipelines: tuple[str, ...] = PIPELINES, data_dir: str = "auto") -> pd.DataFrame:
    """Crops/s from the crop cache through augmentation to (pinned, on CUDA) uint8 batch tensors.

    Per pipeline: one process with one thread, per CPU second (steady on a shared machine) and per
    wall second; then a DataLoader with each worker count, timed from the first batch on (the
    start-up to the first batch of the most workers is its own column). modern-drawn has no
    workers: its batches of `batch` are drawn in the main process (the worker columns stay empty)."""
    import cv2

    from lib import augment, data
    from lib.config import ensure_data

    cache = data.build_cache(data.find_data(ensure_data(data_dir)).training)
    idx = np.arange(len(cache))
    rows = []
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    for name in pipelines:
        deferred = {"modern-deferred": {"defer_pixels": True},
                    "modern-context": {"defer_pixels": True, "defer_warp": True},
                    "modern-drawn": {"defer_pixels": True, "defer_warp": True}}
        aug = (None if name == "none" else augment.build("modern", **deferred[name]) if name in deferred
               else augment.build(name))
        if name == "modern-drawn":
            rows.append({"pipeline": name, **_drawn_rate(cache, aug, n, batch)})
            continue
        ds = data.HandDataset(cache, idx, aug)
        m = min(n, 1000)
        for i in range(20):
            ds[i % len(ds)]
        t, c = time.perf_counter(), time.process_time()
        for i in range(m):
            ds[(i * 7919) % len(ds)]
        row = {"pipeline": name, "per core (crops/CPU-s)": m / (time.process_time() - c),
               "1 process, 1 thread (crops/s)": m / (time.perf_counter() - t)}
        for w in workers:
            ds_w = data.HandDataset(cache, np.resize(idx, n), aug)
            dl = torch.utils.data.DataLoader(ds_w, batch_size=batch, shuffle=True, num_workers=w,
                                             pin_memory=torch.cuda.is_available(),
                                             worker_init_fn=data.worker_init if w else None,
                                             generator=torch.Generator().manual_seed(0))
            t0 = time.perf_counter()
            it = iter(dl)
            next(it)  # worker start-up excluded
            t, count = time.perf_counter(), 0
            for b in it:
                count += len(b["kp"])
            row[f"{w} workers (crops/s)"] = count / (time.perf_counter() - t)
            if w and w == max(workers):
                row[f"{w} workers: s to 1st batch"] = t - t0
        rows.append(row)
    torch.set_num_threads(os.cpu_count() or 1)
    return pd.DataFrame(rows)


def _drawn_rate(cache, aug, n: int, batch: int) -> dict:
    """Samples/s of --cache-on-device's batches drawn in this process (pinned on CUDA, as training)."""
    from lib.data import DrawnBatches
    from lib.samplers import EpochBatches

    sampler = EpochBatches(len(cache), min(batch, len(cache)), "shuffle", seed=0)
    drawn = DrawnBatches(cache, np.arange(len(cache)), aug, sampler, pin=torch.cuda.is_available())
    next(iter(drawn))
    t, c, count, epoch = time.perf_counter(), time.process_time(), 0, 0
    while count < n:
        sampler.set_epoch(epoch)
        for b in drawn:
            count += len(b["kp"])
        epoch += 1
    return {"per core (crops/CPU-s)": count / (time.process_time() - c),
            "1 process, 1 thread (crops/s)": count / (time.perf_counter() - t)}


# --------------------------------------------------------------------------- model throughput
def forward_flops(model: torch.nn.Module, img: int = CROP_SIZE) -> float:
    """FLOPs of one forward pass of one image (2 per multiply-add), by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, img, img))
    return float(fc.get_total_flops())


FREE_OPS = (torch.ops.aten.detach, torch.ops.aten.empty, torch.ops.aten.empty_strided, torch.ops.aten.lift_fresh)


def dispatched_ops(fn) -> int:
    """The aten operations that fn() dispatches, views and bare allocations (FREE_OPS) left out: on a
    GPU about one kernel each (a convolution's backward is two or three), the same count on any device."""
    from torch.utils._python_dispatch import TorchDispatchMode

    ops = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view and func.overloadpacket not in FREE_OPS:
                ops.append(func)
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return len(ops)


def bench_one_model(name: str, batch: int = 32, steps: int = 5, device: str = "auto", amp: str = "auto",
                    channels_last: bool = True, compile: bool = False, infer_batch: int = 512) -> dict:
    """Train and inference throughput of one registered model on random crops (this process)."""
    from lib.models import compile_model, create_model, drop_batchnorm_counters

    device = resolve_device(device)
    amp = resolve_amp(amp, device)
    torch.backends.cudnn.benchmark = True  # as lib.train: fixed shapes, cuDNN's fastest kernels
    if device == "cpu":
        keep_freed_memory()  # as lib.train
    torch.manual_seed(0)
    model = drop_batchnorm_counters(create_model(name))  # as lib.train trains it
    params = sum(p.numel() for p in model.parameters())
    gflops = forward_flops(model) / 1e9
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = compile_model(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as lib.train's
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.rand(batch, 3, CROP_SIZE, CROP_SIZE, device=device) * 255).contiguous(memory_format=fmt)
    kp = torch.rand(batch, NUM_JOINTS, 2, device=device) * (CROP_SIZE - 1)
    vis = torch.ones(batch, NUM_JOINTS, device=device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def train_step():
        with autocast(device, amp):
            out = net(x)
        loss = model.loss(out, kp, vis)  # every model's loss computes in float32
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    warm = 3 if (compile or device.startswith("cuda")) else 1
    t = time.perf_counter()
    for _ in range(warm):
        train_step()
    sync()
    warm_s = time.perf_counter() - t  # with --compile: mostly the compilation
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync()
    train_ips = steps * batch / (time.perf_counter() - t)
    peak_train = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    ops = None if compile else dispatched_ops(train_step)  # after the timing: counting slows the step

    model.eval()
    infer_batch = infer_batch if device.startswith("cuda") else batch
    xi = (torch.rand(infer_batch, 3, CROP_SIZE, CROP_SIZE, device=device) * 255).contiguous(memory_format=fmt)
    with torch.no_grad(), autocast(device, amp):
        for _ in range(warm):
            net(xi)
        sync()
        t = time.perf_counter()
        reps = max(1, steps // 2)
        for _ in range(reps):
            net(xi)
        sync()
    infer_ips = reps * infer_batch / (time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    achieved = train_ips * 3 * gflops / 1e3  # forward + backward ~ 3x forward, TFLOP/s
    peak_dev = next((v for k, v in PEAK_TFLOPS.items() if device.startswith("cuda")
                     and k in torch.cuda.get_device_name(0)), None)
    return {"model": name, "params (M)": params / 1e6, "GFLOPs/img (fwd)": gflops,
            "batch": batch, "amp": amp, "compile": compile, "warm-up s (incl. compile)": warm_s,
            "ops / train step": ops, "train img/s": train_ips,
            "infer img/s": infer_ips, "test set + flip TTA (s)": 2 * TEST_CROPS / infer_ips,
            "peak mem (GiB)": peak_train if peak_train is not None else peak,
            "train TFLOP/s": achieved,
            "% of peak": 100 * achieved / peak_dev if peak_dev else None}


def bench_models(models: list[str], batch: int = 32, steps: int = 5, device: str = "auto", amp: str = "auto",
                 compile: bool = False, channels_last: bool = True, timeout: float | None = None,
                 progress=None) -> pd.DataFrame:
    """bench_one_model for each model, each in a fresh subprocess (clean peak memory, no interference).
    A model still running after `timeout` seconds (a long compile, say) gets a row saying so;
    `progress(table so far)` is called after each model (e.g. to keep a partial section on disk)."""
    rows = []
    for name in models:
        cmd = [sys.executable, "-m", "benchmarks", "_one", "--model", name, "--batch", str(batch),
               "--steps", str(steps), "--device", device, "--amp", amp]
        cmd += ["--compile"] if compile else []
        cmd += [] if channels_last else ["--no-channels-last"]
        print(f"bench: {name} ...", flush=True)
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=paths.REPO, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"bench: {name}: still running after {timeout:g} s; left out", flush=True)
            rows.append({"model": name, "batch": batch, "compile": compile, "note": f"over the {timeout:g}-s limit"})
            if progress:
                progress(pd.DataFrame(rows))
            continue
        if res.returncode != 0:
            raise BenchmarkError(f"benchmark of {name} failed (exit {res.returncode}): {_last_line(res.stderr)}; "
                                 f"the whole error: {shlex.join(['python', *cmd[1:]])}")
        row = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"bench: {name}: {row['train img/s']:.1f} train img/s, {row['infer img/s']:.1f} infer img/s", flush=True)
        rows.append(row)
        if progress:
            progress(pd.DataFrame(rows))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- scaling
def _ddp_worker(rank: int, world: int, name: str, batch: int, steps: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from lib.models import create_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    device = f"cuda:{rank}" if cuda else "cpu"
    if not cuda:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(0)
    model = create_model(name).to(device).to(memory_format=torch.channels_last)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if cuda else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(rank)
    x = ((torch.rand(batch, 3, CROP_SIZE, CROP_SIZE, generator=g) * 255).to(device)
         .contiguous(memory_format=torch.channels_last))
    kp = (torch.rand(batch, NUM_JOINTS, 2, generator=g) * (CROP_SIZE - 1)).to(device)
    amp = resolve_amp("auto", device)

    def step():
        with autocast(device, amp):
            out = net(x)
        loss = model.loss(out, kp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    if cuda:
        torch.cuda.synchronize()
    dist.barrier()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    dist.barrier()
    dt = time.perf_counter() - t
    # every rank must hold identical weights after DDP steps
    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, 0)
    same = bool(torch.equal(flat, ref))
    if rank == 0:
        Path(out).write_text(json.dumps({"seconds": dt, "same_weights": same}))
    dist.destroy_process_group()


def bench_scaling(name: str = "hm_resnet18", procs: tuple[int, ...] = (1, 2), batch: int = 16,
                  steps: int = 5) -> pd.DataFrame:
    """Data-parallel training throughput with 1..N processes (GPUs, or CPU processes with gloo)."""
    import socket
    import tempfile

    import torch.multiprocessing as mp

    rows, base = [], None
    for world in procs:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "r.json")
            mp.spawn(_ddp_worker, args=(world, name, batch, steps, port, out), nprocs=world, join=True)
            r = json.loads(Path(out).read_text())
        ips = steps * batch * world / r["seconds"]
        base = base or ips
        rows.append({"model": name, "processes": world, "batch per process": batch,
                     "backend": "nccl" if torch.cuda.is_available() else "gloo (CPU)",
                     "train img/s": ips, "speed-up": ips / base, "ranks hold equal weights": r["same_weights"]})
    return pd.DataFrame(rows)
