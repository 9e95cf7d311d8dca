"""Batched inference with test-time augmentation, and the predictions of a finished run.

    python -m lib.predict --run resnet34_paper_cpu             # val + test predictions, submission.csv
    python -m lib.predict --run NAME --rotations 10 -10        # add rotation TTA
    python -m lib.predict image hand.jpg [more.png ...] --run NAME [--box x0,y0,x1,y1] [--out DIR]

`image`: any JPEG/PNG; without --box the whole image is taken as the hand crop (padded to a
square), with it the square about the box with the training crops' margin (lib.data.image_view). Per image it
writes NAME.joints.json (21 joints in RHD order with names, in the image's pixels, and the box
used) and NAME.joints.png (the skeleton on the original image).

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
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lib import cli, data, io, metrics, viz
from lib import reference as reference_hands
from lib.config import TrainConfig, autocast, resolve_amp, resolve_device
from lib.joints import NAMES as JOINT_NAMES, NUM_JOINTS
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
    cfg = run.config(Run.PREDICTED)  # a missing run is an error before the lock creates anything
    with run.lock("predicting"):
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


def predict_image(model: torch.nn.Module, image: np.ndarray, box: Sequence[float] | None = None,
                  flip: bool = True, rotations: Sequence[float] = (), device: str = "auto",
                  margin: float = data.VIEW_MARGIN) -> dict:
    """The 21 joints of the hand in an RGB image of any size, in the image's pixels (see lib.data.image_view:
    without a box the whole image is the hand crop). Returns {"kp": (21, 2), "square": (x0, y0, side),
    "view": the 128x128 crop the network saw, "whole_image": bool}."""
    view, square = data.image_view(image, box, margin)
    kp = predict(model, view[None], flip, rotations, device=device)[0]
    return {"kp": data.to_image(kp, square), "square": square, "view": view, "whole_image": box is None}


def predict_images(paths: Sequence[str | os.PathLike], run: str | os.PathLike | Run, box: Sequence[float] | None = None,
                   out_dir: str | os.PathLike | None = None, flip: bool = True, device: str = "auto") -> list[dict]:
    """predict_image for image files with a run's best model; writes <stem>.joints.json and
    <stem>.joints.png per image into out_dir (default: beside each image). Returns the JSON records."""
    run = run if isinstance(run, Run) else Run.find(run)
    images = [(Path(p), data.read_image(p)) for p in paths]  # every image readable before any work
    outs = [(Path(out_dir) if out_dir is not None else path.parent) / f"{path.stem}.joints" for path, _ in images]
    first: dict[Path, Path] = {}
    for (path, _), out in zip(images, outs):
        if out in first:
            raise ValueError(f"{first[out]} and {path}: both would write {out}.json/.png; rename one, or predict "
                             f"them into other --out folders")
        first[out] = path
    cfg = run.config(("model",))
    model = load_trained(run.dir, "best", expect=cfg["model"])
    results = []
    for path, image in images:  # all predicted (a box checked against each image) before any file is written
        try:
            results.append(predict_image(model, image, box, flip, device=device))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
    records = []
    for (path, image), r, stem in zip(images, results, outs):
        x0, y0, side = r["square"]
        record = {"image": str(path), "size": [image.shape[1], image.shape[0]], "run": str(run.dir),
                  "model": cfg["model"], "tta": {"flip": flip},
                  "box": None if box is None else [float(v) for v in box],
                  "crop": {"x0": x0, "y0": y0, "side": side, "whole_image": r["whole_image"]},
                  "joints": [{"id": j, "name": JOINT_NAMES[j], "x": float(x), "y": float(y)}
                             for j, (x, y) in enumerate(r["kp"])]}
        io.write_json(stem.with_suffix(".joints.json"), record)
        thick = max(1, round(max(image.shape[:2]) / 300))
        viz.save_png(stem.with_suffix(".joints.png"), viz.draw_skeleton(image, r["kp"], thickness=thick))
        records.append(record)
    return records


def check_real_hands(run: str | os.PathLike | Run, reference=None, device: str = "auto"
                     ) -> tuple[pd.DataFrame | None, np.ndarray | None]:
    """The sim-to-real check: a run's best model (flip TTA) on the real hands of lib.reference, scored
    as the realism meter scores (PCK@0.2 of the keypoint box, EPE in crop px, kaggle MSE over the
    annotated joints). Returns (a table per set, a picture: ground truth white, prediction in colour),
    or (None, None) with a notice when the reference folder is absent."""
    hand_sets = reference_hands.real_hands(*(() if reference is None else (reference,)))
    if not hand_sets:
        return None, None
    run = run if isinstance(run, Run) else Run.find(run)
    model = load_trained(run.dir, "best", expect=run.config(("model",))["model"])
    rows, tiles, labels = [], [], []
    for hands in hand_sets:
        pred = predict(model, hands.crops, device=device)
        rows.append({"hands": hands.name, **metrics.box_scores(pred, hands.kp, hands.labelled)})
        tiles += [viz.compare(c, p, k) for c, p, k in zip(hands.crops, pred, hands.kp)]
        labels += [f"{hands.name.split()[-1]} {i}" for i in range(len(hands.crops))]
    table = pd.DataFrame(rows).rename(columns={"pck": "PCK@0.2", "pck_se": "± (over hands)", "epe": "EPE (px)",
                                          "mse": "kaggle MSE"})
    table.insert(0, "run", run.name)
    return table, viz.grid(tiles, cols=6, labels=labels)


def _parse_box(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    try:
        box = tuple(float(v) for v in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"expected x0,y0,x1,y1 (4 numbers), found {text!r}")
    return box


def _image_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.predict image", description=predict_images.__doc__)
    ap.add_argument("images", nargs="+", help="JPEG/PNG files")
    ap.add_argument("--run", required=True, help="run name (outputs/runs/NAME) or a run directory")
    ap.add_argument("--box", type=_parse_box, help="x0,y0,x1,y1: the hand's extent (same for every image; "
                    "write --box=-5,10,90,120 when it starts with a minus); default: the whole image is the hand crop")
    ap.add_argument("--out", help="output directory (default: beside each image)")
    ap.add_argument("--no-flip", action="store_true", help="no horizontal-flip test-time augmentation (on by default)")
    ap.add_argument("--device", default="auto", help=TrainConfig.field_help()["device"])
    args = ap.parse_args(argv)
    for r in predict_images(args.images, args.run, args.box, args.out, not args.no_flip, args.device):
        where = "the whole image as the hand crop" if r["box"] is None else f"box {r['box']}"
        print(f"{r['image']}: 21 joints ({where}) -> {Path(args.out or Path(r['image']).parent) / Path(r['image']).stem}"
              f".joints.json/.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["image"]:
        return _image_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m lib.predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run name (outputs/runs/NAME) or a run directory")
    ap.add_argument("--no-flip", action="store_true", help="no horizontal-flip test-time augmentation (on by default)")
    ap.add_argument("--rotations", type=float, nargs="*", default=[],
                    help="test-time rotations in degrees, e.g. --rotations -10 10 (averaged with the upright view)")
    ap.add_argument("--device", default="auto", help=TrainConfig.field_help()["device"])
    args = ap.parse_args(argv)
    result = predict_run(Run.find(args.run), not args.no_flip, args.rotations, args.device)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
