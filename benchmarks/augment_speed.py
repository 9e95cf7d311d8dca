"""Augmentation speed: crops per second for none / paper / modern (192 ctx -> 128).

    .venv/bin/python benchmarks/augment_speed.py                 # prints a markdown table
    .venv/bin/python benchmarks/augment_speed.py --n 5000 --workers 0,2 --out out.md

Single process: one thread (cv2.setNumThreads(1), torch.set_num_threads(1)), n calls each,
per wall second and per CPU second of the process (steadier on a shared machine).
DataLoader: N workers collating into batch tensors (uint8 NCHW, pinned when CUDA is there),
timed from the first batch on (worker start-up reported apart). Not a test.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import sys
import time
from pathlib import Path

import albumentations
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import augment, bench  # noqa: E402
from lib.io import write_text  # noqa: E402


def fake_data(k: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k smooth random 192 contexts with hand-like joints inside the central box."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (k, 24, 24, 3), dtype=np.uint8)
    ctx = np.stack([cv2.resize(im, (augment.CTX, augment.CTX), interpolation=cv2.INTER_CUBIC)
                    for im in small])
    p = rng.uniform(augment.PAD + 10, augment.PAD + augment.OUT - 11, (k, 21, 2))
    return ctx, p.astype(np.float32), rng.uniform(0.6, 1.8, k)


class AugDataset(torch.utils.data.Dataset):
    """Length-n view over the fake contexts, augmented with seed = index."""

    def __init__(self, aug: augment.Augment, data, n: int) -> None:
        self.aug, self.data, self.n = aug, data, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        ctx, p, s = self.data
        k = i % len(ctx)
        img, p_out, s_out = self.aug(ctx[k], p[k], float(s[k]), i)
        return torch.from_numpy(img).permute(2, 0, 1), torch.from_numpy(p_out), s_out


def single(aug: augment.Augment, data, n: int) -> tuple[float, float]:
    """(crops per wall second, crops per CPU second of this process)."""
    ctx, p, s = data
    for i in range(20):  # warm-up
        aug(ctx[i % len(ctx)], p[i % len(ctx)], float(s[i % len(ctx)]), i)
    t, c = time.perf_counter(), time.process_time()
    for i in range(n):
        k = i % len(ctx)
        aug(ctx[k], p[k], float(s[k]), i)
    return n / (time.perf_counter() - t), n / (time.process_time() - c)


def loader(aug: augment.Augment, data, n: int, workers: int, batch: int) -> tuple[float, float]:
    """(crops/s after the first batch, seconds to the first batch)."""
    dl = torch.utils.data.DataLoader(
        AugDataset(aug, data, n), batch_size=batch, shuffle=False, num_workers=workers,
        pin_memory=torch.cuda.is_available(), worker_init_fn=bench.one_thread if workers else None,
        persistent_workers=False)
    t0 = time.perf_counter()
    it = iter(dl)
    first = next(it)
    t1 = time.perf_counter()
    count = 0
    for imgs, _, _ in it:
        count += len(imgs)
    t2 = time.perf_counter()
    assert first[0].dtype == torch.uint8 and first[0].shape[1:] == (3, augment.OUT, augment.OUT)
    return count / (t2 - t1), t1 - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="crops per measurement")
    ap.add_argument("--workers", default="0,2", help="DataLoader worker counts, comma-separated")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--pipelines", default=",".join(augment.NAMES))
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    data = fake_data()
    workers = [int(w) for w in args.workers.split(",") if w != ""]
    names = args.pipelines.split(",")

    rows = []
    for name in names:
        aug = augment.build(name)
        wall, cpu = single(aug, data, args.n)
        row = [name, f"{wall:,.0f}", f"{cpu:,.0f}"]
        for w in workers:
            rate, startup = loader(augment.build(name), data, args.n, w, args.batch)
            row.append(f"{rate:,.0f} ({startup:.1f} s to 1st batch)")
        rows.append(row)

    head = (["pipeline", "1 process, 1 thread", "per CPU-second"]
            + [f"DataLoader {w} workers" for w in workers])
    lines = [
        "## Augmentation speed (crops/s, 192 ctx -> 128)",
        "",
        f"- command: `{' '.join(shlex.quote(a) for a in [Path(sys.executable).name] + sys.argv)}`",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- device: {bench.device_line()}",
        f"- versions: python {platform.python_version()}, numpy {np.__version__}, "
        f"opencv {cv2.__version__}, albumentations {albumentations.__version__}, "
        f"torch {torch.__version__}",
        f"- batch {args.batch}, pin_memory={torch.cuda.is_available()}, uint8 NCHW tensors, "
        f"n={args.n} per cell",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ] + ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text(args.out, text)


if __name__ == "__main__":
    main()
