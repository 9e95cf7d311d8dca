"""Skin detail painted onto a hand's visible pixels: flexion creases, palm lines, knuckle wrinkles
and mottling, all fixed to the hand (computed from hand-frame points), so they move with it.

These are the cues that tell a palm from the back of a hand in a photograph; without them a
real-photo hand model often reads a synthetic back view as a mirrored palm.
"""
from __future__ import annotations

import numpy as np

from .hand import HandModel

CREASE = 0.2      # darkening of the flexion creases on the palmar side of the finger joints
WRINKLE = 0.06    # ... of the wrinkles on the back of PIP and DIP
PALM_LINE = 0.25  # ... of the deepest palm line

# palm lines in rest palm coordinates (x radial, y distal; metres at scale 1, before palm width/length)
PALM_LINES = (
    np.array([[-0.040, 0.066], [-0.020, 0.071], [0.000, 0.076], [0.012, 0.084]]),   # distal transverse ("heart")
    np.array([[0.030, 0.060], [0.010, 0.057], [-0.012, 0.053], [-0.030, 0.047]]),   # proximal transverse ("head")
    np.array([[0.030, 0.062], [0.014, 0.045], [0.006, 0.028], [0.004, 0.008]]),     # thenar ("life")
)


def _segment_distance(q: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance of 2-D points q (N,2) to a polyline (K,2)."""
    best = np.full(len(q), np.inf)
    for a, b in zip(poly[:-1], poly[1:]):
        ab = b - a
        t = np.clip(((q - a) @ ab) / float(ab @ ab), 0.0, 1.0)
        d = q - (a + t[:, None] * ab)
        best = np.minimum(best, np.sqrt((d * d).sum(axis=1)))
    return best


def _value_noise(p: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Smooth 3-D value noise in -1..1 at points p (N,3), lattice spacing `cell` metres."""
    g = p / cell
    i0 = np.floor(g).astype(np.int64)
    f = g - i0
    f = f * f * (3 - 2 * f)
    out = np.zeros(len(p))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                h = (i0[:, 0] + dx) * 73856093 ^ (i0[:, 1] + dy) * 19349663 ^ (i0[:, 2] + dz) * 83492791 ^ seed
                v = ((h * 2654435761) & 0xFFFF) / 32767.5 - 1.0
                w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1]) * (f[:, 2] if dz else 1 - f[:, 2])
                out += w * v
    return out


def detail(model: HandModel, q: np.ndarray, n: np.ndarray, part: np.ndarray, seed: int,
           strength: float = 1.0) -> np.ndarray:
    """Albedo factor (N,) for hand-frame points q (N,3) with hand-frame normals n (N,3).

    part: -1 forearm, 0 palm, 1 + 3f + k finger f segment k (0 distal, 1 middle, 2 base).
    """
    sc = model.shape.scale
    J = model.joints
    fac = np.ones(len(q))
    # mottling (two octaves) everywhere
    fac *= 1.0 + 0.05 * strength * (_value_noise(q, 0.012 * sc, seed) + 0.5 * _value_noise(q, 0.004 * sc, seed + 1))
    # finger flexion creases on the palmar side, wrinkles on the back of the joints
    w = 0.0011 * sc
    for f in range(5):
        tip, dip, pip, base = (J[1 + 4 * f + k] for k in range(4))
        rots = model.seg_rot[f]
        for k, (jt, (ra, rb), off) in enumerate(((dip, (rots[1], rots[2]), 0.0), (pip, (rots[0], rots[1]), 0.0),
                                                 (base, (rots[0], rots[0]), 0.35))):
            if f == 0 and off:  # the thumb's base crease is the thenar palm line
                continue
            reach = 1.6 * model.radii[2 + 4 * f + k]  # a crease goes round its own finger only
            axis = ra[:, 1] + rb[:, 1]
            axis /= np.linalg.norm(axis)
            palmar = (ra[:, 2] + rb[:, 2]) / 2
            seg_len = np.linalg.norm(pip - base) if off else 0.0
            c = jt + axis * off * seg_len  # finger bases: the crease lies where the web ends
            sel = np.nonzero((np.abs(q - c) < 0.03 * sc).all(axis=1) & (part != -1))[0]
            if not len(sel):
                continue
            d = q[sel] - c
            along = d @ axis
            keep = np.sqrt(np.maximum((d * d).sum(axis=1) - along ** 2, 0.0)) < reach
            sel, d, along = sel[keep], d[keep], along[keep]
            side = d @ palmar
            band = np.exp(-(along / w) ** 2) + 0.4 * np.exp(-((along - 1.8 * w) / w) ** 2)
            fac[sel] -= CREASE * strength * band * (side > 0)
            if f and not off:  # knuckle wrinkles on the back of PIP and DIP
                ring = np.exp(-(along / (2.5 * w)) ** 2) * (0.5 + 0.5 * np.cos(along / w * 2.2))
                fac[sel] -= WRINKLE * strength * ring * (side < 0)
    # palm lines
    palm = (part == 0) & (n[:, 2] > 0.2)
    if palm.any():
        pw, pl = model.shape.palm_width, model.shape.palm_length
        qp = q[palm][:, :2] / (np.array([pw, pl]) * sc)
        for k, line in enumerate(PALM_LINES):
            dist = _segment_distance(qp, line)
            fac[palm] -= (PALM_LINE - 0.04 * k) * strength * np.exp(-(dist / 0.0011) ** 2)
    return np.clip(fac, 0.45, 1.2)


def relief(model: HandModel, q: np.ndarray, n: np.ndarray, part: np.ndarray, height: float = 0.0005,
           width: float = 0.0030) -> np.ndarray:
    """Shading-normal offsets (N,3), hand frame: the extensor tendons as ridges on the back of the
    hand, running from each finger's knuckle towards the middle of the wrist."""
    sc = model.shape.scale
    dn = np.zeros_like(q)
    back = np.nonzero((part == 0) & (n[:, 2] < -0.3))[0]
    if not len(back):
        return dn
    p = q[back, :2]
    wrist = np.array([0.0, 0.012 * sc])
    best_d = np.full(len(back), np.inf)
    best_u = np.zeros((len(back), 2))
    best_t = np.zeros(len(back))
    for f in range(1, 5):
        a = model.joints[4 + 4 * f, :2]
        b = wrist + (a - wrist) * 0.5
        ab = b - a
        t = np.clip(((p - a) @ ab) / float(ab @ ab), 0.0, 1.0)
        off = p - (a + t[:, None] * ab)
        d = np.sqrt((off * off).sum(axis=1))
        closer = d < best_d
        best_d = np.where(closer, d, best_d)
        best_t = np.where(closer, t, best_t)
        best_u[closer] = off[closer] / (d[closer, None] + 1e-9)
    w = width * sc
    fade = 1.0 - best_t  # the ridge flattens towards the wrist
    slope = 2.0 * best_d / (w * w) * height * sc * np.exp(-(best_d / w) ** 2) * fade  # -dh/dd of a Gaussian ridge
    dn[back, :2] = slope[:, None] * best_u
    return dn
