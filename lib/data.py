"""The competition's data: .h5 files, the exact competition crop, the RHD builder, split, crop cache.

Files (Kaggle competition `mp18-hand-joint-recognition`, the format of the 2018 course):
  training.h5  group `train`: img (N,3,320,320) uint8, kp_2D (N,21,2) float32 x,y in 320 px,
               vis_2D (N,21,1) uint8; one entry per hand (an image with two hands appears twice)
  testing.h5   group `test`: img (N,3,128,128) float32 holding 0..255, the competition crops
  solution.csv ground truth of the test crops in submission format (only when built from RHD)

    python -m lib.data build --rhd RHD_DIR --out data/          # RHD layout -> competition files
    python -m lib.data info data/                                # validate and summarise
    python -m lib.data cache data/                               # build the training crop cache
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import cv2
import h5py
import numpy as np
import pandas as pd
import torch

from lib import cli, io
from lib.joints import NUM_JOINTS

IMAGE_SIZE = 320
CROP_SIZE = 128
MARGIN = 8
# image_view's margin per side around a hand box, relative to its longer side: the competition's 8 px
# around RHD's median keypoint box (46 px long: the synthetic set's validation hands, whose sizes are
# fitted to RHD's); 0.08 (8 px of a 100-px hand) framed hands twice as tightly as the training crops
VIEW_MARGIN = 0.17
CTX_SIZE = 192  # context crop: the competition box fills the central 128x128
CTX_PAD = (CTX_SIZE - CROP_SIZE) // 2
CACHE_VERSION = 1
VALUE_CHUNK = 256  # test crops per read when checking pixel values (~50 MB of float32)
ChannelOrder = Literal["rgb", "bgr", "auto"]

HOW_TO_GET = (
    "get the competition files with `make download` (kaggle competitions download "
    "mp18-hand-joint-recognition), build them from the public RHD download with "
    "`python -m lib.data build --rhd RHD_DIR --out data/`, or render the synthetic default "
    "with `make data`"
)


class DataError(ValueError):
    """Bad input data: the message names the file, the field, what was expected and found."""


# --------------------------------------------------------------------------- the crop


def crop_box(kp: np.ndarray, size: int = IMAGE_SIZE) -> tuple[int, int, int]:
    """The competition's square crop box (x_min, y_min, side) for 21 keypoints in a size×size image."""
    kp = np.asarray(kp, dtype=np.float64)
    if kp.shape != (NUM_JOINTS, 2) or not np.isfinite(kp).all():
        raise ValueError(f"keypoints: expected finite ({NUM_JOINTS}, 2), found shape {kp.shape}")
    lo = np.ceil(kp.min(axis=0)).astype(int)
    hi = np.floor(kp.max(axis=0)).astype(int)
    if (lo < 0).any() or (hi > size).any():
        raise ValueError(
            f"hand outside the image: keypoints span x {kp[:, 0].min():.1f}..{kp[:, 0].max():.1f}, "
            f"y {kp[:, 1].min():.1f}..{kp[:, 1].max():.1f}; expected ceil(min) >= 0 and floor(max) <= {size}"
        )
    hi = np.where(hi == size, size - 1, hi)
    lo = np.where(lo - MARGIN >= 0, lo - MARGIN, lo)
    hi = np.where(hi + MARGIN < size, hi + MARGIN, hi)
    extent = hi - lo
    longer, short_axis = int(extent.max()), int(np.argmin(extent))
    if longer <= 0:
        raise ValueError(f"degenerate hand: all keypoints within one pixel ({kp.min(axis=0)})")
    if extent[short_axis] < longer:
        if lo[short_axis] + longer <= size - 1:
            hi[short_axis] = lo[short_axis] + longer
        else:  # flush against the far border, i.e. extended on both sides
            lo[short_axis] = hi[short_axis] - (longer - (size - hi[short_axis] - 1))
            hi[short_axis] = size - 1
    return int(lo[0]), int(lo[1]), longer


def competition_crop(image: np.ndarray, kp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop a hand exactly as the competition's test crops were made: (128,128,3) uint8 and (21,2) px."""
    if image.ndim != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"image: expected a square (S,S,C) array, found {image.shape}")
    size = image.shape[0]
    x0, y0, side = crop_box(kp, size)
    crop = image[y0 : y0 + side, x0 : x0 + side]
    out = np.asarray(kp, dtype=np.float64) - (x0, y0)
    for axis in (0, 1):  # the one joint with the largest coordinate is clamped to the crop width
        j = int(np.argmax(out[:, axis]))
        if out[j, axis] > crop.shape[1 - axis]:
            out[j, axis] = crop.shape[1 - axis]
    crop = cv2.resize(np.ascontiguousarray(crop), (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)
    return crop, (out * (CROP_SIZE / side)).astype(np.float32)


def context_crop(image: np.ndarray, kp: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A (192,192,3) crop whose central 128×128 is the competition crop, zero outside the image.

    Returns the crop, the keypoints in its pixel-centre image space and the scale s (px per source px).
    The competition label of a pixel-centre point p in a 128 crop of scale s is p - (s - 1) / 2.
    """
    x0, y0, side = crop_box(kp, image.shape[0])
    s = CROP_SIZE / side
    a = 1.0 / s  # ctx pixel j samples source x0 + (j - pad + 0.5) / s - 0.5, as cv2.resize does
    m = np.array([[a, 0, x0 + (0.5 - CTX_PAD) * a - 0.5], [0, a, y0 + (0.5 - CTX_PAD) * a - 0.5]])
    ctx = cv2.warpAffine(
        image, m, (CTX_SIZE, CTX_SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    p = (np.asarray(kp, np.float64) - (x0, y0) + 0.5) * s - 0.5 + CTX_PAD
    return ctx, p.astype(np.float32), float(s)


def degenerate_hands(kp: np.ndarray) -> np.ndarray:
    """True per hand of (..., 21, 2) keypoints whose 21 points lie within 1 px of each other (no hand to crop)."""
    kp = np.asarray(kp, np.float64)
    return (kp.max(axis=-2) - kp.min(axis=-2)).max(axis=-1) < 1.0


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H,W,3) uint8 RGB, upright as a viewer shows it (a JPEG's EXIF orientation
    applied: phone photos): grayscale is repeated, alpha composited on black, 16-bit scaled to 8; a
    missing or unreadable file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    with open(path, "rb") as f:
        jpeg = f.read(2) == b"\xff\xd8"
    # IMREAD_UNCHANGED keeps alpha and 16 bits but ignores EXIF orientation; a JPEG has neither
    img = cv2.imread(str(path), cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if jpeg else cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DataError(f"{path}: expected a readable image (PNG, JPEG, ...), found a file OpenCV cannot decode")
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(f"{path}: expected 8- or 16-bit pixels, found {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 4:  # BGRA: composite on black, the colour of the crop's padding
        a = img[..., 3:4].astype(np.float32) / 255
        img = np.round(img[..., :3] * a).astype(np.uint8)
    if img.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    return np.ascontiguousarray(img[..., 2::-1])


def image_view(image: np.ndarray, box: tuple[float, float, float, float] | None = None,
               margin: float = VIEW_MARGIN) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The network's 128x128 view of a hand in an image of any size, and (x0, y0, side) of the square
    it shows (in image pixels; parts outside the image are black).

    Without a box the whole image is the hand crop (padded to a square, centred). With a box
    (x0, y0, x1, y1: the hand's extent, e.g. a detector's): each side grows by `margin` times the
    longer side (VIEW_MARGIN: the competition's 8 px around a median RHD hand), the shorter side is
    extended to a square about the box's centre, and the square is resized (bilinear) to 128. (The
    competition's crops extend it down or right instead; that measured no better: README, "A trained
    model outside the competition".) `to_image` maps the predicted labels back."""
    h, w = image.shape[:2]
    if box is None:
        side = float(max(h, w))
        x0, y0 = (w - side) / 2, (h - side) / 2
    else:
        bx0, by0, bx1, by1 = (float(v) for v in box)
        if not all(np.isfinite([bx0, by0, bx1, by1])) or bx1 <= bx0 or by1 <= by0:
            raise ValueError(f"box: expected x0,y0,x1,y1 with x1 > x0 and y1 > y0, found {box}")
        if bx1 <= 0 or by1 <= 0 or bx0 >= w or by0 >= h:
            raise ValueError(f"box: expected a box overlapping the {w}x{h} image, found {box}")
        side = max(bx1 - bx0, by1 - by0) * (1 + 2 * margin)
        x0, y0 = (bx0 + bx1 - side) / 2, (by0 + by1 - side) / 2
    s = CROP_SIZE / side
    a = 1.0 / s  # crop pixel j samples image x0 + (j + 0.5) / s - 0.5, as cv2.resize does
    m = np.array([[a, 0, x0 + 0.5 * a - 0.5], [0, a, y0 + 0.5 * a - 0.5]])
    view = cv2.warpAffine(image, m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return view, (x0, y0, side)


def to_image(kp: np.ndarray, square: tuple[float, float, float]) -> np.ndarray:
    """Competition labels (N?,21,2) of a view made by image_view -> pixel coordinates in the image
    (the competition's convention: label = (image position - x0) * 128 / side)."""
    x0, y0, side = square
    return np.asarray(kp, np.float64) * (side / CROP_SIZE) + (x0, y0)


def label_from_pixels(p: np.ndarray, s: np.ndarray | float) -> np.ndarray:
    """Competition label of pixel-centre points p in a 128 crop made at scale s."""
    return (p - (np.asarray(s, np.float32)[..., None, None] - 1) / 2).astype(np.float32)


# --------------------------------------------------------------------------- competition files


def _fail(path: Path | str, key: str, expected: str, found: object) -> DataError:
    return DataError(f"{path}: {key}: expected {expected}, found {found}")


def _open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; {HOW_TO_GET}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {e}") from e


def _check_dataset(path, f: h5py.File, key: str, shape_tail: tuple, dtypes: tuple, n: int | None = None):
    if key not in f:
        raise _fail(path, key, "a dataset", f"keys {sorted(_all_keys(f))}")
    d = f[key]
    if not isinstance(d, h5py.Dataset) or d.ndim != len(shape_tail) + 1 or d.shape[1:] != shape_tail:
        raise _fail(path, key, f"shape (N, {', '.join(map(str, shape_tail))})", getattr(d, "shape", type(d)))
    if d.dtype not in dtypes:
        raise _fail(path, key, f"dtype {' or '.join(np.dtype(t).name for t in dtypes)}", d.dtype)
    if n is not None and d.shape[0] != n:
        raise _fail(path, key, f"{n} entries (as many as the images)", d.shape[0])
    return d


def _all_keys(f: h5py.File) -> list[str]:
    keys: list[str] = []
    f.visit(keys.append)
    return keys


def detect_channel_order(images: np.ndarray, kp: np.ndarray | None = None) -> tuple[str, str]:
    """Guess whether (N,3,H,W) images are stored RGB or BGR from skin colour (red > blue).

    Samples 5×5 patches at the keypoints when given, else the central quarter of the crop.
    Returns the order and a one-line reason.
    """
    reds, blues = [], []
    for i in range(len(images)):
        img = images[i].astype(np.float32)
        if kp is not None:
            for x, y in np.round(kp[i]).astype(int):
                y0, x0 = max(y - 2, 0), max(x - 2, 0)
                patch = img[:, y0 : y + 3, x0 : x + 3]
                if patch.size:
                    reds.append(patch[0].mean())
                    blues.append(patch[2].mean())
        else:
            h, w = img.shape[1:]
            patch = img[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
            reds.append(patch[0].mean())
            blues.append(patch[2].mean())
    c0, c2 = float(np.mean(reds)), float(np.mean(blues))
    order = "rgb" if c0 >= c2 else "bgr"
    where = "at the keypoints" if kp is not None else "in the crop centre"
    return order, f"channel 0 mean {c0:.1f} vs channel 2 mean {c2:.1f} {where} (skin: red > blue) -> {order}"


class _H5Reader:
    """Lazy, validated access to one competition .h5 file (never loads the whole file)."""

    group: str
    img_shape: tuple[int, int, int]

    def __init__(self, path: str | os.PathLike, channel_order: ChannelOrder = "auto", verbose: bool = True):
        self.path = Path(path)
        self._f = _open_h5(self.path)
        if self.group not in self._f:
            raise _fail(self.path, self.group, f"a group '{self.group}'", f"keys {sorted(self._f.keys())}")
        self._validate()
        if channel_order not in ("rgb", "bgr", "auto"):
            raise ValueError(f"channel_order: expected 'rgb', 'bgr' or 'auto', found {channel_order!r}")
        self.channel_reason = f"set explicitly to {channel_order}"
        if channel_order == "auto":
            channel_order, self.channel_reason = self._detect()
        self.channel_order: str = channel_order
        if verbose:
            print(f"{self.path.name}: {len(self)} entries, channels {self.channel_reason}")

    def __len__(self) -> int:
        return self.img.shape[0]

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _to_hwc_rgb(self, chw: np.ndarray) -> np.ndarray:
        img = np.clip(chw, 0, 255).astype(np.uint8) if chw.dtype != np.uint8 else chw
        img = np.moveaxis(img, -3, -1)
        return np.ascontiguousarray(img[..., ::-1] if self.channel_order == "bgr" else img)

    def read(self, idx: int | slice | np.ndarray) -> np.ndarray:
        """Raw image entries (N,3,H,W) as stored; a corrupt chunk is a DataError naming the file and entries."""
        try:
            return self.img[idx]
        except OSError as e:  # h5py: a damaged compressed chunk, a truncated file
            entries = (range(*idx.indices(len(self))) if isinstance(idx, slice)
                       else np.atleast_1d(np.asarray(idx)).tolist())
            bad = next((int(i) for i in entries if not self._readable(int(i))), None)
            where = (f"entry {bad}" if bad is not None
                     else f"entries {entries[0]}..{entries[-1]}" if len(entries) else "")
            raise DataError(f"{self.path}: {self.img.name.lstrip('/')} {where}: expected readable image data, "
                            f"found a damaged chunk (truncated or corrupt file?): {e}") from e

    def _readable(self, i: int) -> bool:
        try:
            self.img[i]
            return True
        except OSError:
            return False

    def images(self, idx: int | slice | np.ndarray) -> np.ndarray:
        """Images as HWC uint8 RGB; idx an int, a slice or sorted indices."""
        return self._to_hwc_rgb(self.read(idx))


class TrainingFile(_H5Reader):
    """training.h5: 320×320 images with keypoints and visibility, one entry per hand."""

    group = "train"

    def _validate(self) -> None:
        f, p = self._f, self.path
        self.img = _check_dataset(p, f, "train/img", (3, IMAGE_SIZE, IMAGE_SIZE), (np.uint8,))
        n = self.img.shape[0]
        if n == 0:
            raise _fail(p, "train/img", "at least 1 entry (one per hand)", "0 entries")
        kp = _check_dataset(p, f, "train/kp_2D", (NUM_JOINTS, 2), (np.float32, np.float64), n)
        vis = _check_dataset(p, f, "train/vis_2D", (NUM_JOINTS, 1), (np.uint8, np.bool_, np.int64, np.int32), n)
        try:
            self.kp = kp[...].astype(np.float32)  # small: N*21*2 floats
            self.vis = vis[...].reshape(n, NUM_JOINTS).astype(np.uint8)
        except OSError as e:
            raise DataError(f"{p}: train/kp_2D: unreadable (truncated or corrupt?): {e}") from e
        bad = np.argwhere(~np.isfinite(self.kp).all(axis=(1, 2))).ravel()
        if bad.size:
            raise _fail(p, "train/kp_2D", "finite keypoints", f"NaN/inf in entries {bad[:5].tolist()}")
        lo, hi = np.ceil(self.kp.min(axis=1)), np.floor(self.kp.max(axis=1))
        out = np.argwhere(((lo < 0) | (hi > IMAGE_SIZE)).any(axis=1)).ravel()
        if out.size:
            raise _fail(p, "train/kp_2D", f"keypoints inside the {IMAGE_SIZE}x{IMAGE_SIZE} image",
                        f"{out.size} hands outside, e.g. entry {out[0]} spanning {self.kp[out[0]].min(0)}..{self.kp[out[0]].max(0)}")
        flat = np.flatnonzero(degenerate_hands(self.kp))
        if flat.size:
            i = int(flat[0])
            raise _fail(p, "train/kp_2D", "21 keypoints spread over at least 1 px per hand",
                        f"{flat.size} degenerate hand(s) with every keypoint at one point, e.g. entry {i} at "
                        f"({self.kp[i, :, 0].mean():.1f}, {self.kp[i, :, 1].mean():.1f}); entries {flat[:5].tolist()}")
        if not np.isin(self.vis, (0, 1)).all():
            raise _fail(p, "train/vis_2D", "values 0 or 1", np.unique(self.vis)[:10])

    def _detect(self) -> tuple[str, str]:
        idx = np.linspace(0, len(self) - 1, min(len(self), 48)).astype(int)
        idx = np.unique(idx)
        return detect_channel_order(self.read(idx), self.kp[idx])

    def image_ids(self) -> np.ndarray:
        """Source-image id per entry: consecutive entries with identical pixels share an image."""
        return image_ids([pixel_digest(img) for start in range(0, len(self), 256)
                          for img in self.read(slice(start, start + 256))])


def pixel_digest(img: np.ndarray) -> bytes:
    return hashlib.blake2b(img.tobytes(), digest_size=16).digest()


def image_ids(digests: list[bytes]) -> np.ndarray:
    """Source-image id per entry from the entries' pixel digests: consecutive entries with identical
    pixels (one image, several hands) share the first one's index."""
    ids = np.arange(len(digests), dtype=np.int64)
    for i in range(1, len(digests)):
        if digests[i] == digests[i - 1]:
            ids[i] = ids[i - 1]
    return ids


class TestingFile(_H5Reader):
    """testing.h5: the 128×128 competition crops, float32 0..255."""

    group = "test"

    def _validate(self) -> None:
        self.img = _check_dataset(self.path, self._f, "test/img", (3, CROP_SIZE, CROP_SIZE), (np.float32, np.float64, np.uint8))
        n = len(self.img)
        if n == 0:
            raise _fail(self.path, "test/img", "at least 1 entry (one per test crop)", "0 entries")
        if self.img.dtype == np.uint8:
            lo, hi = 0.0, float(max(self.read(slice(s, s + VALUE_CHUNK)).max() for s in range(0, n, VALUE_CHUNK)))
        else:  # every crop, a chunk at a time: memory stays bounded whatever the file's size
            lo, hi = np.inf, -np.inf
            for s in range(0, n, VALUE_CHUNK):
                block = self.read(slice(s, s + VALUE_CHUNK))
                nan = ~np.isfinite(block).all(axis=(1, 2, 3))
                out = ((block < 0) | (block > 255)).any(axis=(1, 2, 3))  # False for NaN
                if nan.any() or out.any():
                    i = int(np.argmax(nan | out))
                    bad = int((nan | out).sum())
                    found = (f"NaN/inf in entry {s + i}" if nan[i] else
                             f"{np.nanmin(block[i]):.3g}..{np.nanmax(block[i]):.3g} in entry {s + i}")
                    raise _fail(self.path, "test/img", "finite pixel values in 0..255",
                                f"{found} ({bad} bad entries in {s}..{s + len(block) - 1})")
                lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        if hi <= 1.0:
            raise _fail(self.path, "test/img", "pixel values in 0..255",
                        f"{lo:.3g}..{hi:.3g} in every entry (scaled to 0..1?)")

    def _detect(self) -> tuple[str, str]:
        idx = np.unique(np.linspace(0, len(self) - 1, min(len(self), 48)).astype(int))
        return detect_channel_order(self.read(idx))


def write_training(path: str | os.PathLike, images_hwc_rgb: Iterator[np.ndarray] | list,
                   kp: np.ndarray, vis: np.ndarray, channel_order: str = "bgr") -> None:
    """Write training.h5 atomically; images are written as the course did (BGR by default)."""
    kp = np.asarray(kp, np.float32)
    n = len(kp)
    with io.atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        g = f.create_group("train")
        d = g.create_dataset("img", (n, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8, chunks=(1, 3, IMAGE_SIZE, IMAGE_SIZE))
        k = -1
        for k, img in enumerate(images_hwc_rgb):
            if img.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
                raise ValueError(f"image {k}: expected ({IMAGE_SIZE}, {IMAGE_SIZE}, 3), found {img.shape}")
            d[k] = np.moveaxis(img[..., ::-1] if channel_order == "bgr" else img, -1, 0)
        if k + 1 != n:
            raise ValueError(f"{path}: got {k + 1} images for {n} keypoint sets")
        g.create_dataset("kp_2D", data=kp)
        g.create_dataset("vis_2D", data=np.asarray(vis, np.uint8).reshape(n, NUM_JOINTS, 1))


def write_testing(path: str | os.PathLike, crops_hwc_rgb: np.ndarray) -> None:
    """Write testing.h5 atomically: (N,3,128,128) float32 0..255 RGB crops."""
    crops = np.moveaxis(np.asarray(crops_hwc_rgb), -1, 1).astype(np.float32)
    with io.atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_group("test").create_dataset("img", data=crops, chunks=(1, 3, CROP_SIZE, CROP_SIZE))


COLUMNS = ["Id"] + [f"Joint {j} {a}" for j in range(NUM_JOINTS) for a in ("x", "y")]


def write_keypoints_csv(path: str | os.PathLike, kp: np.ndarray) -> Path:
    """Write (N,21,2) crop-pixel keypoints in the submission format (Id, Joint 0 x, ...), atomically."""
    kp = np.asarray(kp, np.float64)
    if kp.ndim != 3 or kp.shape[1:] != (NUM_JOINTS, 2):
        raise ValueError(f"{path}: keypoints: expected (N, {NUM_JOINTS}, 2), found {kp.shape}")
    if not np.isfinite(kp).all():
        raise ValueError(f"{path}: keypoints: expected finite numbers, found NaN/inf in rows "
                         f"{np.flatnonzero(~np.isfinite(kp).all(axis=(1, 2)))[:5].tolist()}")
    df = pd.DataFrame(kp.reshape(len(kp), -1), columns=COLUMNS[1:])
    df.insert(0, "Id", np.arange(len(kp)))
    with io.atomic_open(path, "w", newline="") as f:
        df.to_csv(f, index=False, float_format="%.6f")
    return Path(path)


def read_keypoints_csv(path: str | os.PathLike, n_rows: int | None = None) -> np.ndarray:
    """Read and validate a keypoints CSV in the submission format; returns (N,21,2).

    n_rows: the test set size if known. A bad file raises DataError naming what is wrong; a
    missing one FileNotFoundError.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such submission file")
    try:
        df = pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise DataError(f"{path}: not a readable CSV: {e}") from e
    if len(df.columns) == len(COLUMNS) and set(df.columns) == set(COLUMNS) and list(df.columns) != COLUMNS:
        k = next(k for k, (a, b) in enumerate(zip(COLUMNS, df.columns)) if a != b)
        raise DataError(f"{path}: header: columns in another order: expected '{COLUMNS[k]}' as column {k + 1} "
                        f"(order {', '.join(COLUMNS[:3])}, ..., {COLUMNS[-1]}), found '{df.columns[k]}'")
    if len(df.columns) == 1 and any(sep in str(df.columns[0]) for sep in ";\t"):
        sep = ";" if ";" in str(df.columns[0]) else "a tab"
        raise DataError(f"{path}: header: expected {len(COLUMNS)} comma-separated columns, found one column "
                        f"holding {sep} between names (saved with another separator? write it with commas)")
    if list(df.columns) != COLUMNS:
        extra = [c for c in df.columns if c not in COLUMNS][:3]
        missing = [c for c in COLUMNS if c not in df.columns][:3]
        raise DataError(f"{path}: header: expected {COLUMNS[0]},{COLUMNS[1]},...,{COLUMNS[-1]} "
                        f"({len(COLUMNS)} columns), found {len(df.columns)} columns"
                        f"{'; unexpected ' + str(extra) if extra else ''}"
                        f"{'; missing ' + str(missing) if missing else ''}")
    if len(df) == 0:
        raise DataError(f"{path}: rows: expected at least 1 (one per test crop), found 0 (a header only)")
    if n_rows is not None and len(df) != n_rows:
        raise DataError(f"{path}: rows: expected {n_rows} (one per test crop), found {len(df)}")
    raw = df["Id"]
    ids = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
    not_int = ~np.isfinite(ids) | (ids != np.round(ids))
    if not_int.any():
        r = int(np.argmax(not_int))
        found = "an empty cell" if pd.isna(raw.iloc[r]) else repr(raw.iloc[r])
        raise DataError(f"{path}: row {r} (line {r + 2}): Id: expected an integer, found {found}")
    dup = pd.Series(ids).duplicated().to_numpy()
    if dup.any():
        r = int(np.argmax(dup))
        first = int(np.argmax(ids == ids[r]))
        raise DataError(f"{path}: row {r} (line {r + 2}): Id: expected 0..{len(df) - 1} once each, "
                        f"found Id {int(ids[r])} again (first at row {first})")
    if not np.array_equal(ids, np.arange(len(df))):
        r = int(np.argmax(ids != np.arange(len(df))))
        raise DataError(f"{path}: Id: expected 0..{len(df) - 1} in order, found Id {int(ids[r])} at row {r} "
                        f"(line {r + 2})")
    values = df[COLUMNS[1:]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        cell = df.iloc[r, 1 + c]
        found = "an empty cell" if pd.isna(cell) else repr(cell) if isinstance(cell, str) else f"{float(cell)}"
        raise DataError(f"{path}: row {r} column '{COLUMNS[1 + c]}': expected a finite number, "
                        f"found {found} ({bad.sum()} bad cells)")
    return values.reshape(len(df), NUM_JOINTS, 2)


# --------------------------------------------------------------------------- RHD


def read_rhd_annotations(rhd_dir: str | os.PathLike, split: str) -> dict[int, dict]:
    """The RHD annotation pickle of one split: id -> {'uv_vis' (42,3), 'xyz' (42,3), 'K' (3,3)}."""
    path = Path(rhd_dir) / split / f"anno_{split}.pickle"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; expected the RHD layout {split}/anno_{split}.pickle, "
                                f"{split}/color/%05d.png")
    try:
        with open(path, "rb") as f:
            anno = pickle.load(f)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DataError(f"{path}: unreadable pickle (truncated or corrupt?): {e}") from e
    if not isinstance(anno, dict):
        raise _fail(path, "<root>", "a dict id -> annotation", type(anno).__name__)
    for i, a in anno.items():
        uv = np.asarray(a.get("uv_vis", ()))
        if uv.shape != (2 * NUM_JOINTS, 3):
            raise _fail(path, f"[{i}]['uv_vis']", f"shape ({2 * NUM_JOINTS}, 3)", uv.shape)
    return anno


def read_rhd_image(rhd_dir: str | os.PathLike, split: str, idx: int) -> np.ndarray:
    """One RHD colour image as HWC uint8 RGB."""
    path = Path(rhd_dir) / split / "color" / f"{idx:05d}.png"
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{path}: missing or unreadable image")
    return img[..., ::-1]


def read_rhd_images(rhd_dir: str | os.PathLike, split: str, ids: list[int], block: int = 256) -> Iterator[np.ndarray]:
    """read_rhd_image of each id, in order, decoded by a thread per core (OpenCV's decoder runs
    without the GIL), a block at a time so memory stays bounded (~80 MB)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for start in range(0, len(ids), block):
            yield from pool.map(lambda i: read_rhd_image(rhd_dir, split, i), ids[start:start + block])


def hand_inside(uv: np.ndarray, size: int = IMAGE_SIZE) -> bool:
    """The course's rule for a usable hand: ceil(min) >= 0 and floor(max) <= size."""
    return bool(np.isfinite(uv).all() and np.ceil(uv.min()) >= 0 and np.floor(uv.max()) <= size)


def usable_hand(uv: np.ndarray, size: int = IMAGE_SIZE) -> bool:
    """hand_inside, and not degenerate (its 21 keypoints spread over at least 1 px)."""
    return hand_inside(uv, size) and not bool(degenerate_hands(np.asarray(uv)[:, :2]))


def _hand_rows(uv_vis: np.ndarray, hand: int) -> np.ndarray:
    """The rows of one hand (0 left, 1 right) in an RHD frame's (42, ...) annotation."""
    return np.asarray(uv_vis)[NUM_JOINTS * hand : NUM_JOINTS * (hand + 1)]


def usable_hand_crops(image: np.ndarray, uv_vis: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The competition crops (crop, keypoints) of an RHD frame's usable hands, left then right, as
    build_competition makes the test set; uv_vis: the frame's (42, >=2) annotation rows."""
    hands = [_hand_rows(uv_vis, h)[:, :2] for h in (0, 1)]
    return [competition_crop(image, uv) for uv in hands if usable_hand(uv)]


def split_crops(rhd_dir: str | os.PathLike, split: str, anno: dict[int, dict],
                ids: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(crops, keypoints) of the usable hands of these images of an RHD split, left then right per
    image: the test set's crops (build_competition), or any split's for the realism meter."""
    crops, kps = [], []
    for i in ids:
        for c, k in usable_hand_crops(read_rhd_image(rhd_dir, split, i), anno[i]["uv_vis"]):
            crops.append(c)
            kps.append(k)
    return crops, kps


def _usable_hands(anno: dict[int, dict], path: str) -> list[tuple[int, int]]:
    """(frame, hand) of the usable hands of an RHD split; a degenerate hand inside the image is skipped
    with a line naming it."""
    entries = []
    for i in sorted(anno):
        for h in (0, 1):
            uv = _hand_rows(anno[i]["uv_vis"], h)[:, :2]
            if not hand_inside(uv):
                continue
            if degenerate_hands(uv):
                print(f"{path}: [{i}] {('left', 'right')[h]} hand: every keypoint at one point "
                      f"({uv[:, 0].mean():.1f}, {uv[:, 1].mean():.1f}); skipped", file=sys.stderr)
                continue
            entries.append((i, h))
    return entries


def build_competition(rhd_dir: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> dict:
    """Build training.h5, testing.h5 and solution.csv from an RHD-layout directory, as the course did."""
    rhd_dir, out_dir = Path(rhd_dir), Path(out_dir)
    outputs = [out_dir / n for n in ("training.h5", "testing.h5", "solution.csv")]
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist; pass --overwrite to rebuild")
    summary = {}
    train = read_rhd_annotations(rhd_dir, "training")
    entries = _usable_hands(train, str(rhd_dir / "training" / "anno_training.pickle"))
    kp = (np.stack([_hand_rows(train[i]["uv_vis"], h)[:, :2] for i, h in entries]).astype(np.float32) if entries
          else np.zeros((0, NUM_JOINTS, 2), np.float32))
    vis = (np.stack([_hand_rows(train[i]["uv_vis"], h)[:, 2] for i, h in entries]) if entries
           else np.zeros((0, NUM_JOINTS)))
    write_training(out_dir / "training.h5", read_rhd_images(rhd_dir, "training", [i for i, _ in entries]), kp, vis)
    summary["train_images"], summary["train_hands"] = len(train), len(entries)

    test = read_rhd_annotations(rhd_dir, "evaluation")
    test_entries = _usable_hands(test, str(rhd_dir / "evaluation" / "anno_evaluation.pickle"))
    crops, labels = split_crops(rhd_dir, "evaluation", test, sorted({i for i, _ in test_entries}))
    write_testing(out_dir / "testing.h5",
                  np.stack(crops) if crops else np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8))
    write_keypoints_csv(out_dir / "solution.csv", np.stack(labels) if labels else np.zeros((0, NUM_JOINTS, 2)))
    summary["test_images"], summary["test_hands"] = len(test), len(crops)
    return summary


# --------------------------------------------------------------------------- locating data


@dataclass(frozen=True)
class DataPaths:
    root: Path
    training: Path
    testing: Path
    solution: Path | None  # only when the competition was built from RHD or the renderer


def find_data(data_dir: str | os.PathLike = "data") -> DataPaths:
    """The competition files in data_dir, or a FileNotFoundError saying how to get them."""
    root = Path(data_dir)
    tr, te, sol = root / "training.h5", root / "testing.h5", root / "solution.csv"
    missing = [str(p) for p in (tr, te) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not found; {HOW_TO_GET}")
    return DataPaths(root, tr, te, sol if sol.exists() else None)


def fingerprint(path: Path) -> str:
    """Identity of a source file for caches: name, size and modification time."""
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


# --------------------------------------------------------------------------- split


def make_split(image_ids: np.ndarray, val_fraction: float = 0.1, seed: int = 0) -> np.ndarray:
    """Boolean mask of validation entries, drawn by source image so hands of one image stay together."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction: expected a number in (0, 1), found {val_fraction}")
    unique = np.unique(image_ids)
    if len(unique) < 2:
        raise ValueError(f"split: expected at least 2 source images (validation takes one, training the rest), "
                         f"found {len(unique)} ({len(image_ids)} hand entries): no hand would be left for training")
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(len(unique) * val_fraction)))
    val_images = rng.choice(unique, size=min(n_val, len(unique) - 1) if len(unique) > 1 else 1, replace=False)
    return np.isin(image_ids, val_images)


def load_or_make_split(data_dir: str | os.PathLike, image_ids: np.ndarray, source: str,
                       val_fraction: float = 0.1, seed: int = 0) -> np.ndarray:
    """The saved split of data_dir/split.json, made once (seeded) and reused by every notebook."""
    path = Path(data_dir) / "split.json"
    n = len(image_ids)
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            if not isinstance(saved, dict):
                raise ValueError(f"expected a JSON object, found {type(saved).__name__}")
        except ValueError as e:  # truncated or corrupt (json.JSONDecodeError is a ValueError)
            print(f"{path}: unreadable ({e}); making a new split", file=sys.stderr)
            saved = {}
        if saved and (saved.get("val_fraction", val_fraction), saved.get("seed", seed)) != (val_fraction, seed):
            print(f"{path}: made with val_fraction {saved.get('val_fraction')} and seed {saved.get('seed')}; "
                  f"making a new split with val_fraction {val_fraction} and seed {seed}")
        elif saved and saved.get("source") == source and saved.get("n") == n:
            val = saved.get("val")
            if (isinstance(val, list) and val and all(isinstance(v, int) and not isinstance(v, bool) for v in val)
                    and 0 <= min(val) and max(val) < n):
                mask = np.zeros(n, bool)
                mask[val] = True
                if 0 < mask.sum() < n:
                    return mask
            print(f"{path}: 'val': expected a list of entries in 0..{n - 1} leaving some for training, "
                  f"found {str(val)[:60]}; making a new split", file=sys.stderr)
        elif saved:
            print(f"{path}: made for another training file; making a new split")
    try:
        mask = make_split(image_ids, val_fraction, seed)
    except ValueError as e:
        raise DataError(f"{path.parent}: {e}") from e
    io.write_json(path, {"source": source, "n": len(image_ids), "seed": seed,
                         "val_fraction": val_fraction, "val": np.flatnonzero(mask).tolist()})
    return mask


# --------------------------------------------------------------------------- crop cache


class CropCache:
    """Memory-mapped per-hand crops of training.h5: exact competition crops and context crops.

    crop (N,128,128,3) uint8 and kp (N,21,2): what validation and the test set look like;
    ctx (N,192,192,3) uint8, ctx_kp (N,21,2) pixel-centre, scale (N,): input to augmentation.
    """

    def __init__(self, directory: Path):
        """Open a built cache; DataError naming the file when one is missing, unreadable or of the wrong size."""
        self.dir = directory
        damaged = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)
        try:
            with np.load(directory / "meta.npz") as meta:
                self.kp, self.ctx_kp, self.scale = meta["kp"], meta["ctx_kp"], meta["scale"]
                self.vis, self.image_ids = meta["vis"], meta["image_ids"]
        except damaged as e:
            raise DataError(f"{directory / 'meta.npz'}: expected the cache's keypoint arrays, found an unreadable "
                            f"file ({type(e).__name__}: {str(e).split('. ')[0]})") from e
        try:
            self.info = json.loads((directory / "info.json").read_text())
        except damaged as e:
            raise DataError(f"{directory / 'info.json'}: expected the cache's JSON description, found an unreadable "
                            f"file ({type(e).__name__}: {str(e).split('. ')[0]})") from e
        n = len(self.kp)
        shapes = {"crop.u8": (n, CROP_SIZE, CROP_SIZE, 3), "ctx.u8": (n, CTX_SIZE, CTX_SIZE, 3)}
        for name, shape in shapes.items():
            path, want = directory / name, int(np.prod(shape))
            size = path.stat().st_size if path.exists() else None
            if size != want:
                raise DataError(f"{path}: expected {want} bytes ({n} crops of {shape[1]}x{shape[2]}x3), "
                                f"found {'no file' if size is None else f'{size} bytes'} (truncated?)")
        if self.info.get("n") != n:
            raise DataError(f"{directory / 'info.json'}: n: expected {n} (as in meta.npz), found {self.info.get('n')}")
        self.crop = np.memmap(directory / "crop.u8", np.uint8, "r", shape=shapes["crop.u8"])
        self.ctx = np.memmap(directory / "ctx.u8", np.uint8, "r", shape=shapes["ctx.u8"])

    def __len__(self) -> int:
        return len(self.kp)


def build_cache(training: str | os.PathLike, cache_root: str | os.PathLike | None = None,
                channel_order: ChannelOrder = "auto", limit: int | None = None) -> CropCache:
    """The crop cache of a training.h5, built once and rebuilt when the file changes."""
    from tqdm import tqdm

    training = Path(training)
    source = fingerprint(training)
    key = hashlib.sha1(f"{source}:{channel_order}:{limit}:v{CACHE_VERSION}".encode()).hexdigest()[:12]
    root = Path(cache_root) if cache_root else training.parent / "cache"
    final = root / key
    if (final / "info.json").exists():
        try:
            return CropCache(final)
        except DataError as e:
            print(f"crop cache: {e}; rebuilding it", file=sys.stderr)
            shutil.rmtree(final)
    _sweep_dead_builds(root, key)
    with TrainingFile(training, channel_order) as tf:
        n = len(tf) if limit is None else min(limit, len(tf))
        tmp = root / f".{key}.{os.getpid()}.tmp"  # this process's: another may build the same cache now
        shutil.rmtree(tmp, ignore_errors=True)
        io.require_space(root, n * 3 * (CROP_SIZE**2 + CTX_SIZE**2))  # a memory map dies of SIGBUS on a full disk
        tmp.mkdir(parents=True)
        for name, side in (("crop.u8", CROP_SIZE), ("ctx.u8", CTX_SIZE)):
            np.memmap(tmp / name, np.uint8, "w+", shape=(n, side, side, 3)).flush()
        kp = np.zeros((n, NUM_JOINTS, 2), np.float32)
        ctx_kp = np.zeros_like(kp)
        scale = np.zeros(n, np.float32)
        digests: list = [None] * n
        # processes over contiguous shares of the file (each with one OpenCV thread); one for small files
        procs = max(1, min(os.cpu_count() or 1, n // CACHE_HANDS_PER_PROCESS))
        shares = [(training, tf.channel_order, tmp, n, a, min(n, a + -(-n // procs))) for a in range(0, n, -(-n // procs))]
        bar = tqdm(total=n, desc=f"crop cache {training.name}", unit="hand", leave=False)
        if procs == 1:
            done = map(_cache_share, shares)
        else:
            pool = ProcessPoolExecutor(procs)
            done = (f.result() for f in as_completed([pool.submit(_cache_share, s) for s in shares]))
        try:
            for a, kp_a, ctx_kp_a, scale_a, digests_a in done:
                b = a + len(kp_a)
                kp[a:b], ctx_kp[a:b], scale[a:b], digests[a:b] = kp_a, ctx_kp_a, scale_a, digests_a
                bar.update(b - a)
        finally:
            if procs > 1:
                pool.shutdown(cancel_futures=True)
        bar.close()
        np.savez(tmp / "meta.npz", kp=kp, ctx_kp=ctx_kp, scale=scale, vis=tf.vis[:n], image_ids=image_ids(digests))
        io.write_json(tmp / "info.json", {"source": source, "n": n, "channel_order": tf.channel_order,
                                          "channel_reason": tf.channel_reason, "version": CACHE_VERSION})
    return _publish_cache(tmp, final)


def _publish_cache(tmp: Path, final: Path) -> CropCache:
    """Rename a finished build into place, atomically; when another process published the same
    cache first, use that one. A complete cache (one with info.json, written last) is never removed
    here: removing it could pull the files from under the process that has just published it."""
    for _ in range(3):
        if (final / "info.json").exists():  # another process finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
            return CropCache(final)
        try:
            os.rename(tmp, final)  # fails when final is a non-empty folder
            return CropCache(final)
        except OSError:
            if not (final / "info.json").exists():  # a partial folder (an interrupted removal): clear it
                shutil.rmtree(final, ignore_errors=True)
    raise DataError(f"{final}: could not publish the crop cache built in {tmp} (the folder keeps reappearing)")


CACHE_HANDS_PER_PROCESS = 2048  # build_cache starts a process per this many hands (up to one per core)


def _cache_share(share: tuple) -> tuple:
    """build_cache's work on hands [a, b) of a training.h5: their crops and contexts into the
    cache's memmaps, and (a, kp, ctx_kp, scale, pixel digests) back."""
    training, channel_order, tmp, n, a, b = share
    cv2.setNumThreads(1)
    crop = np.memmap(tmp / "crop.u8", np.uint8, "r+", shape=(n, CROP_SIZE, CROP_SIZE, 3))
    ctx = np.memmap(tmp / "ctx.u8", np.uint8, "r+", shape=(n, CTX_SIZE, CTX_SIZE, 3))
    kp = np.zeros((b - a, NUM_JOINTS, 2), np.float32)
    ctx_kp = np.zeros_like(kp)
    scale = np.zeros(b - a, np.float32)
    digests = []
    with TrainingFile(training, channel_order, verbose=False) as tf:
        for start in range(a, b, 256):
            for i, img in enumerate(tf.images(slice(start, min(b, start + 256))), start):
                crop[i], kp[i - a] = competition_crop(img, tf.kp[i])
                ctx[i], ctx_kp[i - a], scale[i - a] = context_crop(img, tf.kp[i])
                digests.append(pixel_digest(img))
    crop.flush()
    ctx.flush()
    return a, kp, ctx_kp, scale, digests


def _sweep_dead_builds(root: Path, key: str) -> None:
    """Remove the temporary folders of cache builds whose process is gone (killed mid-build)."""
    for d in root.glob(f".{key}.*.tmp"):
        pid = d.name.split(".")[-2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- torch datasets


class HandDataset(torch.utils.data.Dataset):
    """Training/validation samples from a CropCache.

    Without `augment`, a sample is the exact competition crop. With it, the context crop goes
    through `augment(ctx, p, s, seed) -> (img128, p128, s_out)` (lib.augment) and the label is
    converted back to the competition convention. An item is an index, (index, seed), or
    (index, seed, augment?): False gives the exact crop (lib.samplers.EpochBatches' augmentation ramp).
    With an augment whose `defer_pixels` is true, every item has a "pixel" key: the warp and
    pixel-op parameters (`augment.geometry`; `augment.identity_pixels()` for exact crops) that
    `lib.augment.apply_pixels` applies to the whole batch on the device. With `defer_warp` too,
    the image is the 192 context instead (uint8 (3,192,192); an exact crop: the context with the
    crop in its centre), and apply_pixels also does the warp. (`--cache-on-device` reads no image
    here: `DrawnBatches` makes its batches.)
    """

    def __init__(self, cache: CropCache, indices: np.ndarray, augment=None, seed: int = 0):
        self.cache, self.indices, self.augment, self.seed = cache, np.asarray(indices), augment, seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item):
        pos, sample_seed, augment = (item + (True,))[:3] if isinstance(item, tuple) else (
            item, self.seed * 1_000_003 + int(item), True)
        i = int(self.indices[pos])
        c = self.cache
        defer = getattr(self.augment, "defer_pixels", False)
        whole = getattr(self.augment, "defer_warp", False)  # the item is the context, warped per batch
        exact = self.augment is None or not augment
        if exact:
            img, kp = np.array(c.crop[i]), c.kp[i]
            pixel = self.augment.identity_pixels() if defer else None
            if whole:  # the identity warp takes the context's central 128: the crop itself
                img, crop = np.array(c.ctx[i]), img
                img[CTX_PAD:CTX_PAD + CROP_SIZE, CTX_PAD:CTX_PAD + CROP_SIZE] = crop
        else:
            ctx = np.array(c.ctx[i]) if whole else np.asarray(c.ctx[i])
            args = ctx, c.ctx_kp[i], float(c.scale[i]), int(sample_seed)
            if defer:
                img, p, s, pixel = self.augment.geometry(*args, warp=not whole)
            else:
                img, p, s = self.augment(*args)
            kp = label_from_pixels(p, s)
        item = {
            "kp": torch.from_numpy(np.asarray(kp, np.float32)),
            "vis": torch.from_numpy(c.vis[i].astype(np.float32)),
            "index": i,
            "image": torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1),  # uint8 (3,128,128) or (3,192,192)
        }
        if defer:
            item["pixel"] = torch.from_numpy(pixel)  # float32 (PIXEL_PARAMS,): lib.augment.apply_pixels
        return item


class DrawnBatches:
    """The training batches of `--cache-on-device`, drawn in the main process a batch at a time: no
    DataLoader, no worker, no image on the host (the images are on the device, `DeviceImages`).

    Iterating it iterates `batches` (lib.samplers.EpochBatches; items (position, seed) or (position,
    seed, augment?)) and yields what a DataLoader over HandDataset yields, without "image": "kp",
    "vis", "index" (cache rows), "exact" (True: the exact crop, from the ramp) and "pixel" (the warp
    and pixel-op parameters of `augment.draw_batch`, vectorised, from one generator per batch seeded
    by its samples' seeds, so a batch's draws are as deterministic as the batch). `pin`: in pinned
    memory, for copies that do not wait (CUDA).
    Why: on the H100 15 DataLoader workers that only drew these parameters delivered 15.2 k
    samples/s, under the fastest models' 20-24 k img/s (BENCHMARKS 7c); one CPU core draws ~110 k/s
    so at batch 64, ~300 k/s at 256 (7d).
    """

    def __init__(self, cache: CropCache, indices: np.ndarray, augment, batches, pin: bool = False):
        if not getattr(augment, "defer_warp", False):
            raise ValueError("DrawnBatches: expected an augment with defer_warp (the warp runs on the device)")
        self.cache, self.indices, self.augment, self.batches, self.pin = cache, np.asarray(indices), augment, batches, pin
        self.identity = augment.identity_pixels()

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict]:
        for items in self.batches:
            yield self.draw(items)

    def draw(self, items: list[tuple]) -> dict:
        """The batch of these sampler items."""
        c = self.cache
        pos = np.array([it[0] for it in items])
        aug = np.array([it[2] if len(it) > 2 else True for it in items], bool)
        i = self.indices[pos]
        kp, pixel = c.kp[i].astype(np.float32), np.tile(self.identity, (len(i), 1))
        if aug.any():
            j = i[aug]
            rng = np.random.default_rng([int(it[1]) for it in items])
            p, s, pixel[aug] = self.augment.draw_batch(c.ctx_kp[j], c.scale[j], rng)
            kp[aug] = label_from_pixels(p, s)
        out = {"kp": kp, "vis": c.vis[i].astype(np.float32), "index": i.astype(np.int64), "exact": ~aug,
               "pixel": pixel}
        out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
        return {k: v.pin_memory() for k, v in out.items()} if self.pin else out


class DeviceImages:
    """The crop cache's images (contexts and exact crops) held on the training device, gathered per
    batch by index: with `--cache-on-device` no image crosses a process boundary or the host
    (`DrawnBatches` makes the rest of the batch). Needs (n x 160 KB) of device memory: 9.2 GB for
    the 57,466 RHD hands."""

    @staticmethod
    def nbytes(cache: CropCache) -> int:
        return len(cache) * 3 * (CTX_SIZE ** 2 + CROP_SIZE ** 2)

    @staticmethod
    def fits(cache: CropCache, device: str, share: float) -> bool:
        """A CUDA device with room for the images in `share` of its free memory (the default's test)."""
        return (str(device).startswith("cuda")
                and DeviceImages.nbytes(cache) <= share * torch.cuda.mem_get_info(torch.device(device))[0])

    def __init__(self, cache: CropCache, device: str, chunk: int = 1024):
        n, need = len(cache), self.nbytes(cache)
        if str(device).startswith("cuda") and not self.fits(cache, device, share=0.8):  # room for the model
            free = torch.cuda.mem_get_info(torch.device(device))[0]
            raise DataError(f"--cache-on-device: expected {need / 2**30:.1f} GiB of free device memory for the "
                            f"{n} hands of {cache.dir}, found {free / 2**30:.1f} GiB free; train without it")
        if not str(device).startswith("cuda"):  # a copy in the process's memory, beside the cache's own pages
            free = available_memory()
            if need > 0.8 * free:
                raise DataError(f"--cache-on-device: expected {need / 2**30:.1f} GiB of free memory (and a quarter more "
                                f"to spare) for the {n} hands of {cache.dir} on the CPU, found {free / 2**30:.1f} GiB "
                                f"available; train without it")
        self.ctx = torch.empty((n, CTX_SIZE, CTX_SIZE, 3), dtype=torch.uint8, device=device)
        self.crop = torch.empty((n, CROP_SIZE, CROP_SIZE, 3), dtype=torch.uint8, device=device)
        for start in range(0, n, chunk):  # a chunk at a time: no second full copy in host memory
            end = min(n, start + chunk)
            self.ctx[start:end].copy_(torch.from_numpy(np.array(cache.ctx[start:end])))
            self.crop[start:end].copy_(torch.from_numpy(np.array(cache.crop[start:end])))

    def batch(self, index: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
        """(B,3,192,192) uint8 contexts of cache rows `index` (on the device); rows with `exact`
        get the exact crop in their centre, as HandDataset's items do. No host synchronisation."""
        x = self.ctx[index]
        centre = x[:, CTX_PAD:CTX_PAD + CROP_SIZE, CTX_PAD:CTX_PAD + CROP_SIZE]
        centre.copy_(torch.where(exact.view(-1, 1, 1, 1), self.crop[index], centre))
        return x.permute(0, 3, 1, 2)


def available_memory(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Bytes of memory this process can still take: the machine's available memory, or less where a
    container's cgroup (v2) limit leaves less (psutil reports the host's)."""
    import psutil

    free = psutil.virtual_memory().available
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        used = int((cgroup / "memory.current").read_text())
        if limit != "max":
            free = min(free, max(0, int(limit) - used))
    except (OSError, ValueError):  # no cgroup v2 files here
        pass
    return free


def worker_init(_: int = 0) -> None:
    """A DataLoader worker's start: one thread each for OpenCV, torch and BLAS, so N workers keep
    to N cores (else each forked worker runs a pool of one thread per core)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: numpy's BLAS then keeps its own setting
        return
    threadpool_limits(1)


def load_test_crops(path: str | os.PathLike, channel_order: ChannelOrder = "auto") -> np.ndarray:
    """All test crops as (N,128,128,3) uint8 RGB (3,611 crops: 180 MB as float32, 18 MB here)."""
    with TestingFile(path, channel_order) as tf:
        return tf.images(slice(None))


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """The command line; an expected error is one `error: ...` line and exit code 2 (lib.cli)."""
    return cli.run(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="RHD layout -> training.h5, testing.h5, solution.csv")
    b.add_argument("--rhd", required=True, help="directory with training/ and evaluation/ in the RHD layout")
    b.add_argument("--out", default="data")
    b.add_argument("--overwrite", action="store_true")
    i = sub.add_parser("info", help="validate the competition files and summarise them")
    i.add_argument("data_dir", nargs="?", default="data")
    c = sub.add_parser("cache", help="build the training crop cache")
    c.add_argument("data_dir", nargs="?", default="data")
    c.add_argument("--channels", default="auto", choices=["auto", "rgb", "bgr"])
    args = ap.parse_args(argv)
    if args.cmd == "build":
        print(json.dumps(build_competition(args.rhd, args.out, args.overwrite), indent=2))
    elif args.cmd == "info":
        paths = find_data(args.data_dir)
        with TrainingFile(paths.training) as tf:
            ids = tf.image_ids()
            print(f"  {len(tf)} hands from {len(np.unique(ids))} images, "
                  f"{tf.vis.mean():.1%} of joints visible")
        with TestingFile(paths.testing) as te:
            print(f"  {len(te)} test crops")
        if paths.solution:
            read_keypoints_csv(paths.solution, len(te))
        print(f"  solution: {paths.solution or 'none (real competition data)'}")
    elif args.cmd == "cache":
        cache = build_cache(find_data(args.data_dir).training, channel_order=args.channels)
        print(f"{cache.dir}: {len(cache)} hands")
    return 0


if __name__ == "__main__":
    sys.exit(main())
