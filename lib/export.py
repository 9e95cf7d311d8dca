"""A run's trained model as a standalone file, for use outside this repo (ONNX).

    python -m lib.export onnx --run hm_resnet18_64_modern_cpu --out model.onnx
    python -m lib.export onnx --run NAME --out model.onnx --no-check     # skip onnxruntime's check

The graph is the whole model, coordinate decoding included (soft-argmax, argmax + quadratic
refinement, ...): input "image" float32 (B, 3, 128, 128) RGB in 0..255, the competition crop
exactly as the PyTorch model takes it (lib.data: HWC uint8 crop -> transpose(2, 0, 1)), output
"kp" (B, 21, 2) (x, y) in crop pixels (lib.joints order); the batch size is free. No test-time
augmentation: a flip average is two runs and lib.predict's arithmetic.

Exporter: torch.onnx.export(dynamo=True) (torch.export, then onnxscript's translations) at opset
OPSET, weights inside the one file. The weights are the ones the run validated (best.pt, EMA
when kept: lib.models.load_trained). Before the file is published (atomically, lib.io) onnxruntime
runs it on CPU on up to CHECK_CROPS test crops of the run's data and it must match PyTorch within
TOLERANCE_PX; then both are timed per crop at batch 1 and 32 with the same number of threads.
Every registered model exports op for op (tests/test_export.py); what remains is float32 rounding,
which a deep trunk can amplify past TOLERANCE_PX (a fresh inception_v3: PyTorch's own float32 result
is 2.4e-3 px from float64, onnxruntime's as close): then `--tolerance` says how much to accept.

The packages (onnx, onnxscript, onnxruntime) are pinned in requirements.txt (so CI checks the
export); in an environment without them this command says which is missing and how to install it.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import statistics
import sys
import time
import warnings
from io import StringIO
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from lib import cli, data, io
from lib.models import load_trained
from lib.runs import Run

OPSET = 20  # torch 2.14's default for the dynamo exporter; onnxruntime >= 1.17 runs it
TOLERANCE_PX = 1e-3
CHECK_CROPS = 64
LATENCY_BATCHES = (1, 32)
REQUIREMENTS = "requirements.txt"
INPUT_NAME, OUTPUT_NAME = "image", "kp"


class ExportUnavailable(cli.UserError, ImportError):
    """A package the export needs is not installed."""


class ParityError(cli.UserError, RuntimeError):
    """onnxruntime's output differs from PyTorch's by more than TOLERANCE_PX."""


def require(*modules: str) -> None:
    """Import the named packages or raise ExportUnavailable naming the missing ones (one line)."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ExportUnavailable(f"{' and '.join(missing)} {verb} not installed: pip install -r {REQUIREMENTS}")


class Keypoints(nn.Module):
    """The model with only its "kp" output: what the exported graph computes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["kp"]


def check_out_path(out: str | os.PathLike) -> Path:
    """The output file, refused (one line) when it is a directory or its directory does not exist."""
    out = Path(out)
    if out.is_dir():
        raise IsADirectoryError(f"{out}: is a directory; give a file path, e.g. {out / 'model.onnx'}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out}: directory {out.parent} does not exist (create it first)")
    return out


def export_model(model: nn.Module, out: str | os.PathLike, opset: int = OPSET) -> Path:
    """Write `model` (a registered model, eval mode) as ONNX to `out`, atomically; returns the path."""
    require("onnx", "onnxscript")
    out = check_out_path(out)
    with io.atomic_path(out) as tmp:
        write_onnx(model, tmp, opset)
    return out


def write_onnx(model: nn.Module, path: str | os.PathLike, opset: int = OPSET) -> None:
    """torch.onnx.export (dynamo) of model's "kp" with a dynamic batch, into one file at `path`."""
    net = Keypoints(model.cpu().eval()).eval()
    example = torch.rand(2, 3, data.CROP_SIZE, data.CROP_SIZE) * 255
    batch = torch.export.Dim("batch", min=1)
    # the exporter reports its progress on stdout and warns about things that do not concern us
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, (example,), dynamo=True, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), optimize=True, verbose=False)
        program.save(str(path), external_data=False)


def session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session of the file, with `threads` intra-op threads (default: torch's)."""
    require("onnxruntime")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def to_input(crops: np.ndarray) -> np.ndarray:
    """(N, 128, 128, 3) uint8 RGB crops -> the graph's input (N, 3, 128, 128) float32 0..255."""
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)


def run_torch(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """PyTorch's keypoints for the graph's input `x` (one batch, CPU)."""
    with torch.inference_mode():
        return model(torch.from_numpy(x))["kp"].float().numpy()


def run_onnx(sess, x: np.ndarray) -> np.ndarray:
    return sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def max_difference(model: nn.Module, sess, x: np.ndarray) -> float:
    """Largest |onnxruntime - PyTorch| over every coordinate of the batch x, in crop pixels."""
    a, b = run_torch(model, x), run_onnx(sess, x)
    if a.shape != b.shape:
        raise ParityError(f"onnxruntime returned kp of shape {b.shape}, PyTorch {a.shape}")
    return float(np.abs(a - b).max())


def latency(model: nn.Module, sess, x: np.ndarray, batches: Sequence[int] = LATENCY_BATCHES,
            repeats: int = 5) -> dict[int, dict[str, float]]:
    """Median CPU milliseconds per crop of PyTorch and onnxruntime at each batch size, on batches
    of x's samples (repeated when fewer); the caller sets the threads (torch = onnxruntime)."""
    def median_ms(fn, inp) -> float:
        fn(inp)  # warm-up (allocations, onnxruntime's first-run work)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(inp)
            times.append(time.perf_counter() - t)
        return 1000 * statistics.median(times) / len(inp)

    out = {}
    for b in batches:
        inp = np.ascontiguousarray(x[np.arange(b) % len(x)])
        out[int(b)] = {"torch": median_ms(lambda v: run_torch(model, v), inp),
                       "onnxruntime": median_ms(lambda v: run_onnx(sess, v), inp)}
    return out


@contextlib.contextmanager
def torch_threads(n: int) -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_crops(run: Run, n: int = CHECK_CROPS) -> np.ndarray:
    """The first n test crops of the run's data, (n, 128, 128, 3) uint8 RGB."""
    files = data.find_data(run.config(Run.PREDICTED)["data_dir"])
    with data.TestingFile(files.testing) as tf:
        crops = tf.images(slice(0, n))
    if not len(crops):
        raise data.DataError(f"{files.testing}: no test crops to check the export on")
    return crops


def export_onnx(run: str | os.PathLike | Run, out: str | os.PathLike, check: bool = True, *,
                threads: int | None = None, batches: Sequence[int] = LATENCY_BATCHES, repeats: int = 5,
                opset: int = OPSET, tolerance: float = TOLERANCE_PX) -> dict:
    """Export a run's validated model (best.pt) to ONNX at `out`; with `check`, verify it with
    onnxruntime on the run's test crops before publishing it and time it against PyTorch.

    Returns {"out", "model", "opset", "size_bytes"} and, with check, "crops", "max_abs_diff_px",
    "threads" and "latency_ms_per_crop": {batch: {"torch": ms, "onnxruntime": ms}}. Refused (one
    line, nothing written) for a missing package, run, checkpoint or output directory, an output
    path that is a directory, a checkpoint of another model than the run's, or a mismatch."""
    run = run if isinstance(run, Run) else Run.find(run)
    out = check_out_path(out)
    require("onnx", "onnxscript", *(("onnxruntime",) if check else ()))
    cfg = run.config(Run.PREDICTED)
    model = load_trained(run.dir, "best", expect=cfg["model"])
    crops = check_crops(run) if check else None
    threads = threads or torch.get_num_threads()
    result: dict[str, Any] = {"out": str(out), "model": cfg["model"], "opset": opset}
    with io.atomic_path(out) as tmp:
        write_onnx(model, tmp, opset)
        if check:
            with torch_threads(threads):
                sess = session(tmp, threads)
                x = to_input(crops)
                diff = max_difference(model, sess, x)
                if not diff <= tolerance:
                    raise ParityError(f"{out}: onnxruntime differs from PyTorch by {diff:.3g} px on {len(x)} test crops "
                                      f"(tolerance {tolerance} px); not written (--tolerance PX or --no-check to write it)")
                result.update(crops=len(x), max_abs_diff_px=diff, tolerance_px=tolerance, threads=threads,
                              latency_ms_per_crop=latency(model, sess, x, batches, repeats))
    result["size_bytes"] = out.stat().st_size
    return result


def report(result: dict) -> str:
    """The export's summary, a few lines for the terminal."""
    lines = [f"wrote {result['out']} ({result['size_bytes'] / 2**20:.1f} MiB, {result['model']}, opset {result['opset']}): "
             f"input {INPUT_NAME!r} float32 (B,3,128,128) RGB 0..255, output {OUTPUT_NAME!r} (B,21,2) crop px"]
    if "max_abs_diff_px" in result:
        lines.append(f"onnxruntime vs PyTorch on {result['crops']} test crops: max abs difference "
                     f"{result['max_abs_diff_px']:.2g} px (tolerance {result['tolerance_px']} px)")
        lines.append(f"CPU latency per crop, median, {result['threads']} threads each:")
        for b, t in result["latency_ms_per_crop"].items():
            lines.append(f"  batch {b:>3}: PyTorch {t['torch']:.2f} ms, onnxruntime {t['onnxruntime']:.2f} ms "
                         f"({t['torch'] / t['onnxruntime']:.2f}x)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="format", required=True)
    p = sub.add_parser("onnx", help="ONNX file with the coordinate decoding inside, checked with onnxruntime")
    p.add_argument("--run", required=True, help="run name (outputs/runs/NAME) or a run directory")
    p.add_argument("--out", required=True, help="the .onnx file to write (its directory must exist)")
    p.add_argument("--no-check", action="store_true", help="skip onnxruntime's parity check and the timings")
    p.add_argument("--tolerance", type=float, default=TOLERANCE_PX,
                   help=f"largest difference from PyTorch accepted, in crop pixels (default {TOLERANCE_PX})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of PyTorch and onnxruntime (default: torch's)")
    args = ap.parse_args(argv)
    if not args.tolerance >= 0:
        ap.error(f"--tolerance: expected a number >= 0, found {args.tolerance}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads: expected a positive integer, found {args.threads}")
    print(report(export_onnx(args.run, args.out, check=not args.no_check, threads=args.threads,
                             tolerance=args.tolerance)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
