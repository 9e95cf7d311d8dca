"""Backgrounds and textures: sample photographs shipped inside installed packages (read directly
from the package folders, never downloaded), randomly cropped, scaled, colour-jittered and
mixed with procedural textures. Photos are loaded once per process.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

# (package, folder inside the package, file names). RHD's backgrounds are Flickr photos of cities and
# landscapes, so the packages' portraits (astronaut, camera, grace_hopper) and skin-coloured microscopy
# (retina, ihc) are left out since renderer v6: skin and faces behind a hand are not RHD's.
PHOTO_SOURCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("skimage", "data", (
        "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
        "hubble_deep_field.jpg", "color.png", "brick.png", "grass.png", "gravel.png", "moon.png",
        "coins.png", "clock_motion.png", "cell.png",
    )),
    ("sklearn", "datasets/images", ("china.jpg", "flower.jpg")),
)
MAX_SIDE = 640

_PHOTOS: list[np.ndarray] | None = None
_GREY: list[bool] = []


def _package_dir(name: str) -> Path | None:
    """Folder of an installed package without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def photo_paths() -> list[Path]:
    """Existing photo files among PHOTO_SOURCES, in a fixed order."""
    out = []
    for pkg, sub, names in PHOTO_SOURCES:
        root = _package_dir(pkg)
        if root is None:
            continue
        out.extend(p for p in (root / sub / n for n in names) if p.is_file())
    return out


def photos() -> list[np.ndarray]:
    """All background photos as RGB uint8 arrays (loaded on first use, then cached)."""
    global _PHOTOS, _GREY
    if _PHOTOS is None:
        loaded, grey = [], []
        for p in photo_paths():
            im = cv2.imread(str(p), cv2.IMREAD_COLOR)  # grey files come back as 3 equal channels
            if im is None:
                continue
            s = MAX_SIDE / max(im.shape[:2])
            if s < 1:
                im = cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            loaded.append(np.ascontiguousarray(im[:, :, ::-1]))
            grey.append(bool(np.abs(im.astype(np.int16) - im[:, :, :1]).max() < 6))
        _PHOTOS, _GREY = loaded, grey
    return _PHOTOS


def random_color(rng: np.random.Generator, sat: float = 0.6) -> np.ndarray:
    """A random RGB colour 0..1 of moderate saturation."""
    hsv = np.array([[[rng.uniform(0, 360), rng.uniform(0, sat), rng.uniform(0.15, 0.95)]]], np.float32)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def procedural(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random procedural texture HxWx3 float32 in 0..1 (noise, stripes, checks, blobs, gradient)."""
    out_h, out_w = h, w
    h, w = (h + 1) // 2, (w + 1) // 2  # drawn at half resolution, then upsampled
    kind = rng.integers(5)
    c0, c1 = random_color(rng), random_color(rng)
    if kind == 0:  # smooth coloured noise
        k = int(rng.integers(2, 14))
        small = rng.random((k, k, 3)).astype(np.float32)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        img = c0 + (c1 - c0) * img
    elif kind == 1:  # stripes
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, np.pi)
        period = rng.uniform(2, 20)
        s = 0.5 + 0.5 * np.sin((np.cos(a) * x + np.sin(a) * y) * (2 * np.pi / period))
        if rng.random() < 0.5:
            s = (s > 0.5).astype(np.float32)
        img = c0 + (c1 - c0) * s[..., None]
    elif kind == 2:  # checks / plaid
        y, x = np.mgrid[0:h, 0:w]
        p = int(rng.integers(3, 20))
        s = (((x // p) + (y // p)) % 2).astype(np.float32)
        img = c0 + (c1 - c0) * s[..., None]
    elif kind == 3:  # blobs
        img = np.empty((h, w, 3), np.float32)
        img[:] = c0
        for _ in range(int(rng.integers(3, 15))):
            cv2.ellipse(img, (int(rng.integers(w)), int(rng.integers(h))),
                        (int(rng.integers(5, w // 3)), int(rng.integers(5, h // 3))),
                        float(rng.uniform(0, 180)), 0, 360, random_color(rng).tolist(), -1)
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 6)))
    else:  # gradient
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, 2 * np.pi)
        s = (np.cos(a) * x / w + np.sin(a) * y / h)
        s = (s - s.min()) / (np.ptp(s) + 1e-6)
        img = c0 + (c1 - c0) * s[..., None]
    # fine grain
    k = int(rng.integers(8, 40))
    grain = cv2.resize(rng.random((k, k)).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    img = (img * (1 + rng.uniform(0, 0.25) * (grain[..., None] - 0.5))).astype(np.float32)
    img = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    return np.clip(img, 0, 1)


def photo_crop(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop of a random photo, scaled/rotated/flipped to HxW and colour-jittered,
    float32 RGB 0..1."""
    ph = photos()
    if not ph:
        return procedural(rng, h, w)
    k = int(rng.integers(len(ph)))
    src = ph[k]
    sh, sw = src.shape[:2]
    zoom = rng.uniform(0.3, 1.0) * min(sh, sw) / max(h, w)  # source pixels per output pixel
    ang = rng.normal(0, 8) * np.pi / 180 if rng.random() < 0.5 else 0.0
    flip = -1.0 if rng.random() < 0.5 else 1.0
    c, s = np.cos(ang) * zoom, np.sin(ang) * zoom
    half_w, half_h = w * zoom / 2, h * zoom / 2
    cx = rng.uniform(min(half_w, sw / 2), max(sw - half_w, sw / 2))
    cy = rng.uniform(min(half_h, sh / 2), max(sh - half_h, sh / 2))
    # output (x, y) -> source
    A = np.array([[c * flip, -s, 0.0], [s * flip, c, 0.0]])
    A[:, 2] = np.array([cx, cy]) - A[:, :2] @ np.array([w / 2, h / 2])
    out = cv2.warpAffine(src, A, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REFLECT101)
    tint = 0.9 * (0.5 + random_color(rng, 0.5)) if _GREY[k] else np.ones(3)
    return jitter_colors(rng, out, tint)


def jitter_colors(rng: np.random.Generator, img: np.ndarray, tint: np.ndarray | None = None) -> np.ndarray:
    """Random saturation, per-channel gain, contrast and brightness in one affine colour map.

    img: uint8 or float32 RGB; returns float32 0..1.
    """
    scale = 1.0 / 255.0 if img.dtype == np.uint8 else 1.0
    sat = rng.uniform(0.4, 1.3)
    gain = rng.uniform(0.85, 1.15, size=3) * (1.0 if tint is None else tint)
    contrast, bright = rng.uniform(0.7, 1.2), rng.uniform(0.7, 1.2)
    # x -> grey + (x - grey) * sat -> * gain -> (x - 0.5) * contrast + 0.5 * bright
    M = (np.eye(3) * sat + (1 - sat) / 3.0) * (gain[:, None] * contrast * scale)
    off = 0.5 * (bright - contrast)
    T = np.concatenate([M, np.full((3, 1), off)], axis=1).astype(np.float32)
    out = cv2.transform(img.astype(np.float32) if img.dtype == np.uint8 else img, T)
    return np.clip(out, 0.0, 1.0)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A background image: mostly photos, sometimes procedural, sometimes a mix."""
    r = rng.random()
    if r < 0.15:
        return procedural(rng, h, w)
    img = photo_crop(rng, h, w)
    if r < 0.35:
        a = rng.uniform(0.15, 0.5)
        img = img * (1 - a) + procedural(rng, h, w) * a
    if rng.random() < 0.35:  # out of focus
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.8, 3.0)))
    return img


def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An albedo texture for clothes and objects (screen-space), HxWx3 float32."""
    if rng.random() < 0.6:
        return procedural(rng, h, w)
    return photo_crop(rng, h, w) * 0.9
