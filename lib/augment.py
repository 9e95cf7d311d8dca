"""Training-time augmentation: context crop (192) + keypoints -> 128 crop + keypoints + scale.

    aug = build("modern")            # or "paper", "none"; kwargs tune the pipeline
    img, p_out, s_out = aug(ctx, p, s, seed)

Inputs come from the crop cache of `lib.data`: `ctx` uint8 RGB (192, 192, 3) with the
competition box in its central 128x128 (pixels 32..159), `p` (21, 2) keypoints in ctx pixels,
`s` output pixels per original source pixel. Every coordinate here uses the pixel-centre
convention (the centre of pixel column j is x = j); converting to the competition's label
convention is `lib.data`'s job. `s_out` is `s` times the linear scale of the geometry applied
(sqrt |det| of the affine, so a shear counts as its area scale).

Geometry is ONE hand-written affine per sample, resampled once with cv2.warpAffine from the
192 context straight to 128: albumentations cannot warp to a different output size, nor decide
a rollback or a tight crop from the keypoints before touching pixels. Pixel-level ops
(colour, blur, noise, dropout) are albumentations transforms. Albumentations' own keypoint
convention (checked in tests/test_augment.py): flips (`W - 1 - x`), Affine/Rotate (centre
`(W - 1) / 2`), Transpose and RandomRotate90 are pixel-centre exact; Resize/RandomScale (and
crops that resize) scale keypoints as `x * k`, which is off by `(k - 1) / 2` px from the
pixels cv2.resize produces, the same half-pixel slip as the competition labels.

Seeding: each call draws everything from `np.random.default_rng(seed)` plus a
`random.Random(seed)`, handed to the albumentations transforms with `set_random_state` (one
shared stream, ~15 us). `Compose.set_random_seed(seed)` is avoided: it gives every child
transform its own generator with the same seed, so their draws coincide (two p=0.5 ops are
then always applied together) and it costs ~40 us. Seeds are non-negative ints.

The report's batch sampler ("Bernoulli draw over a sliding window") is in `lib.samplers`.
"""
from __future__ import annotations

import math
import random
from typing import Any

import albumentations as A
import cv2
import numpy as np

from lib.data import CROP_SIZE, CTX_PAD, CTX_SIZE, crop_box
from lib.joints import NUM_JOINTS

NAMES = ("none", "paper", "modern")
PAPER_OPS = ("rotate", "shear", "crop", "hflip", "vflip",
             "contrast", "brightness", "pixel_dropout", "salt_pepper")

_EYE = np.eye(3)


# ---------------------------------------------------------------- geometry helpers

def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _about(m: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """The linear 3x3 `m` applied about the point (cx, cy)."""
    return _translate(cx, cy) @ m @ _translate(-cx, -cy)


def _rotation(deg: float) -> np.ndarray:
    """Counter-clockwise on screen (y down), as albumentations and cv2 rotate."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def _flip(h: bool, v: bool, side: int) -> np.ndarray:
    """Flip the pixels of a `side`-wide image: x -> side - 1 - x (pixel centres)."""
    return np.array([[-1.0 if h else 1.0, 0.0, side - 1.0 if h else 0.0],
                     [0.0, -1.0 if v else 1.0, side - 1.0 if v else 0.0],
                     [0.0, 0.0, 1.0]])


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points with a 2x3 or 3x3 affine."""
    return points @ m[:2, :2].T + m[:2, 2]


def _inside(points: np.ndarray, side: int) -> np.ndarray:
    """Per point: does it lie on a pixel of a side x side image, i.e. in [-0.5, side - 0.5]."""
    return ((points >= -0.5) & (points <= side - 0.5)).all(axis=1)


def _leaves(before: np.ndarray, after: np.ndarray, side: int) -> bool:
    """Would a joint on the image's pixels before a transform be off them after it?"""
    return bool((_inside(before, side) & ~_inside(after, side)).any())


def _linear_scale(m: np.ndarray) -> float:
    return float(math.sqrt(abs(np.linalg.det(m[:2, :2]))))


def _warp(ctx: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Resample ctx into the 128 output; an integer translation is an exact copy."""
    lin, t = m[:2, :2], m[:2, 2]
    if np.array_equal(lin, np.eye(2)) and np.all(t == np.round(t)):
        x0, y0 = int(-t[0]), int(-t[1])
        if 0 <= x0 <= ctx.shape[1] - CROP_SIZE and 0 <= y0 <= ctx.shape[0] - CROP_SIZE:
            return np.ascontiguousarray(ctx[y0:y0 + CROP_SIZE, x0:x0 + CROP_SIZE])
    return cv2.warpAffine(ctx, m[:2].astype(np.float64), (CROP_SIZE, CROP_SIZE),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))


# ---------------------------------------------------------------- pipelines

def _check(ctx: np.ndarray, p: np.ndarray, s: float) -> None:
    if (not isinstance(ctx, np.ndarray) or ctx.shape != (CTX_SIZE, CTX_SIZE, 3)
            or ctx.dtype != np.uint8):
        found = (getattr(ctx, "shape", type(ctx)), getattr(ctx, "dtype", None))
        raise ValueError(f"augment: ctx must be uint8 ({CTX_SIZE}, {CTX_SIZE}, 3), found {found}")
    if np.shape(p) != (NUM_JOINTS, 2):
        raise ValueError(f"augment: p must be ({NUM_JOINTS}, 2), found {np.shape(p)}")
    if not s > 0:
        raise ValueError(f"augment: s must be > 0, found {s}")


class Augment:
    """Base: `aug(ctx, p, s, seed) -> (img (128,128,3) uint8, p_out (21,2) float32, s_out)`.

    Picklable (DataLoader workers each get a copy; `stats` then count per worker).
    """

    name = "base"

    def __init__(self, **config: Any) -> None:
        self.config = config
        self._py = random.Random()

    def _rngs(self, seed: int) -> np.random.Generator:
        self._py.seed(int(seed))
        return np.random.default_rng(int(seed))

    def __call__(self, ctx: np.ndarray, p: np.ndarray, s: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray, float]:
        _check(ctx, p, s)
        rng = self._rngs(seed)
        return self._apply(ctx, np.asarray(p, dtype=np.float64), float(s), rng)

    def _apply(self, ctx: np.ndarray, p: np.ndarray, s: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
        raise NotImplementedError

    def _finish(self, ctx: np.ndarray, p: np.ndarray, s: float,
                m: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        return _warp(ctx, m), apply_affine(m, p).astype(np.float32), s * _linear_scale(m)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"build({self.name!r}{', ' if args else ''}{args})"


class NoAugment(Augment):
    """The central 128x128 of the context: the competition crop itself."""

    name = "none"

    def _apply(self, ctx, p, s, rng):
        return self._finish(ctx, p, s, _translate(-CTX_PAD, -CTX_PAD))


class PaperAugment(Augment):
    """The 2018 report's pipeline, in its order.

    With probability `p_augment` (once per sample) the sample is augmented; then each with
    probability `p_op`: rotate by U[-rotate, rotate] degrees, x-shear by U[-shear, shear]
    degrees (both about the ctx centre); then always the tight crop (`lib.data.crop_box`,
    the competition rule, on the current keypoints in source-pixel units, resized to 128);
    then each with
    `p_op`: horizontal flip, vertical flip, contrast factor in `contrast` (blend with the grey
    mean), brightness factor in `brightness` (multiply), pixel dropout (`dropout_prob` of the
    pixels set to 0), salt-and-pepper (`salt_pepper` fraction of the pixels).
    Rotate, shear and flips are rolled back (skipped) when a joint would leave the current
    image (go off its pixels): the 192 ctx for rotate/shear, the 128 crop for flips. Where
    the rule drops a margin at the current image's border, the joint nearest it can lie up
    to ~1.5 source px outside the crop, as in the competition's own crops. The ctx
    holds 1.5x the box, so rotate/shear rarely roll back here (the report rotated the whole
    320 image). When no rotate/shear is in effect the tight crop is the competition box
    itself, i.e. exactly the "none" crop (the ctx was cut by the same rule, and this keeps
    boxes that were clipped at the source image's border; if a joint lies outside that box
    the rule is rerun). The geometry is one warp.
    Unspecified in the report, chosen here: `dropout_prob`, `salt_pepper`, x-only shear.

    `only=OP` applies exactly that op (and the always-on crop), always, for previews.
    `stats[op] = {"applied": n, "rolled_back": n}`, plus "augmented" and "samples".
    """

    name = "paper"

    def __init__(self, p_augment: float = 0.3, p_op: float = 0.5, rotate: float = 90.0,
                 shear: float = 15.0,
                 contrast: tuple[float, float] = (0.8, 1.2),
                 brightness: tuple[float, float] = (0.8, 1.2),
                 dropout_prob: float = 0.05, salt_pepper: tuple[float, float] = (0.01, 0.05),
                 only: str | None = None) -> None:
        super().__init__(p_augment=p_augment, p_op=p_op, rotate=rotate, shear=shear,
                         contrast=contrast, brightness=brightness,
                         dropout_prob=dropout_prob, salt_pepper=salt_pepper, only=only)
        if only is not None and only not in PAPER_OPS:
            raise ValueError(f"paper: only must be one of {PAPER_OPS} or None, found {only!r}")
        self.only = only
        self.p_augment, self.p_op = p_augment, p_op
        self.rotate, self.shear = rotate, shear
        self.pixel_ops = {
            "contrast": A.ColorJitter(brightness=(1, 1), contrast=contrast, saturation=(1, 1),
                                      hue=(0, 0), p=1.0),
            "brightness": A.ColorJitter(brightness=brightness, contrast=(1, 1),
                                        saturation=(1, 1), hue=(0, 0), p=1.0),
            "pixel_dropout": A.PixelDropout(dropout_prob=dropout_prob, per_channel=False,
                                            drop_value=0, p=1.0),
            "salt_pepper": A.SaltAndPepper(amount=salt_pepper, p=1.0),
        }
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = {op: {"applied": 0, "rolled_back": 0}
                      for op in ("samples", "augmented") + PAPER_OPS}

    def _draw(self, op: str, augmented: bool, rng: np.random.Generator) -> bool:
        """Whether `op` is attempted; one uniform per op keeps the random stream aligned."""
        u = rng.random()
        if self.only is not None:
            return op == self.only
        return augmented and u < self.p_op

    def _count(self, op: str, ok: bool) -> None:
        self.stats[op]["applied" if ok else "rolled_back"] += 1

    def _apply(self, ctx, p, s, rng):
        st = self.stats
        st["samples"]["applied"] += 1
        augmented = rng.random() < self.p_augment or self.only is not None
        if augmented:
            st["augmented"]["applied"] += 1
        c = (CTX_SIZE - 1) / 2.0
        g = _EYE  # ctx -> current (192) image
        for op in ("rotate", "shear"):
            u = rng.uniform(-1.0, 1.0)
            if not self._draw(op, augmented, rng):
                continue
            if op == "rotate":
                m = _about(_rotation(u * self.rotate), c, c)
            else:
                m = _about(np.array([[1.0, math.tan(math.radians(u * self.shear)), 0.0],
                                     [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), c, c)
            ok = not _leaves(apply_affine(g, p), apply_affine(m @ g, p), CTX_SIZE)
            self._count(op, ok)
            if ok:
                g = m @ g
        # no rotate/shear in effect: the tight crop is the competition box, the "none" crop
        crop = _translate(-CTX_PAD, -CTX_PAD)
        if g is not _EYE or not _inside(p - CTX_PAD, CROP_SIZE).all():
            crop = crop_matrix(apply_affine(g, p), s) @ g
        self._count("crop", True)
        for op in ("hflip", "vflip"):
            if not self._draw(op, augmented, rng):
                continue
            m = _flip(op == "hflip", op == "vflip", CROP_SIZE) @ crop
            ok = not _leaves(apply_affine(crop, p), apply_affine(m, p), CROP_SIZE)
            self._count(op, ok)
            if ok:
                crop = m
        img, p_out, s_out = self._finish(ctx, p, s, crop)
        for op, t in self.pixel_ops.items():
            if self._draw(op, augmented, rng):
                t.set_random_state(rng, self._py)
                img = t(image=img)["image"]
                self._count(op, True)
        return img, p_out, s_out


def crop_matrix(q: np.ndarray, s: float) -> np.ndarray:
    """3x3 affine: current ctx-sized image -> 128 crop of the competition box of keypoints `q`.

    The rule (`lib.data.crop_box`: ceil/floor, 8 px margins kept only where they fit, squared
    toward +x/+y or flush with the far border) runs in source-pixel units
    u = (x - CTX_PAD + 0.5) / s - 0.5 (pixel-centre, origin at the competition box's first pixel),
    so margins are source pixels and, for an unwarped ctx, the integer grid is the source's;
    the image is the source pixels whose centres lie on the ctx.
    """
    t = (0.5 - CTX_PAD) / s - 0.5
    to_u = np.array([[1 / s, 0.0, t], [0.0, 1 / s, t], [0.0, 0.0, 1.0]])
    lo = math.ceil(-CTX_PAD / s - 0.5)  # first source pixel whose centre lies on the ctx
    hi = math.floor((CTX_SIZE - CTX_PAD) / s - 0.5) + 1
    x0, y0, side = crop_box(apply_affine(to_u, q) - lo, size=hi - lo)
    x0, y0 = x0 + lo, y0 + lo
    k = CROP_SIZE / side
    to_out = np.array([[k, 0.0, (0.5 - x0) * k - 0.5], [0.0, k, (0.5 - y0) * k - 0.5],
                       [0.0, 0.0, 1.0]])
    return to_out @ to_u


class ModernAugment(Augment):
    """Jitter around the competition crop in one warp, then albumentations pixel ops.

    Geometry (ctx -> 128, about the box centre): magnification log-uniform in `scale`
    (>1 zooms in), rotation U[-rotate, rotate] degrees (180 = any angle), shift
    U[-shift, shift] x 128 px per axis, horizontal / vertical flip with probability
    `hflip` / `vflip` (a mirrored hand keeps its joint labels; the flip is no swap). The whole
    jitter is applied with probability `p_affine`. A draw that puts more than `max_outside`
    joints off the 128 image's pixels is redrawn, up to `retries` times, then
    falls back to the flips alone (always inside). Default 0: every joint stays visible,
    which heatmap targets need; regression heads may allow a few. The competition box has
    only 8 source px of margin, so the redraws favour zooming out: with the defaults the
    realised magnification on real RHD hands has median ~0.96 (10%-90%: 0.87-1.12; no
    fallbacks); with scale (0.8, 1.25) and shift 0.1 the median drops to ~0.92 (measured,
    3 RHD frames x 300 seeds). `max_outside=1` brings it back to ~1.00.
    Pixel ops, each with its own probability: colour jitter (`color_p`; brightness,
    contrast, saturation factors 1 +- the given amounts, hue shift +-`hue` of the circle),
    gamma (`gamma_p`, `gamma` in percent), blur (`blur_p`; Gaussian 3-5 px or motion 3-7 px,
    the motion kernel centred and symmetric: albumentations' default one moves the image by
    up to ~1.5 px, away from its keypoints),
    Gaussian noise (`noise_p`, std a fraction `noise_std` of 255), cutout (`cutout_p`; 1-2
    holes of 10-25% of the side, each filled with one random colour; joints under a hole
    keep their labels).
    """

    name = "modern"

    def __init__(self, scale: tuple[float, float] = (0.85, 1.2), rotate: float = 45.0,
                 shift: float = 0.05, hflip: float = 0.5, vflip: float = 0.0,
                 p_affine: float = 1.0, max_outside: int = 0, retries: int = 10,
                 color_p: float = 0.8, brightness: float = 0.25, contrast: float = 0.25,
                 saturation: float = 0.25, hue: float = 0.03,
                 gamma_p: float = 0.3, gamma: tuple[float, float] = (80, 120),
                 blur_p: float = 0.2, noise_p: float = 0.2,
                 noise_std: tuple[float, float] = (0.02, 0.06), cutout_p: float = 0.3) -> None:
        super().__init__(scale=scale, rotate=rotate, shift=shift, hflip=hflip, vflip=vflip,
                         p_affine=p_affine, max_outside=max_outside, retries=retries,
                         color_p=color_p, brightness=brightness, contrast=contrast,
                         saturation=saturation, hue=hue, gamma_p=gamma_p, gamma=gamma,
                         blur_p=blur_p, noise_p=noise_p, noise_std=noise_std,
                         cutout_p=cutout_p)
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"modern: scale must be (lo, hi) with 0 < lo <= hi, found {scale}")
        self.log_scale = (math.log(scale[0]), math.log(scale[1]))
        self.rotate, self.shift, self.hflip, self.vflip = rotate, shift, hflip, vflip
        self.p_affine, self.max_outside, self.retries = p_affine, max_outside, retries
        self.pixel = A.Compose([
            A.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation,
                          hue=hue, p=color_p),
            A.RandomGamma(gamma_limit=gamma, p=gamma_p),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5), p=1.0),
                     A.MotionBlur(blur_limit=(3, 7), allow_shifted=False,
                                  direction_range=(0.0, 0.0), p=1.0)], p=blur_p),
            A.GaussNoise(std_range=noise_std, p=noise_p),
            A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.25),
                            hole_width_range=(0.1, 0.25), fill="random_uniform", p=cutout_p),
        ], p=1.0)

    def _apply(self, ctx, p, s, rng):
        c_in, c_out = (CTX_SIZE - 1) / 2.0, (CROP_SIZE - 1) / 2.0
        flip = _flip(rng.random() < self.hflip, rng.random() < self.vflip, 1)  # linear part
        jitter = rng.random() < self.p_affine
        for attempt in range(self.retries + 1):
            zoom, angle, t = 1.0, 0.0, np.zeros(2)
            if jitter and attempt < self.retries:
                zoom = math.exp(rng.uniform(*self.log_scale))
                angle = rng.uniform(-self.rotate, self.rotate)
                t = rng.uniform(-self.shift, self.shift, size=2) * CROP_SIZE
            lin = _rotation(angle) @ flip
            lin[:2, :2] *= zoom
            m = _translate(c_out + t[0], c_out + t[1]) @ lin @ _translate(-c_in, -c_in)
            if (~_inside(apply_affine(m, p), CROP_SIZE)).sum() <= self.max_outside:
                break
        img, p_out, s_out = self._finish(ctx, p, s, m)
        self.pixel.set_random_state(rng, self._py)
        return self.pixel(image=img)["image"], p_out, s_out


_BUILDERS = {"none": NoAugment, "paper": PaperAugment, "modern": ModernAugment}


def build(name: str, **kw: Any) -> Augment:
    """The augmentation pipeline `name` ("none", "paper" or "modern"), configured by `kw`."""
    if name not in _BUILDERS:
        raise ValueError(f"augment: unknown pipeline {name!r}; valid names: {', '.join(NAMES)}")
    return _BUILDERS[name](**kw)
