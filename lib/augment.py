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

Deferred pixel ops (CUDA training): `ModernAugment.geometry` does the geometry in the worker
and only draws the pixel-op parameters (a float32 vector of `PIXEL_PARAMS`, layout
`PIXEL_LAYOUT`); `apply_pixels(x, params)` then applies colour, gamma, blur, noise and cutout
to a whole batch on the training device. See `apply_pixels` for where it differs from the
albumentations pipeline of `__call__`.

The report's batch sampler ("Bernoulli draw over a sliding window") is in `lib.samplers`.
"""
from __future__ import annotations

import functools
import math
import random
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F

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
    """Map (N, 2) points with a 2x3 or 3x3 affine (one matrix: matmul is fastest here)."""
    return points @ m[:2, :2].T + m[:2, 2]


def _apply_batch(lin: np.ndarray, off: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points (..., N, 2) with affines of linear parts (..., 2, 2) and offsets (..., 2)
    (elementwise: numpy's batched matmul and einsum are slow on 2 x 2 matrices)."""
    x, y = points[..., 0], points[..., 1]
    row = lambda i: lin[..., i, 0, None] * x + lin[..., i, 1, None] * y + off[..., i, None]  # noqa: E731
    return np.stack([row(0), row(1)], -1)


def _inside(points: np.ndarray, side: int) -> np.ndarray:
    """Per point: does it lie on a pixel of a side x side image, i.e. in [-0.5, side - 0.5]."""
    return ((points >= -0.5) & (points <= side - 0.5)).all(axis=-1)


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
                 noise_std: tuple[float, float] = (0.02, 0.06), cutout_p: float = 0.3,
                 defer_pixels: bool = False, defer_warp: bool = False) -> None:
        super().__init__(scale=scale, rotate=rotate, shift=shift, hflip=hflip, vflip=vflip,
                         p_affine=p_affine, max_outside=max_outside, retries=retries,
                         color_p=color_p, brightness=brightness, contrast=contrast,
                         saturation=saturation, hue=hue, gamma_p=gamma_p, gamma=gamma,
                         blur_p=blur_p, noise_p=noise_p, noise_std=noise_std,
                         cutout_p=cutout_p, defer_pixels=defer_pixels, defer_warp=defer_warp)
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"modern: scale must be (lo, hi) with 0 < lo <= hi, found {scale}")
        self.log_scale = (math.log(scale[0]), math.log(scale[1]))
        self.rotate, self.shift, self.hflip, self.vflip = rotate, shift, hflip, vflip
        self.p_affine, self.max_outside, self.retries = p_affine, max_outside, retries
        if defer_warp and not defer_pixels:
            raise ValueError("modern: defer_warp needs defer_pixels (the warp runs in apply_pixels)")
        self.defer_pixels, self.defer_warp = defer_pixels, defer_warp
        self.p_ops = {"color": color_p, "gamma": gamma_p, "blur": blur_p, "noise": noise_p,
                      "cutout": cutout_p}
        self.jitter = [(max(0.0, 1 - brightness), 1 + brightness),
                       (max(0.0, 1 - contrast), 1 + contrast),
                       (max(0.0, 1 - saturation), 1 + saturation), (-hue, hue)]
        self.gamma, self.noise_std = gamma, noise_std
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

    def _geometry(self, ctx, p, s, rng):
        return self._finish(ctx, p, s, self._matrix(p, rng))

    def _matrix(self, p, rng) -> np.ndarray:
        """The 3x3 affine ctx -> 128 crop of one draw."""
        lin, off = self.matrices(np.asarray(p, np.float64)[None], rng)
        return np.vstack([np.hstack([lin[0], off[0, :, None]]), [0.0, 0.0, 1.0]])

    def matrices(self, p: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The affines ctx -> 128 crop of a batch's draws, as linear parts (B,2,2) and offsets (B,2),
        for context keypoints p (B,21,2). All `retries` tries are drawn at once and the first whose
        joints stay on the image wins (the same distribution as drawing them one after another);
        the last resort is the flips alone."""
        B, R = len(p), self.retries
        c_in, c_out = (CTX_SIZE - 1) / 2.0, (CROP_SIZE - 1) / 2.0
        fx = np.where(rng.random(B) < self.hflip, -1.0, 1.0)
        fy = np.where(rng.random(B) < self.vflip, -1.0, 1.0)
        jitter = rng.random(B) < self.p_affine
        zoom = np.exp(rng.uniform(*self.log_scale, (B, R + 1)))
        angle = np.radians(rng.uniform(-self.rotate, self.rotate, (B, R + 1)))
        t = rng.uniform(-self.shift, self.shift, (B, R + 1, 2)) * CROP_SIZE
        still = ~jitter[:, None] | (np.arange(R + 1) == R)  # no jitter, or the last resort: the flips alone
        zoom[still], angle[still], t[still] = 1.0, 0.0, 0.0
        c, sn = np.cos(angle) * zoom, np.sin(angle) * zoom  # _rotation(angle) @ _flip(fx, fy) x zoom
        lin = np.stack([np.stack([c * fx[:, None], sn * fy[:, None]], -1),
                        np.stack([-sn * fx[:, None], c * fy[:, None]], -1)], -2)  # (B, R+1, 2, 2)
        off = c_out + t - c_in * lin.sum(-1)  # about the centres: ctx centre -> crop centre + t
        k, todo = np.full(B, R), np.arange(B)  # the try each sample takes; the samples still trying
        for r in range(R):  # most samples keep their first try: only the others are checked again
            q = _apply_batch(lin[todo, r], off[todo, r], p[todo])
            ok = (~_inside(q, CROP_SIZE)).sum(-1) <= self.max_outside
            k[todo[ok]], todo = r, todo[~ok]
            if not len(todo):
                break
        return lin[np.arange(B), k], off[np.arange(B), k]

    def draw_batch(self, p: np.ndarray, s: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`geometry(..., warp=False)` for a whole batch from one generator, vectorised (the main
        process's draws under --cache-on-device): context keypoints p (B,21,2) and scales s (B,) ->
        p_out (B,21,2) float32 crop pixels, s_out (B,) and the pixel parameters (B, PIXEL_PARAMS)
        float32 with the warp. The same distributions as the per-sample draws; the numbers differ,
        as one stream serves the batch."""
        p = np.asarray(p, np.float64)
        lin, off = self.matrices(p, rng)
        pixel = self.draw_pixels_batch(len(p), rng)
        inv = np.linalg.inv(lin)
        pixel[:, _IX["warp"]] = np.concatenate([inv, -(inv @ off[..., None])], -1).reshape(len(p), 6)
        p_out = _apply_batch(lin, off, p).astype(np.float32)
        return p_out, np.asarray(s, np.float64) * np.sqrt(np.abs(np.linalg.det(lin))), pixel

    def _apply(self, ctx, p, s, rng):
        img, p_out, s_out = self._geometry(ctx, p, s, rng)
        self.pixel.set_random_state(rng, self._py)
        return self.pixel(image=img)["image"], p_out, s_out

    def geometry(self, ctx: np.ndarray, p: np.ndarray, s: float, seed: int,
                 warp: bool = True) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """`__call__`'s geometry (same img, p_out, s_out) plus the drawn pixel-op parameters
        (PIXEL_PARAMS,) float32, to be applied later by `apply_pixels` on a batch. warp=False:
        img is the 192 context itself (no copy, no resampling) and `apply_pixels` warps it, with
        the matrix it finds in the parameters (what the DataLoader workers do on CUDA)."""
        _check(ctx, p, s)
        rng = self._rngs(seed)
        p = np.asarray(p, dtype=np.float64)
        m = self._matrix(p, rng)
        pixel = self.draw_pixels(rng)
        pixel[_IX["warp"]] = np.linalg.inv(m)[:2].ravel()
        if not warp:
            return ctx, apply_affine(m, p).astype(np.float32), float(s) * _linear_scale(m), pixel
        return (*self._finish(ctx, p, float(s), m), pixel)

    @staticmethod
    def identity_pixels() -> np.ndarray:
        """The module's `identity_pixels()`, reachable through the augment object (lib.data
        sits below lib.augment and cannot import it)."""
        return identity_pixels()

    def draw_pixels(self, rng: np.random.Generator) -> np.ndarray:
        """Pixel-op parameters (PIXEL_PARAMS,) with the probabilities and ranges of `self.pixel`."""
        return self.draw_pixels_batch(1, rng)[0]

    def draw_pixels_batch(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` samples' pixel-op parameters (n, PIXEL_PARAMS) float32. Every draw is made whether its
        op is on or not, so the stream layout is fixed."""
        v = np.tile(identity_pixels(), (n, 1))
        on = rng.random((n, 5)) < np.array(list(self.p_ops.values()))
        jitter = np.stack([rng.uniform(lo, hi, n) for lo, hi in self.jitter], 1)
        gamma = rng.uniform(*self.gamma, n) / 100.0
        motion, size_u, sigma_angle = rng.random(n) < 0.5, rng.random(n), rng.random(n)
        std, noise_seed = rng.uniform(*self.noise_std, n) * 255.0, rng.integers(1 << 24, size=n)
        two, hw = rng.random(n) < 0.5, rng.uniform(0.1, 0.25, (n, 2, 2))
        corner, colour = rng.random((n, 2, 2)), rng.integers(0, 256, (n, 2, 3))
        c, g, b, z, h = on.T
        v[c, _IX["color"]], v[c, _IX["jitter"]] = 1.0, jitter[c]
        v[g, _IX["gamma_on"]], v[g, _IX["gamma"]] = 1.0, gamma[g, None]
        # blur, OneOf: GaussianBlur(blur_limit=(3, 5)): randint(3, 5), even sizes rounded up, so 3 (1/3) or 5 (2/3);
        # or a centred MotionBlur((3, 7)): odd 3..7, any angle, symmetric (direction 0), not shifted
        size = np.where(motion, 3 + 2 * (size_u * 3).astype(int), np.where(size_u < 1 / 3, 3, 5))
        sigma_angle = np.where(motion, 360.0 * sigma_angle, 0.5 + 2.5 * sigma_angle)
        v[b, _IX["blur"]] = np.stack([1.0 + motion, size, sigma_angle], 1)[b]
        v[b, _IX["kernel"]] = blur_kernels(motion[b], size[b], sigma_angle[b]).reshape(-1, _K * _K)
        v[z, _IX["noise"]] = np.stack([np.ones(n), std, noise_seed], 1)[z]
        # CoarseDropout: 1-2 holes of 10-25% of the side, each filled with one random colour
        sides = (hw * CROP_SIZE).astype(int)  # (n, hole, h/w)
        y0x0 = (corner * (CROP_SIZE - sides + 1)).astype(int)
        holes = np.concatenate([y0x0[..., ::-1], (y0x0 + sides)[..., ::-1], colour], axis=2)  # (n, 2, 7)
        holes[~two, 1] = 0  # one hole: the second is empty
        v[h, _IX["cutout"]], v[h, _IX["holes"]] = 1.0, holes[h].reshape(-1, 14)
        return v


def blur_kernels(motion: np.ndarray, size: np.ndarray, sigma_angle: np.ndarray) -> np.ndarray:
    """(n, 7, 7) normalised correlation kernels, centred: albumentations' Gaussian (`size` 3 or 5, sigma)
    or symmetric unshifted motion kernel (`size` 3..7 odd, angle in degrees), as its
    create_gaussian_kernel_1d and create_motion_kernel make them (tests), vectorised."""
    n, r = len(size), np.arange(_K) - _K // 2  # kernel coordinates about the centre
    half = (np.asarray(size) // 2)[:, None]
    sigma = np.where(motion, 1.0, sigma_angle)[:, None]
    k1 = np.exp(-0.5 * (r / sigma) ** 2) * (np.abs(r) <= half)
    k1 = k1 / k1.sum(1, keepdims=True)
    k = k1[:, :, None] * k1[:, None, :]
    # motion: the points center + (cos, sin) x t for t = -half..half, rounded, clipped to the kernel
    a = np.deg2rad(sigma_angle)[:, None]
    x = np.clip(np.round(half + np.cos(a) * r), 0, 2 * half) - half
    y = np.clip(np.round(half + np.sin(a) * r), 0, 2 * half) - half
    line = np.zeros((n, _K, _K))
    rows = np.repeat(np.arange(n), _K)
    used = (np.abs(r) <= half).ravel()
    line[rows[used], (y.ravel() + _K // 2).astype(int)[used], (x.ravel() + _K // 2).astype(int)[used]] = 1.0
    line /= line.sum((1, 2), keepdims=True)
    return np.where(np.asarray(motion)[:, None, None], line, k)


# ---------------------------------------------------------------- deferred pixel ops

_K = 7  # blur kernels are padded to 7 x 7


def _layout(*fields: tuple[str, int]) -> dict[str, slice]:
    out, start = {}, 0
    for name, n in fields:
        out[name], start = slice(start, start + n), start + n
    return out


PIXEL_LAYOUT: dict[str, slice] = _layout(
    ("warp", 6), ("color", 1), ("jitter", 4), ("gamma_on", 1), ("gamma", 1), ("blur", 3), ("kernel", _K * _K),
    ("noise", 3), ("cutout", 1), ("holes", 14))
PIXEL_PARAMS: int = PIXEL_LAYOUT["holes"].stop
"""Per sample: warp (2x3 affine, 128 crop pixel -> 192 context pixel; used when the input is the
context), color on, jitter (brightness, contrast, saturation factors, hue shift in turns),
gamma on, gamma; blur (0 off / 1 Gaussian / 2 motion, size, sigma or angle), kernel (7x7,
correlation, centred); noise (on, std in grey levels, seed < 2**24); cutout on, holes (2 x
x0, y0, x1, y1, r, g, b; an unused hole is empty)."""
_IX = PIXEL_LAYOUT


def identity_pixels() -> np.ndarray:
    """A (PIXEL_PARAMS,) float32 parameter vector that applies no pixel op."""
    v = np.zeros(PIXEL_PARAMS, np.float32)
    v[_IX["warp"]] = 1.0, 0.0, CTX_PAD, 0.0, 1.0, CTX_PAD  # the context's central 128: the exact crop
    v[_IX["jitter"]] = 1.0, 1.0, 1.0, 0.0
    v[_IX["gamma"]] = 1.0
    v[_IX["kernel"].start + _K * _K // 2] = 1.0
    return v


def _hash(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (lowbias32-like) on int64 tensors holding values < 2**32."""
    m = 0xFFFFFFFF
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & m
    x = x ^ (x >> 15)
    x = (x * 0x5BD1E995) & m
    return x ^ (x >> 16)


def _gauss_noise(seed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise (B, *shape): sample b depends only on its own seed[b] (Box-Muller
    on the two 16-bit halves of a counter-based hash, so |z| < 4.9; no generator state, no
    host synchronisation)."""
    i = _hash(torch.arange(math.prod(shape), device=seed.device, dtype=torch.int64))
    s = _hash((seed.to(torch.int64).view(-1, 1) + 0x9E3779B9) & 0xFFFFFFFF)
    h = _hash(s ^ i)  # (B, n)
    u1 = ((h >> 16).to(torch.float32) + 0.5) / 65536
    u2 = ((h & 0xFFFF).to(torch.float32) + 0.5) / 65536
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return z.view(-1, *shape)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """cv2's uint8 RGB2GRAY (fixed point, rounded), (B,1,H,W)."""
    r, g, b = x.unbind(1)
    return torch.floor((r * 4899 + g * 9617 + b * 1868 + 8192) / 16384).unsqueeze(1)


def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Hue shift by `shift` (B,) turns through cv2's uint8 HSV (its fixed-point RGB2HSV, H in
    0..179), as albumentations does it."""
    q = x.to(torch.int32)  # products stay below 2**31
    r, g, b = q.unbind(1)
    v, d = q.amax(1), q.amax(1) - q.amin(1)
    div = lambda a: torch.div(a + 2048, 4096, rounding_mode="floor")  # noqa: E731 (>> 12, rounded)
    sdiv = torch.round((255 << 12) / v.clamp(min=1).double()).to(torch.int32) * (v > 0)
    hdiv = torch.round((180 << 12) / (6.0 * d.clamp(min=1).double())).to(torch.int32) * (d > 0)
    num = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * d, r - g + 4 * d))
    sat = div(d * sdiv).float() / 255
    h = div(num * hdiv)
    h = torch.where(h < 0, h + 180, h).float()
    h = torch.floor(torch.remainder(h + 180 * shift.view(-1, 1, 1), 180)) / 30  # sectors 0..6
    n = 5.0 - 2 * torch.arange(3, device=x.device).view(1, 3, 1, 1)  # R, G, B (no host copy)
    k = torch.remainder(n + h.unsqueeze(1), 6)
    f = torch.minimum(k, 4 - k).clamp(0, 1)
    vs = v.float().unsqueeze(1)
    return torch.floor(vs - vs * sat.unsqueeze(1) * f + 1e-3)  # cv2 4.13 truncates (measured)


def apply_pixels(x: torch.Tensor, params: torch.Tensor, noise_seed: int | None = None,
                 compiled: bool = False, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Colour jitter, gamma, blur, Gaussian noise, cutout on a batch, in albumentations' order.

    x (B,3,H,W) RGB 0..255 (uint8 or float), params (B, PIXEL_PARAMS) float32 on x's device
    (`ModernAugment.geometry`); returns float32 (B,3,H,W), integers in [0, 255]. Each op
    rounds like albumentations' uint8 code (brightness, contrast, gamma, noise and cv2's
    HSV->RGB truncate; saturation and blur round), so results match it to about a grey level
    (tests/test_augment_device.py). No host synchronisation, no loop over samples.
    Differences from albumentations: the colour jitter runs brightness, contrast, saturation,
    hue in this fixed order (albumentations shuffles it per image); the noise comes from a
    per-sample hash of the noise seed, not from numpy's generator. Blur borders are
    reflect_101, as cv2's; CUDA's TF32 convolutions may move a blurred pixel by one level.
    `noise_seed` (a host int, e.g. `batch_noise_seed(params)` of the CPU batch): the noise comes
    from one torch generator seeded with it instead (one kernel instead of the hash's ~20; a
    sample's noise then depends on its batch, which is as deterministic as the batch itself).
    `noise`: that noise already drawn (`pixel_noise`), e.g. outside a CUDA graph that holds these ops.
    `compiled=True` (`--pixel-ops compiled`): the same ops through torch.compile, fused into a few
    kernels (on a GPU ~100 passes over the batch become a handful); compiled once per batch shape.
    """
    if noise is None and noise_seed is not None:  # drawn outside the compiled part: a new seed recompiles nothing
        noise = pixel_noise(x.shape, noise_seed, x.device)
    return (_compiled_pixels() if compiled else _pixels)(x, params.float(), noise)


def pixel_noise(shape: tuple[int, ...] | torch.Size, noise_seed: int, device: str | torch.device,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """The standard normal noise `apply_pixels` adds to a batch of `shape` (B,3,H,W) with this batch
    noise seed: one generator seeded with it, at the size after the warp (a 192 context becomes a
    128 crop); drawn into `out` when given (a CUDA graph's own tensor)."""
    size = (CROP_SIZE, CROP_SIZE) if shape[-1] == CTX_SIZE else tuple(shape[-2:])
    return torch.randn((shape[0], 3, *size), device=device, generator=torch.Generator(device).manual_seed(noise_seed),
                       out=out)


@functools.cache
def _compiled_pixels():
    return torch.compile(_pixels, dynamic=False)


def _pixels(x: torch.Tensor, p: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    """apply_pixels' ops on float params p; z: the standard normal noise, or None (the per-sample hash)."""

    x = warp_batch(x, p[:, _IX["warp"]]) if x.shape[-1] == CTX_SIZE else x.float()
    B, C, H, W = x.shape
    col = lambda name: p[:, _IX[name]].view(B, -1, 1, 1)  # noqa: E731
    on = lambda name: p[:, _IX[name].start].view(B, 1, 1, 1) > 0  # noqa: E731
    # colour jitter (factor 1 / shift 0 where off)
    bright, contrast, sat, hue = col("jitter").unbind(1)
    y = torch.floor((x * bright.unsqueeze(1)).clamp(0, 255))
    mean = _gray(y).mean(dim=(1, 2, 3), keepdim=True)
    y = torch.floor((y * contrast.unsqueeze(1) + mean * (1 - contrast.unsqueeze(1))).clamp(0, 255))
    y = torch.round((y * sat.unsqueeze(1) + _gray(y) * (1 - sat.unsqueeze(1))).clamp(0, 255))
    y = torch.where(hue.unsqueeze(1) != 0, _hue(y, hue.view(B)), y)
    x = torch.where(on("color"), y, x)
    # gamma
    x = torch.where(on("gamma_on"), torch.floor((x / 255) ** col("gamma") * 255), x)
    # blur: one grouped correlation with a 7x7 kernel per sample
    k = p[:, _IX["kernel"]].view(B, 1, _K, _K).repeat_interleave(C, 0)
    y = F.conv2d(F.pad(x.view(1, B * C, H, W), (_K // 2,) * 4, mode="reflect"), k, groups=B * C)
    x = torch.where(on("blur"), torch.round(y.view(B, C, H, W)).clamp(0, 255), x)
    # Gaussian noise
    _, std, seed = p[:, _IX["noise"]].unbind(1)
    if z is None:
        z = _gauss_noise(seed, (C, H, W))
    z = z * std.view(B, 1, 1, 1)
    x = torch.where(on("noise"), torch.floor((x + z).clamp(0, 255)), x)
    # cutout: each hole a rectangle of one colour
    holes = p[:, _IX["holes"]].view(B, 2, 7)
    ys = torch.arange(H, device=x.device, dtype=torch.float32).view(1, H, 1)
    xs = torch.arange(W, device=x.device, dtype=torch.float32).view(1, 1, W)
    for h in holes.unbind(1):
        x0, y0, x1, y1 = (h[:, j].view(B, 1, 1) for j in range(4))
        inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        x = torch.where((inside.unsqueeze(1) & on("cutout")), h[:, 4:].view(B, 3, 1, 1), x)
    return x


def warp_batch(ctx: torch.Tensor, inverse: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """cv2.warpAffine (bilinear, border 0, pixel centres, rounded) of a (B,3,192,192) context batch
    to (B,3,size,size) float, on its device; `inverse` (B,6) maps output pixels to context pixels."""
    B, _, H, W = ctx.shape
    a = inverse.float().view(B, 2, 3)
    ys, xs = torch.meshgrid(torch.arange(size, device=ctx.device, dtype=torch.float32),
                            torch.arange(size, device=ctx.device, dtype=torch.float32), indexing="ij")
    out = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, size * size, 3) @ a.transpose(1, 2)  # (B,N,2)
    grid = torch.stack([out[..., 0] * (2.0 / (W - 1)) - 1, out[..., 1] * (2.0 / (H - 1)) - 1], -1)
    grid = grid.view(B, size, size, 2)  # align_corners=True: -1 and 1 are the centres of the edge pixels
    y = F.grid_sample(ctx.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return torch.round(y).clamp(0, 255)


def batch_noise_seed(params: torch.Tensor) -> int:
    """One seed for a batch's noise from its samples' noise seeds (params on the CPU: no device sync)."""
    return int(params[:, _IX["noise"].stop - 1].double().sum()) % (1 << 62)


_BUILDERS = {"none": NoAugment, "paper": PaperAugment, "modern": ModernAugment}


def build(name: str, **kw: Any) -> Augment:
    """The augmentation pipeline `name` ("none", "paper" or "modern"), configured by `kw`."""
    if name not in _BUILDERS:
        raise ValueError(f"augment: unknown pipeline {name!r}; valid names: {', '.join(NAMES)}")
    return _BUILDERS[name](**kw)
