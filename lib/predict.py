"""Batched inference with test-time augmentation, and the predictions of a finished run.

    python -m lib.predict --run resnet34_paper_cpu             # val + test predictions, submission.csv
    python -m lib.predict --run NAME --rotations 10 -10        # add rotation TTA

Labels follow the competition's convention: a crop made at scale s (crop px per source px)
has label = pixel-centre position - (s - 1) / 2. A flip maps label x to 128 - s - x, so the
flip pair also estimates s; rotation TTA uses that estimate.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lib import cli, data, metrics
from lib.config import autocast, resolve_amp, resolve_device
from lib.joints import NUM_JOINTS
from lib.models import load_trained
from lib.runs import Run, labels_fingerprint
from lib.submit import read_submission, validate_submission, write_submission

CENTRE = (data.CROP_SIZE - 1) / 2  # pixel-centre coordinates of the crop centre


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate images about their centre by `degrees`, bilinear, zero fill."""
    a = _sampling_matrix(degrees, x.device).to(x.dtype)
    theta = torch.cat([a, torch.zeros(2, 1, dtype=x.dtype, device=x.device)], 1).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _sampling_matrix(degrees: float, device) -> torch.Tensor:
    """A of _rotate: the output pixel at centred offset o samples the input at offset A o."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    return torch.tensor([[c, s], [-s, c]], device=device)


@torch.no_grad()
def predict(model: torch.nn.Module, crops: np.ndarray, flip: bool = True, rotations: Sequence[float] = (),
            batch_size: int = 128, device: str = "auto", amp: str = "auto") -> np.ndarray:
    """Keypoints (N,21,2) in crop pixels for (N,128,128,3) uint8 RGB crops, averaged over the TTA views."""
    device = resolve_device(device)
    amp = resolve_amp(amp, device)
    model = model.to(device).eval()
    out = []
    for start in range(0, len(crops), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(crops[start : start + batch_size])).to(device)
        x = x.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)
        out.append(_predict_batch(model, x, flip, rotations, amp).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, NUM_JOINTS, 2), np.float32)


def _predict_batch(model, x, flip: bool, rotations: Sequence[float], amp: str) -> torch.Tensor:
    def run(inp):
        with autocast(str(inp.device), amp):
            return model(inp)["kp"].float()

    kp = run(x)
    views = [kp]
    bias = torch.zeros(len(x), 1, 1, device=x.device)  # (s - 1) / 2, unknown without a flip pair
    if flip:
        kf = run(x.flip(-1))
        width = (kp[..., 0] + kf[..., 0]).mean(dim=1, keepdim=True)  # = 128 - s, as the two views see it
        unflipped = kf.clone()
        unflipped[..., 0] = width - kf[..., 0]
        views.append(unflipped)
        bias = ((data.CROP_SIZE - 1 - width) / 2).unsqueeze(-1)
    for deg in rotations:
        kr = run(_rotate(x, deg))
        # a joint seen at output offset o sits at input offset A o (row vectors: o @ A^T)
        back = (kr + bias - CENTRE) @ _sampling_matrix(deg, x.device).T + CENTRE - bias
        views.append(back)
    return torch.stack(views).mean(0)


def predict_run(run_dir: str | os.PathLike | Run, flip: bool = True, rotations: Sequence[float] = (),
                device: str = "auto") -> dict:
    """Validation and test predictions of a run's best model, saved beside it; returns val metrics.

    Refused (ValueError, one line) when best.pt is another model's than the run's config says, or
    when the data has other hands than the run was trained on (its validation index would point
    at other hands)."""
    run = run_dir if isinstance(run_dir, Run) else Run(run_dir)
    with run.lock("predicting"):
        cfg = run.config()
        stamp = run.checkpoint_stamp("best")
        model = load_trained(run.dir, "best", expect=cfg["model"])
        files = data.find_data(cfg["data_dir"])
        cache = data.build_cache(files.training)
        labels = labels_fingerprint(cache.kp, cache.vis)
        if cfg.get("labels", labels) != labels:
            raise ValueError(f"{run.dir}: trained on other hands than {files.training} holds now (labels "
                             f"{cfg['labels']} then, {labels} now): its validation index would score other hands; "
                             f"train again on this data")
        val_idx = run.val_index()
        val_pred = predict(model, np.stack([cache.crop[i] for i in val_idx]), flip, rotations, device=device)
        gt, vis = cache.kp[val_idx], cache.vis[val_idx]
        test_pred = predict(model, data.load_test_crops(files.testing), flip, rotations, device=device)
        run.save_predictions(val_pred, test_pred)
        write_submission(run.submission_path, test_pred)
        validate_submission(run.submission_path, len(test_pred))
        result = {"model": cfg["model"], "recipe": cfg["recipe"], "checkpoint": stamp,
                  "tta": {"flip": flip, "rotations": list(rotations)}, **metrics.summary(val_pred, gt, vis)}
        if files.solution is not None:
            result["test_kaggle_mse"] = metrics.kaggle_mse(test_pred, read_submission(files.solution, len(test_pred)))
        run.write_metrics(result, metrics.per_joint(val_pred, gt, vis))  # last: it marks the predictions current
        return result


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run name (outputs/runs/NAME) or a run directory")
    ap.add_argument("--no-flip", action="store_true")
    ap.add_argument("--rotations", type=float, nargs="*", default=[])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    result = predict_run(Run.find(args.run), not args.no_flip, args.rotations, args.device)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
