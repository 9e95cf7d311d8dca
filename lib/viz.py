"""Drawing: hand skeletons on images, sample grids, training curves."""
from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np

from lib import io
from lib.joints import EDGES, FINGER_OF, FINGER_COLORS, JOINT_COLORS


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
