"""Per-pixel ray casting of round cones and ellipsoids into a z-buffer, and shading.

Every primitive is intersected analytically with the pinhole rays of the pixels inside its
projected bounding box only (numpy, float64). The buffers keep, per pixel: depth (z in metres),
mask label, shading class, albedo and surface normal; `shade` lights them afterwards.
Pixel (i, j) is the ray through image point (u, v) = (j, i).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR = 0.02  # metres; nothing closer to the camera is drawn

# shading classes: (specular strength, shininess)
SHADE_CLASSES = {
    "skin": (0.10, 12.0),
    "nail": (0.15, 24.0),
    "cloth": (0.02, 4.0),
    "matte": (0.04, 6.0),
    "glossy": (0.45, 40.0),
}
CLASS_IDS = {name: i + 1 for i, name in enumerate(SHADE_CLASSES)}
SILHOUETTE_DARK = (0.86, 0.14)  # shading factor a + b * sqrt(n . v): a little darker towards silhouettes
SKIN_WRAP = (0.25, 0.0, -0.10)  # extra wrap of the key light on skin per RGB channel: red light scatters further


@dataclass
class Surface:
    """How a primitive is labelled and coloured.

    color: RGB albedo 0..1. palm: second albedo blended in where the normal faces `pdir`
    (skin: lighter palms). texture: HxWx3 float32 albedo looked up in screen space.
    """
    label: int
    shade: str = "skin"
    color: np.ndarray | None = None
    palm: np.ndarray | None = None
    pdir: np.ndarray | None = None
    texture: np.ndarray | None = None
    owner: int = 0  # >0: the pixels belong to one smooth skin surface (see blend_normals)


class Canvas:
    """Rays of a pinhole camera and the z-buffer being drawn into."""

    def __init__(self, K: np.ndarray, height: int, width: int) -> None:
        self.K = np.asarray(K, dtype=np.float64)
        self.h, self.w = height, width
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        u = (np.arange(width) - cx) / fx
        v = (np.arange(height) - cy) / fy
        x, y = np.meshgrid(u, v)
        inv = 1.0 / np.sqrt(x * x + y * y + 1.0)
        self.rays = np.stack([x * inv, y * inv, inv], axis=2)  # unit ray per pixel (H,W,3)
        self.rz = self.rays[..., 2]
        self.rays_flat = self.rays.reshape(-1, 3)
        self.index = np.arange(height * width).reshape(height, width)
        self.depth = np.full((height, width), np.inf)
        self.label = np.zeros((height, width), np.uint8)
        self.cls = np.zeros((height, width), np.uint8)
        self.albedo = np.zeros((height, width, 3), np.float32)
        self.normal = np.zeros((height, width, 3), np.float32)
        self.owner = np.zeros((height, width), np.uint8)

    # ------------------------------------------------------------ helpers
    def points(self, fi: np.ndarray) -> np.ndarray:
        """Camera-frame points (N,3) of the surface drawn at flat pixel indices fi."""
        d = self.rays_flat[fi]
        return d * (self.depth.reshape(-1)[fi] / d[:, 2])[:, None]

    def skin_pixels(self, owner: int) -> np.ndarray:
        """Flat indices of the pixels showing the skin of one owner (see Surface.owner)."""
        return self.index[(self.owner == owner) & (self.cls == CLASS_IDS["skin"])]

    def _bbox(self, lo: np.ndarray, hi: np.ndarray) -> tuple[int, int, int, int] | None:
        """Pixel box covering the projection of the axis-aligned box [lo, hi] (None: off-screen)."""
        if hi[2] <= NEAR:
            return None
        if lo[2] <= NEAR:
            return 0, self.w, 0, self.h
        xs = np.array([lo[0], hi[0]])
        ys = np.array([lo[1], hi[1]])
        zs = np.array([lo[2], hi[2]])
        K = self.K
        us = K[0, 0] * xs[:, None] / zs[None, :] + K[0, 2]
        vs = K[1, 1] * ys[:, None] / zs[None, :] + K[1, 2]
        x0, x1 = int(np.floor(us.min())), int(np.ceil(us.max())) + 1
        y0, y1 = int(np.floor(vs.min())), int(np.ceil(vs.max())) + 1
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.w), min(y1, self.h)
        if x0 >= x1 or y0 >= y1:
            return None
        return x0, x1, y0, y1

    def _write(self, box: tuple[int, int, int, int], t: np.ndarray, surf: Surface,
               normal_fn) -> None:
        """Keep the hits (t, NaN = miss) nearer than the z-buffer; store their attributes."""
        x0, x1, y0, y1 = box
        z = t * self.rz[y0:y1, x0:x1]
        hit = (z < self.depth[y0:y1, x0:x1]) & (z > NEAR)
        fi = self.index[y0:y1, x0:x1][hit]
        if not len(fi):
            return
        zh = z[hit]
        self.depth.reshape(-1)[fi] = zh
        self.label.reshape(-1)[fi] = surf.label
        self.cls.reshape(-1)[fi] = CLASS_IDS[surf.shade]
        self.owner.reshape(-1)[fi] = surf.owner
        n = normal_fn(self.points(fi))
        n /= np.sqrt((n * n).sum(axis=1))[:, None] + 1e-12
        self.normal.reshape(-1, 3)[fi] = n
        if surf.texture is not None:
            alb = surf.texture.reshape(-1, 3)[fi]
        elif surf.palm is not None and surf.pdir is not None:
            s = np.clip(0.5 + 1.1 * (n @ surf.pdir), 0.0, 1.0)[:, None]
            alb = surf.color + (surf.palm - surf.color) * s
        else:
            alb = surf.color
        self.albedo.reshape(-1, 3)[fi] = alb

    # ------------------------------------------------------------ primitives
    def round_cone(self, pa: np.ndarray, pb: np.ndarray, ra: float, rb: float, surf: Surface) -> None:
        """Convex hull of the spheres (pa, ra) and (pb, rb) (Quilez's rounded-cone intersection)."""
        pa = np.asarray(pa, np.float64)
        pb = np.asarray(pb, np.float64)
        ba = pb - pa
        m0 = float(ba @ ba)
        rr = ra - rb
        if m0 <= rr * rr + 1e-12:  # one sphere holds the other
            c, r = (pa, ra) if ra >= rb else (pb, rb)
            return self.sphere(c, r, surf)
        box = self._bbox(*_cone_bounds(pa, pb, ra, rb))
        if box is None:
            return
        x0, x1, y0, y1 = box
        oa = -pa
        m1 = float(ba @ oa)
        m5 = float(oa @ oa)
        m7 = float(pb @ pb)
        d2 = m0 - rr * rr
        k0 = d2 * m5 - m1 * m1 + m1 * rr * ra * 2.0 - m0 * ra * ra
        m23 = self.rays[y0:y1, x0:x1] @ np.stack([ba, oa], axis=1)
        m2, m3 = m23[..., 0], m23[..., 1]
        m6 = m3 - m2
        k2 = d2 - m2 * m2
        k1 = m3 * d2 + m2 * (rr * ra - m1)
        h = k1 * k1 - k0 * k2
        tb = (-np.sqrt(h) - k1) / k2
        y = tb * m2 + (m1 - ra * rr)
        body = (y > 0) & (y < d2)  # NaN (h < 0) compares False
        t1 = -m3 - np.sqrt(m3 * m3 - (m5 - ra * ra))
        t2 = -m6 - np.sqrt(m6 * m6 - (m7 - rb * rb))
        t = np.where(body, tb, np.fmin(t1, t2))  # NaN where missed

        self._write(box, t, surf, lambda p: _cone_gradient(p - pa, ba, ra, rr, d2)[0])

    def sphere(self, c: np.ndarray, r: float, surf: Surface) -> None:
        """Sphere of centre c and radius r."""
        self.ellipsoid(c, np.eye(3) * r, surf)

    def ellipsoid(self, c: np.ndarray, B: np.ndarray, surf: Surface) -> None:
        """Ellipsoid c + B @ (unit ball); B any invertible 3x3 (rotation, scales, mirror)."""
        c = np.asarray(c, np.float64)
        B = np.asarray(B, np.float64)
        box = self._bbox(*_ellipsoid_bounds(c, B))
        if box is None:
            return
        x0, x1, y0, y1 = box
        Ai = np.linalg.inv(B)
        o = -(Ai @ c)
        loc = self.rays[y0:y1, x0:x1] @ np.concatenate([Ai.T, (Ai.T @ o)[:, None]], axis=1)
        lx, ly, lz, b = loc[..., 0], loc[..., 1], loc[..., 2], loc[..., 3]
        a = lx * lx + ly * ly + lz * lz
        cc = float(o @ o) - 1.0
        t = (-b - np.sqrt(b * b - a * cc)) / a

        self._write(box, t, surf, lambda p: ((p - c) @ Ai.T) @ Ai)


    # ------------------------------------------------------------ one smooth skin
    def blend_normals(self, prims: list, owner: int, k: float) -> None:
        """Re-shade the owner's skin pixels as one smooth surface: the normal of the smooth union
        (log-sum-exp, radius k metres) of `prims` at each visible point. The silhouette and depth
        stay those of the exact union; the seams between primitives disappear from the shading."""
        fi = self.skin_pixels(owner)
        if not len(fi) or not prims:
            return
        p = self.points(fi)
        n = np.zeros_like(p)
        p32 = p.astype(np.float32)
        reach = 4.0 * k  # farther primitives weigh less than exp(-4) and are skipped
        for pr in prims:
            lo, hi = _ellipsoid_bounds(pr.a, pr.b) if pr.kind == "ell" else _cone_bounds(pr.a, pr.b, pr.ra, pr.rb)
            lo, hi = (lo - reach).astype(np.float32), (hi + reach).astype(np.float32)
            sel = np.nonzero((p32[:, 0] > lo[0]) & (p32[:, 0] < hi[0]) & (p32[:, 1] > lo[1]) & (p32[:, 1] < hi[1])
                             & (p32[:, 2] > lo[2]) & (p32[:, 2] < hi[2]))[0]
            if not len(sel):
                continue
            dist, grad = _sdf_grad(pr, p[sel])
            n[sel] += np.exp(-np.clip(dist, -reach, reach) / k)[:, None] * grad
        n /= np.sqrt((n * n).sum(axis=1))[:, None] + 1e-12
        self.normal.reshape(-1, 3)[fi] = n


def _cone_bounds(a, b, ra: float, rb: float) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box (lo, hi) of a round cone."""
    r = max(ra, rb)
    return np.minimum(a, b) - r, np.maximum(a, b) + r


def _ellipsoid_bounds(c, B) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box (lo, hi) of the ellipsoid c + B @ (unit ball)."""
    ext = np.sqrt((np.asarray(B) ** 2).sum(axis=1))
    return c - ext, c + ext


def _cone_gradient(q: np.ndarray, ba: np.ndarray, ra: float, rr: float, d2: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unnormalised outward normal of a round cone at points q = p - a (N,3), and the masks of the
    points nearest the sphere at a and the sphere at b (elsewhere: the conical side)."""
    yy = q @ ba - ra * rr
    in_a, in_b = yy <= 0, yy >= d2
    side = d2 * q - ba[None, :] * yy[:, None]
    return np.where(in_a[:, None], q, np.where(in_b[:, None], q - ba, side)), in_a, in_b


def _sdf_grad(pr, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (metres, approximate for ellipsoids) and unit gradient of a Prim at points p (N,3)."""
    if pr.kind == "ell":
        Ai = np.linalg.inv(np.asarray(pr.b, np.float64))
        loc = (p - pr.a) @ Ai.T
        g = loc @ Ai
        k0 = np.sqrt((loc * loc).sum(axis=1))
        k1 = np.sqrt((g * g).sum(axis=1)) + 1e-12
        return k0 * (k0 - 1.0) / k1, g / k1[:, None]
    a, b, ra, rb = np.asarray(pr.a, np.float64), np.asarray(pr.b, np.float64), pr.ra, pr.rb
    ba = b - a
    l2 = float(ba @ ba) + 1e-12
    rr = ra - rb
    d2 = l2 - rr * rr
    q = p - a
    g, in_a, in_b = _cone_gradient(q, ba, ra, rr, d2)
    # side: distance along the side's normal, which leans by the taper
    cos_t, sin_t = np.sqrt(max(d2, 1e-12) / l2), rr / np.sqrt(l2)
    x = (q @ ba) / np.sqrt(l2)
    side = np.sqrt(np.maximum((q * q).sum(axis=1) - x * x, 0.0)) * cos_t + x * sin_t - ra
    da = np.sqrt((q * q).sum(axis=1)) - ra
    qb = q - ba
    db = np.sqrt((qb * qb).sum(axis=1)) - rb
    g /= np.sqrt((g * g).sum(axis=1))[:, None] + 1e-12
    return np.where(in_a, da, np.where(in_b, db, side)), g


@dataclass
class Light:
    """Key light direction (towards the light, camera frame), colours and strengths."""
    direction: np.ndarray
    color: np.ndarray
    ambient: float
    ambient_color: np.ndarray
    fill_direction: np.ndarray
    fill: float
    wrap: float = 0.3


def shade(cv: Canvas, light: Light) -> np.ndarray:
    """Lit RGB (H,W,3) float32 in 0..1 for the covered pixels (zeros elsewhere).

    Wrapped diffuse key light (on skin wider in red than in blue, a cheap stand-in for subsurface
    scattering), a fill light, sky-like ambient, Blinn-Phong highlight per shading class and a soft
    darkening towards silhouettes. There are no contact shadows: a screen-space
    one drew dark bands between fingers, and a real-photo hand model read the hands worse with it
    (PCK 0.76 -> 0.79 on the realism meter without it).
    """
    out = np.zeros((cv.h, cv.w, 3), np.float32)
    fi = cv.index[np.isfinite(cv.depth)]
    if not len(fi):
        return out
    f32 = np.float32
    n = cv.normal.reshape(-1, 3)[fi]
    alb = cv.albedo.reshape(-1, 3)[fi]
    cls = cv.cls.reshape(-1)[fi]
    v = -cv.rays_flat[fi].astype(f32)
    ldir = (light.direction / np.linalg.norm(light.direction)).astype(f32)
    fdir = (light.fill_direction / np.linalg.norm(light.fill_direction)).astype(f32)
    ndl = n @ ldir
    skin = (cls == CLASS_IDS["skin"])[:, None]
    wrap = np.where(skin, f32(light.wrap) + np.asarray(SKIN_WRAP, f32)[None], f32(light.wrap))  # (n,3)
    diff = np.clip((ndl[:, None] + wrap) / (f32(1.0) + wrap), 0.0, 1.0)
    fill = np.clip(n @ fdir, 0.0, 1.0) * f32(light.fill)
    amb = (f32(0.65) - f32(0.35) * n[:, 1]) * f32(light.ambient)  # brighter from above (y down)
    hv = v + ldir
    hv /= np.sqrt((hv * hv).sum(axis=1))[:, None]
    ndh = np.clip((n * hv).sum(axis=1), 0.0, 1.0)
    table = np.zeros((len(CLASS_IDS) + 1, 2), f32)
    for name, (k, sh) in SHADE_CLASSES.items():
        table[CLASS_IDS[name]] = (k, sh)
    ks, shin = table[cls, 0], table[cls, 1]
    spec = ks * ndh ** shin * (ndl > 0)
    ndv = np.clip((n * v).sum(axis=1), 0.0, 1.0)
    ao = f32(SILHOUETTE_DARK[0]) + f32(SILHOUETTE_DARK[1]) * np.sqrt(ndv)  # soft darkening towards silhouettes
    col = light.color.astype(f32)
    lit = alb * ((amb * ao)[:, None] * light.ambient_color.astype(f32) + (diff + fill[:, None]) * ao[:, None] * col)
    lit += spec[:, None] * col
    out.reshape(-1, 3)[fi] = lit
    return out
