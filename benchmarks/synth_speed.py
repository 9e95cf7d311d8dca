"""Throughput of the synthetic RHD renderer (lib.synth), files written included.

    python -m benchmarks.synth_speed [--images 400] [--seed 0] [--workers K]

Renders the same split with 1 worker and with K workers (default: all cores; per-image seeds
come from (seed, split, index), so both runs write identical files) into temporary folders and
prints a markdown table row. The 1-minute load average is printed too: other processes on the
machine lower the multi-worker figure.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

from lib import cli
from lib.synth import render_dataset, render_image


def images_per_second(n: int, workers: int, seed: int) -> tuple[float, float]:
    """Render n training images with `workers` processes into a temporary folder.

    Returns (images per wall-clock second, images per CPU-second of this process); the second
    is only meaningful for workers=1, and is not lowered by other processes' load.
    """
    with tempfile.TemporaryDirectory(prefix="synth_speed_") as d:
        t, c = time.perf_counter(), time.process_time()
        render_dataset(d, "training", n, seed, workers=workers)
        return n / (time.perf_counter() - t), n / (time.process_time() - c)


def main(argv: list[str] | None = None) -> int:
    """The command line; an expected error is one `error: ...` line and exit code 2 (lib.cli)."""
    return cli.run(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ap = argparse.ArgumentParser(prog="python -m benchmarks.synth_speed", description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=cores)
    a = ap.parse_args(argv)
    for opt, v, low in (("--images", a.images, 1), ("--workers", a.workers, 1), ("--seed", a.seed, 0)):
        if v < low:
            raise ValueError(f"{opt}: expected an integer >= {low}, found {v}")
    render_image(0)  # load the background photos once (forked workers inherit them)
    one, one_cpu = images_per_second(a.images, 1, a.seed)
    many = images_per_second(a.images, a.workers, a.seed)[0] if a.workers > 1 else one
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("| cpu | cores | images | 1 worker img/s | 1 worker img/CPU-s | workers | all workers img/s "
          "| 10k images (all workers) | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {platform.processor() or platform.machine()} | {cores} | {a.images} | {one:.1f} | {one_cpu:.1f} | "
          f"{a.workers} | {many:.1f} | {10000 / many / 60:.1f} min | {load:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
