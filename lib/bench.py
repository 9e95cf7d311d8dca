"""Benchmarks: input pipeline, model throughput, scaling and the accuracy leaderboard.

    python -m lib.bench input    [--n 3000] [--workers 0,1,2]        # crops/s cache -> augment -> batch
    python -m lib.bench models   [--models all] [--batch 32]          # img/s, memory, FLOPs per model
    python -m lib.bench scaling  [--model hm_resnet18] [--procs 1,2]  # DDP processes (gloo / nccl)
    python -m lib.bench accuracy                                      # table of the finished runs
    python -m lib.bench all --out BENCHMARKS.md                       # = make bench

With ``--out FILE`` a section's table replaces the block between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` in FILE (appended when absent), so the prose around it stays. Every table
carries the command, device, versions and date. Each model is measured in its own subprocess, so
its peak memory is its own (CUDA: max allocated; CPU: the process's peak RSS).

Accuracy comes from training: `make run` (or the training notebooks) first, then `accuracy`
tabulates outputs/runs/*/ and outputs/leaderboard.csv.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib import paths
from lib.io import write_text
from lib.train import _f32

TEST_CROPS = 3611
# dense bf16 tensor-core peak, TFLOP/s (vendor figures, without sparsity)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


# --------------------------------------------------------------------------- provenance
def device_line(device: str = "cpu") -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "no GPU used"
    return f"{gpu}; {cpu}, {os.cpu_count()} logical CPUs (load {load:.1f} at start)"


def versions() -> str:
    import timm
    out = f"python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}"
    if torch.cuda.is_available():
        out += f", CUDA {torch.version.cuda}"
    return out


def header(title: str, argv: list[str], device: str, extra: str = "", prog: str = "python -m lib.bench") -> list[str]:
    cmd = " ".join([prog] + [shlex.quote(a) for a in argv])
    lines = [f"### {title}", "", f"- command: `{cmd}`",
             f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"- device: {device_line(device)}", f"- versions: {versions()}"]
    return lines + ([f"- {extra}"] if extra else []) + [""]


def markdown(df: pd.DataFrame) -> str:
    return df.astype(object).where(df.notna(), None).to_markdown(index=False, floatfmt=".4g", missingval="")


def update_section(path: str | os.PathLike, name: str, text: str) -> Path:
    """Replace (or append) the <!-- bench:name --> block of a markdown file, atomically."""
    path = Path(path)
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"<!-- bench:{name} -->\n{text.rstrip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block + "\n"
    write_text(path, new)
    return path


def _resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


# --------------------------------------------------------------------------- input pipeline
def bench_input(n: int = 3000, workers: tuple[int, ...] = (0, 1, 2), batch: int = 64,
                pipelines: tuple[str, ...] = ("none", "paper", "modern"), data_dir: str = "auto") -> pd.DataFrame:
    """Crops/s from the crop cache through augmentation to (pinned, on CUDA) uint8 batch tensors."""
    import cv2

    from lib import augment, data
    from lib.pipeline import ensure_data

    cache = data.build_cache(data.find_data(ensure_data(data_dir)).training)
    idx = np.arange(len(cache))
    rows = []
    for name in pipelines:
        aug = None if name == "none" else augment.build(name)
        ds = data.HandDataset(cache, idx, aug)
        # one process, one thread, per CPU second (steady on a shared machine)
        cv2.setNumThreads(1)
        torch.set_num_threads(1)
        m = min(n, 1000)
        for i in range(20):
            ds[i % len(ds)]
        c = time.process_time()
        for i in range(m):
            ds[(i * 7919) % len(ds)]
        row = {"pipeline": name, "per core (crops/CPU-s)": m / (time.process_time() - c)}
        for w in workers:
            ds_w = data.HandDataset(cache, np.resize(idx, n), aug)
            dl = torch.utils.data.DataLoader(ds_w, batch_size=batch, shuffle=True, num_workers=w,
                                             pin_memory=torch.cuda.is_available(),
                                             worker_init_fn=one_thread if w else None,
                                             generator=torch.Generator().manual_seed(0))
            it = iter(dl)
            next(it)  # worker start-up excluded
            t, count = time.perf_counter(), 0
            for b in it:
                count += len(b["image"])
            row[f"{w} workers (crops/s)"] = count / (time.perf_counter() - t)
        rows.append(row)
    torch.set_num_threads(os.cpu_count() or 1)
    return pd.DataFrame(rows)


def one_thread(_: int = 0) -> None:
    """DataLoader worker init: one OpenCV and one torch thread per worker."""
    import cv2
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


# --------------------------------------------------------------------------- model throughput
def forward_flops(model: torch.nn.Module, img: int = 128) -> float:
    """FLOPs of one forward pass of one image (2 per multiply-add), by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, img, img))
    return float(fc.get_total_flops())


def bench_one_model(name: str, batch: int = 32, steps: int = 5, device: str = "auto", amp: str = "auto",
                    channels_last: bool = True, compile: bool = False, infer_batch: int = 512) -> dict:
    """Train and inference throughput of one registered model on random crops (this process)."""
    from lib.models import create_model

    device = _resolve_device(device)
    amp = ("bf16" if device.startswith("cuda") else "off") if amp == "auto" else amp
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    torch.manual_seed(0)
    model = create_model(name)
    params = sum(p.numel() for p in model.parameters())
    gflops = forward_flops(model) / 1e9
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.rand(batch, 3, 128, 128, device=device) * 255).contiguous(memory_format=fmt)
    kp = torch.rand(batch, 21, 2, device=device) * 127
    vis = torch.ones(batch, 21, device=device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def train_step():
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=amp != "off"):
            out = net(x)
        loss = model.loss({k: _f32(v) for k, v in out.items()}, kp, vis)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    warm = 3 if (compile or device.startswith("cuda")) else 1
    for _ in range(warm):
        train_step()
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync()
    train_ips = steps * batch / (time.perf_counter() - t)
    peak_train = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None

    model.eval()
    infer_batch = infer_batch if device.startswith("cuda") else batch
    xi = (torch.rand(infer_batch, 3, 128, 128, device=device) * 255).contiguous(memory_format=fmt)
    with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=amp != "off"):
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
            "batch": batch, "amp": amp, "compile": compile, "train img/s": train_ips,
            "infer img/s": infer_ips, "test set + flip TTA (s)": 2 * TEST_CROPS / infer_ips,
            "peak mem (GiB)": peak_train if peak_train is not None else peak,
            "train TFLOP/s": achieved,
            "% of peak": 100 * achieved / peak_dev if peak_dev else None}


def bench_models(models: list[str], batch: int = 32, steps: int = 5, device: str = "auto", amp: str = "auto",
                 compile: bool = False, channels_last: bool = True) -> pd.DataFrame:
    """bench_one_model for each model, each in a fresh subprocess (clean peak memory, no interference)."""
    rows = []
    for name in models:
        cmd = [sys.executable, "-m", "lib.bench", "_one", "--model", name, "--batch", str(batch),
               "--steps", str(steps), "--device", device, "--amp", amp]
        cmd += ["--compile"] if compile else []
        cmd += [] if channels_last else ["--no-channels-last"]
        print(f"bench: {name} ...", flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=paths.REPO)
        if res.returncode != 0:
            raise RuntimeError(f"benchmark of {name} failed:\n{res.stderr[-2000:]}")
        row = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"bench: {name}: {row['train img/s']:.1f} train img/s, {row['infer img/s']:.1f} infer img/s", flush=True)
        rows.append(row)
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
    x = (torch.rand(batch, 3, 128, 128, generator=g) * 255).to(device).contiguous(memory_format=torch.channels_last)
    kp = (torch.rand(batch, 21, 2, generator=g) * 127).to(device)

    def step():
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=cuda):
            out = net(x)
        loss = model.loss({k: _f32(v) for k, v in out.items()}, kp)
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


# --------------------------------------------------------------------------- accuracy
def bench_accuracy(runs_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The finished runs (val metrics, training time, epochs, test MSE when the solution is known),
    plus the ensembles and baselines of outputs/leaderboard.csv."""
    rows = []
    for d in sorted(Path(runs_dir or paths.runs()).glob("*/")):
        if not (d / "val_metrics.json").exists():
            continue
        m = json.loads((d / "val_metrics.json").read_text())
        cfg = json.loads((d / "config.json").read_text())
        log = pd.read_csv(d / "log.csv") if (d / "log.csv").exists() else pd.DataFrame()
        rows.append({"run": d.name, "model": cfg["model"], "recipe": cfg["recipe"],
                     "train min": log["elapsed_s"].iloc[-1] / 60 if len(log) else None,
                     "epochs": (log["step"].iloc[-1] * cfg.get("batch_size", 0) / max(cfg.get("train_size", 1), 1))
                     if len(log) and "train_size" in cfg else None,
                     "train img/s": log["img_s"].mean() if len(log) else None,
                     "kaggle_mse": m["kaggle_mse"], "epe": m["epe"], "pck@2px": m["pck@2px"], "auc": m["auc"],
                     "test kaggle_mse": m.get("test_kaggle_mse")})
    df = pd.DataFrame(rows)
    board = paths.outputs() / "leaderboard.csv"
    if board.exists():
        lb = pd.read_csv(board)
        for _, r in lb[lb["name"].str.startswith("ensemble") | lb["name"].str.startswith("baseline_")].iterrows():
            n_runs = str(r["model"]).count(":")
            model = f"{n_runs} runs" if n_runs else r["model"]
            df = pd.concat([df, pd.DataFrame([{"run": r["name"], "model": model, "recipe": "-",
                                               "kaggle_mse": r["kaggle_mse"], "epe": r["epe"],
                                               "pck@2px": r["pck@2px"], "auc": r["auc"],
                                               "test kaggle_mse": r.get("test_kaggle_mse")}])],
                           ignore_index=True)
    return df.sort_values("kaggle_mse").reset_index(drop=True) if len(df) else df


# --------------------------------------------------------------------------- CLI
def _section(name: str, title: str, df: pd.DataFrame, argv: list[str], device: str, extra: str, out: str | None) -> str:
    text = "\n".join(header(title, argv, device, extra)) + "\n" + markdown(df) + "\n"
    print(text, flush=True)
    if out:
        update_section(out, name, text)
    return text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m lib.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_in = sub.add_parser("input", help="input pipeline crops/s")
    p_mo = sub.add_parser("models", help="per-model training / inference throughput")
    p_one = sub.add_parser("_one")  # internal: one model, JSON on stdout
    p_sc = sub.add_parser("scaling", help="1 vs N data-parallel processes")
    p_ac = sub.add_parser("accuracy", help="table of the finished runs")
    p_all = sub.add_parser("all", help="input, models, scaling and accuracy")
    for p in (p_in, p_mo, p_sc, p_ac, p_all):
        p.add_argument("--out", help="markdown file whose bench section(s) to update")
    for p in (p_in, p_all):
        p.add_argument("--n", type=int, default=3000, help="crops per DataLoader measurement")
        p.add_argument("--workers", default="0,1,2")
        p.add_argument("--data-dir", default="auto")
    for p in (p_mo, p_one, p_all):
        p.add_argument("--batch", type=int, default=None, help="training batch (default 16 CPU, 256 GPU)")
        p.add_argument("--steps", type=int, default=None, help="timed steps (default 3 CPU, 30 GPU)")
        p.add_argument("--device", default="auto")
        p.add_argument("--amp", default="auto", help="auto (bf16 on GPU) | bf16 | fp16 | off")
        p.add_argument("--compile", action="store_true")
        p.add_argument("--no-channels-last", action="store_true")
    p_mo.add_argument("--models", default="all", help="comma-separated names, or all")
    p_one.add_argument("--model", required=True)
    p_sc.add_argument("--model", default="hm_resnet18")
    p_sc.add_argument("--procs", default=None, help="comma-separated process counts (default 1,2 or 1..GPUs)")
    p_sc.add_argument("--steps", type=int, default=5)
    p_sc.add_argument("--batch", type=int, default=16)
    a = ap.parse_args(argv)

    cuda = torch.cuda.is_available()
    if a.cmd in ("models", "_one", "all"):
        device = _resolve_device(a.device)
        a.batch = a.batch or (256 if device.startswith("cuda") else 16)
        a.steps = a.steps or (30 if device.startswith("cuda") else 3)
    if a.cmd == "_one":
        print(json.dumps(bench_one_model(a.model, a.batch, a.steps, a.device, a.amp, not a.no_channels_last,
                                         a.compile)))
        return 0
    from lib.models import list_models

    if a.cmd in ("input", "all"):
        workers = tuple(int(w) for w in a.workers.split(",") if w)
        df = bench_input(a.n, workers, data_dir=a.data_dir)
        _section("input", "Input pipeline: crop cache -> augmentation -> batch tensor (crops/s)", df, argv,
                 "cpu", f"batch 64, uint8 NCHW, pin_memory={cuda}, {a.n} crops per DataLoader cell; "
                 "per core = one process, one thread, per CPU second", a.out)
    if a.cmd in ("models", "all"):
        names = list_models() if getattr(a, "models", "all") == "all" else a.models.split(",")
        df = bench_models(names, a.batch, a.steps, a.device, a.amp, a.compile, not a.no_channels_last)
        _section("models", "Model throughput at 128x128 (random crops, AdamW step incl. loss)", df, argv, device,
                 f"batch {a.batch}, {a.steps} timed steps after warm-up, channels_last={not a.no_channels_last}; "
                 "train TFLOP/s = 3 x forward FLOPs x img/s; test set + flip TTA = 2 x 3,611 / infer img/s; "
                 "peak mem = CUDA max allocated, or on CPU the process's peak RSS", a.out)
    if a.cmd in ("scaling", "all"):
        procs = (tuple(int(p) for p in a.procs.split(",")) if getattr(a, "procs", None)
                 else tuple(range(1, torch.cuda.device_count() + 1)) if cuda and torch.cuda.device_count() > 1
                 else (1, 2))
        model = getattr(a, "model", "hm_resnet18")
        df = bench_scaling(model, procs, batch=16 if a.cmd == "all" else a.batch,
                           steps=5 if a.cmd == "all" else a.steps)
        _section("scaling", "Data-parallel scaling (DistributedDataParallel)", df, argv, "cuda" if cuda else "cpu",
                 "on CPU the processes share the machine's cores: this checks correctness, not speed-up", a.out)
    if a.cmd in ("accuracy", "all"):
        df = bench_accuracy()
        if df.empty:
            print("accuracy: no finished runs in outputs/runs; run `make run` (or the training notebooks) first")
        else:
            _section("accuracy", "Accuracy leaderboard (validation split; test = the hidden solution when known)",
                     df, argv, "cuda" if cuda else "cpu", "from outputs/runs/*/val_metrics.json, log.csv and "
                     "outputs/leaderboard.csv", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
