"""Drawing: hand skeletons on images, sample grids, training curves."""
from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np

from lib import data, io
from lib.joints import EDGES, FINGER_OF, FINGER_COLORS, JOINT_COLORS
from lib.runs import Run


def draw_skeleton(image: np.ndarray, kp: np.ndarray, vis: np.ndarray | None = None, scale: int = 1,
                  thickness: int = 1, color: tuple[int, int, int] | None = None) -> np.ndarray:
    """A copy of an RGB image (upscaled by `scale`) with the hand skeleton drawn in finger colours.

    Visible joints are filled dots, invisible ones hollow rings; `color` draws everything in one colour
    (e.g. ground truth in white beside a coloured prediction).
    """
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if scale != 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    else:
        img = img.copy()
    pts = (np.asarray(kp, np.float64) + 0.5) * scale - 0.5
    sh = 4  # cv2 sub-pixel shift bits
    ipts = np.round(pts * (1 << sh)).astype(np.int32)
    for a, b in EDGES:
        c = color or FINGER_COLORS[FINGER_OF[b]]
        cv2.line(img, tuple(ipts[a]), tuple(ipts[b]), c, thickness, cv2.LINE_AA, sh)
    r = max(2, thickness + 1) << sh
    for j, p in enumerate(ipts):
        c = color or JOINT_COLORS[j]
        filled = vis is None or bool(np.asarray(vis).reshape(-1)[j])
        cv2.circle(img, tuple(p), r, c, -1 if filled else 1, cv2.LINE_AA, sh)
    return img


def grid(images: Sequence[np.ndarray], cols: int = 8, pad: int = 2, labels: Sequence[str] | None = None) -> np.ndarray:
    """Tile equally sized RGB images into one image, with optional captions."""
    if not len(images):
        raise ValueError("grid: no images")
    h, w = images[0].shape[:2]
    rows = (len(images) + cols - 1) // cols
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w] = im if im.ndim == 3 else im[..., None]
        if labels is not None:
            cv2.putText(out, str(labels[k]), (x + 3, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 2, cv2.LINE_AA)
            cv2.putText(out, str(labels[k]), (x + 3, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def save_png(path: str | os.PathLike, image_rgb: np.ndarray) -> None:
    """Write an RGB image as PNG, atomically."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image_rgb[..., ::-1]))
    if not ok:
        raise ValueError(f"{path}: could not encode image of shape {image_rgb.shape}")
    with io.atomic_open(path, "wb") as f:
        f.write(buf.tobytes())


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    """Save a matplotlib figure atomically (PNG)."""
    with io.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")


def plot_history(run_dir: str | os.PathLike, save: bool = True):
    """Training curves of a run (loss, kaggle_mse, PCK/accuracy), saved as curves.png beside it."""
    import matplotlib.pyplot as plt

    run = Run(run_dir)
    log = run.history()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot(log["epoch"], log["train_loss"], "o-", label="train")
    axes[0].plot(log["epoch"], log["val_loss"], "o-", label="validation")
    axes[0].set(title="loss", xlabel="epoch", yscale="log")
    axes[0].legend()
    axes[1].plot(log["epoch"], log["kaggle_mse"], "o-", color="C3")
    axes[1].set(title="validation kaggle_mse (px²)", xlabel="epoch", yscale="log")
    for col in ("pck@2px", "acc_2px", "auc"):
        axes[2].plot(log["epoch"], log[col], "o-", label=col)
    axes[2].set(title="validation accuracy", xlabel="epoch", ylim=(0, 1))
    axes[2].legend()
    fig.suptitle(run.name)
    fig.tight_layout()
    if save:
        save_figure(fig, run.curves_path)
    return fig


def compare(crop: np.ndarray, pred: np.ndarray, gt: np.ndarray, scale: int = 2) -> np.ndarray:
    """One crop upscaled, ground truth in white under the prediction in finger colours."""
    big = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    up = lambda kp: (np.asarray(kp) + 0.5) * scale - 0.5  # noqa: E731 - pixel-centre upscaling
    return draw_skeleton(draw_skeleton(big, up(gt), color=(255, 255, 255)), up(pred))


def worst_predictions(crops: np.ndarray, pred: np.ndarray, gt: np.ndarray, k: int = 12, scale: int = 2) -> np.ndarray:
    """A grid of the k crops with the largest error: ground truth in white, prediction in finger colours."""
    err = ((pred - gt) ** 2).mean(axis=(1, 2))
    order = np.argsort(-err)[:k]
    tiles = [compare(crops[i], pred[i], gt[i], scale) for i in order]
    return grid(tiles, cols=min(6, k), labels=[f"#{i} mse {err[i]:.0f}" for i in order])


def show(image: np.ndarray, title: str | None = None, width: float = 12.0):
    """Display an RGB image in a notebook at its aspect ratio, without axes."""
    import matplotlib.pyplot as plt

    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(width, width * h / w))
    ax.imshow(image)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def run_worst(run_dir: str | os.PathLike, k: int = 12) -> np.ndarray:
    """The k worst validation predictions of a run (after lib.predict.predict_run), saved as worst.png."""
    run = Run(run_dir)
    cache = data.build_cache(data.find_data(run.config()["data_dir"]).training)
    idx, pred, _ = run.predictions()
    img = worst_predictions(np.stack([cache.crop[i] for i in idx]), pred, cache.kp[idx], k)
    save_png(run.worst_path, img)
    return img
