"""Scenes: an RHD-like camera, one or two posed hands with forearms and people,
lighting, backgrounds and camera effects; `render_image` turns a seed into one sample.

A scene is sampled first (geometry, skin, placement: `sample_scene`) and drawn afterwards with
the same random stream (`render_scene`), so joints and K can be recomputed cheaply from
the seed alone (used to resume a dataset).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from lib.joints import NUM_JOINTS

from . import backgrounds
from .hand import (HandModel, Pose, Prim, forward_kinematics, hand_primitives, rot_x, rot_y,
                   rot_z, sample_pose, sample_shape)
from . import skin
from .render import NEAR, Canvas, Light, Surface, shade

RENDERER_VERSION = 7             # bump when the pictures change: rendered data of another version is redone
IMAGE_SIZE = 320
FOCAL_RANGE = (280.0, 300.0)
BBOX_RANGE = (20.0, 120.0)       # hand bounding box (longest side of its keypoints), pixels
BBOX_BETA = (1.5, 3.0)           # ... drawn as BBOX_RANGE[0] + span * Beta(a, b): RHD's hands are small
TWO_HANDS_P = 0.45
OVERLAP_P = 0.15                 # a second hand overlaps the first (interacting hands)
SEPARATE_TRIES = 8               # otherwise up to this many placements are tried for one apart from it
BODY_P = 0.55                    # a person-like body behind the hands
HELD_OBJECT_P = 0.3              # an object in a grasping hand
FULLY_INSIDE_P = 0.9             # the first hand's 21 keypoints inside the image
BORDER_GAP = 10.0                # ... and then at least this far from its edges: RHD's test crops (almost)
                                 # never have a keypoint at the crop's edge, i.e. a hand at the image border
OFFSCREEN_U = -400.0             # where an absent hand is put (its keypoints project off-image)
DEPTH_SCALE = 5.0                # RHD: metres = (R * 256 + G) / 2**16 * 5
DEPTH_MAX = DEPTH_SCALE * 65535 / 65536  # background depth
BLUR_RANGE = (0.05, 0.3)         # camera: Gaussian blur sigma (px), at most a slight softening: RHD is sharp
NOISE_RANGE = (0.2, 1.0)         # sensor noise strength
GAIN_RANGE = (0.6, 1.25)         # exposure
GAMMA_RANGE = (0.85, 1.2)
SIDES = ("left", "right")
MIRROR = np.diag([-1.0, 1.0, 1.0])

# RHD mask ids: 0 background, 1 person/other; per hand thumb, index, middle, ring, little with
# 3 ids each (tip segment, middle, base), then the palm: left 2..16 + palm 17, right 18..32 + 33
BACKGROUND_ID, PERSON_ID = 0, 1
LEFT_IDS = range(2, 18)
RIGHT_IDS = range(18, 34)

SKIN_SATURATION = 1.3             # chroma of the skin tones, scaled about their grey: photographed skin is warmer
SKIN_TONES = np.array([
    [0.97, 0.82, 0.72], [0.94, 0.76, 0.63], [0.88, 0.68, 0.54], [0.80, 0.59, 0.43],
    [0.68, 0.47, 0.32], [0.55, 0.36, 0.23], [0.42, 0.27, 0.17], [0.30, 0.19, 0.12],
])


def mask_id(side: str, part: int) -> int:
    """RHD mask id of a hand part (-1 forearm/other, 0 palm, 1 + 3f + k finger f segment k)."""
    if part < 0:
        return PERSON_ID
    off = 0 if side == "left" else 16
    return off + (17 if part == 0 else 1 + part)


def as_rng(seed_or_rng: int | np.random.SeedSequence | np.random.Generator) -> np.random.Generator:
    """A numpy Generator from a seed, SeedSequence or Generator (returned as is)."""
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)


def project(xyz: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection (N,3) -> (N,2) pixels."""
    xyz = np.asarray(xyz, np.float64)
    p = xyz @ np.asarray(K, np.float64).T
    return p[:, :2] / p[:, 2:3]


def camera_matrix(focal: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """3x3 intrinsics with the principal point at the image centre."""
    c = size / 2.0
    return np.array([[focal, 0.0, c], [0.0, focal, c], [0.0, 0.0, 1.0]])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly distributed 3D rotation."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


@dataclass
class SceneHand:
    """A hand in the camera frame: camera point = R @ (M @ hand point) + t (M mirrors a left hand)."""
    side: str
    model: HandModel
    R: np.ndarray
    t: np.ndarray
    present: bool = True
    sleeve: float | None = None
    skin: np.ndarray = field(default_factory=lambda: SKIN_TONES[2].copy())
    palm: np.ndarray = field(default_factory=lambda: SKIN_TONES[1].copy())
    held: list[Prim] = field(default_factory=list)   # objects in the hand (hand frame)
    camera_prims: list[Prim] = field(default_factory=list)  # its skin surface as drawn (camera frame)

    @property
    def linear(self) -> np.ndarray:
        return self.R @ MIRROR if self.side == "left" else self.R

    def to_camera(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(p) @ self.linear.T + self.t

    @property
    def xyz(self) -> np.ndarray:
        return self.to_camera(self.model.joints)


@dataclass
class Extra:
    """A non-hand solid (body, arm): a Prim in camera coordinates and how it looks."""
    prim: Prim
    color: np.ndarray | None = None
    shade: str = "matte"
    textured: bool = False
    texture_slot: int = 0


@dataclass
class Scene:
    K: np.ndarray
    size: int
    hands: dict[str, SceneHand]
    extras: list[Extra] = field(default_factory=list)
    n_textures: int = 0

    @property
    def xyz(self) -> np.ndarray:
        """(42,3) joints, left hand then right hand."""
        return np.concatenate([self.hands["left"].xyz, self.hands["right"].xyz])


# ---------------------------------------------------------------- placement
def forearm_direction(pose: Pose) -> np.ndarray:
    """Unit vector wrist -> elbow in the hand frame."""
    fl, fd = pose.wrist
    return rot_x(-fl) @ rot_z(fd) @ np.array([0.0, -1.0, 0.0])


def sample_orientation(rng: np.random.Generator, side: str, pose: Pose) -> np.ndarray:
    """Random global rotation; the forearm rarely points at the camera (a hand at the end of an arm).

    Hands seen end-on (fingers towards or away from the camera) are not made rarer: RHD's test hands
    are foreshortened as often as uniformly rotated ones (`python -m benchmarks.realism scene`)."""
    M = MIRROR if side == "left" else np.eye(3)
    for _ in range(30):
        R = random_rotation(rng)
        arm = R @ M @ forearm_direction(pose)
        if arm[2] > -0.45 or rng.random() < 0.08:
            return R
    return R


def place_hand(points: np.ndarray, K: np.ndarray, size_px: float, center: tuple[float, float],
               min_depth: float = 0.15) -> np.ndarray:
    """Translation putting `points` (rotated, hand origin at 0) at a keypoint box of size_px around center."""
    f, c = K[0, 0], K[0, 2]
    ext = max(np.ptp(points[:, 0]), np.ptp(points[:, 1]), 1e-3)
    pz_mean, pz_min = float(points[:, 2].mean()), float(points[:, 2].min())
    zc = max(f * ext / size_px, min_depth - pz_min + pz_mean)
    mid = (points.min(axis=0) + points.max(axis=0)) / 2
    t = np.array([(center[0] - c) * zc / f - mid[0], (center[1] - c) * zc / f - mid[1], zc - pz_mean])
    for _ in range(4):
        uv = project(points + t, K)
        zc = t[2] + pz_mean
        zc = max(zc * float(np.ptp(uv, axis=0).max()) / size_px, min_depth - pz_min + pz_mean)
        t[2] = zc - pz_mean
        uv = project(points + t, K)
        t[:2] += (np.asarray(center) - (uv.min(axis=0) + uv.max(axis=0)) / 2) * zc / f
    return t


def _nudge_inside(hand: SceneHand, K: np.ndarray, size: int, margin: float = 1.0) -> None:
    """Shift a hand sideways so that all its keypoints project inside the image."""
    for _ in range(6):
        uv = project(hand.xyz, K)
        lo, hi = uv.min(axis=0), uv.max(axis=0)
        shift = np.where(lo < margin, margin - lo, 0.0) + np.where(hi > size - 1 - margin, size - 1 - margin - hi, 0.0)
        if not shift.any():
            return
        z = float(hand.xyz[:, 2].mean())
        hand.t[:2] += (shift + np.sign(shift) * 0.5) * z / K[0, 0]


def _center_for(rng: np.random.Generator, box_wh: np.ndarray, size: int, inside: bool) -> np.ndarray:
    """A keypoint box centre: inside the image, BORDER_GAP px or more from its edges, or anywhere."""
    if not inside:
        return rng.uniform(-0.1 * size, 1.1 * size, 2)
    c = np.empty(2)
    for a in range(2):
        lo, hi = box_wh[a] / 2 + BORDER_GAP, size - 1 - box_wh[a] / 2 - BORDER_GAP
        c[a] = size / 2 if hi <= lo else rng.uniform(lo, hi)
    return c


def _box_size(rng: np.random.Generator) -> float:
    """Hand keypoint box size in pixels: 20..120, median about 51 (RHD's characters are seen whole)."""
    return BBOX_RANGE[0] + (BBOX_RANGE[1] - BBOX_RANGE[0]) * rng.beta(*BBOX_BETA)


def _skin(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Back-of-hand and palm albedo across the human range (palms are lighter)."""
    x = rng.beta(1.2, 1.7) * (len(SKIN_TONES) - 1)  # all tones, lighter ones more often
    i = int(min(x, len(SKIN_TONES) - 2))
    back = SKIN_TONES[i] + (SKIN_TONES[i + 1] - SKIN_TONES[i]) * (x - i)
    back = np.clip(back * rng.uniform(0.93, 1.07, 3) * rng.uniform(0.9, 1.1), 0, 1)
    palm_target = np.array([0.92, 0.72, 0.62])
    palm = back + (palm_target - back) * (0.3 + 0.35 * x / (len(SKIN_TONES) - 1))
    back, palm = (np.clip(c.mean() + (c - c.mean()) * SKIN_SATURATION, 0, 1) for c in (back, palm))  # warmer
    return back, palm


def _make_hand(rng: np.random.Generator, side: str, shape, skin) -> SceneHand:
    pose = sample_pose(rng)
    model = forward_kinematics(shape, pose)
    R = sample_orientation(rng, side, pose)
    sleeve = float(rng.uniform(0.03, 0.2)) if rng.random() < 0.5 else None
    hand = SceneHand(side, model, R, np.zeros(3), True, sleeve, skin[0], skin[1])
    if pose.kind == "grasp" and rng.random() < HELD_OBJECT_P:
        s = shape.scale
        if rng.random() < 0.5:  # a bar across the palm
            r = rng.uniform(0.014, 0.024) * s
            c = np.array([-0.004, 0.075, 0.012 + r]) * np.array([1, s, 1])
            d = np.array([1.0, rng.normal(0, 0.2), 0.0]) * rng.uniform(0.05, 0.09)
            hand.held.append(Prim("cone", c + d, c - d, r, r * rng.uniform(0.8, 1.2), part=-1, material="held"))
        else:
            r = rng.uniform(0.022, 0.036) * s
            hand.held.append(Prim("ell", np.array([0.0, 0.07 * s, 0.008 + r]), np.eye(3) * r, part=-1,
                                  material="held"))
    return hand


def _hand_box(hand: SceneHand, K: np.ndarray) -> tuple[np.ndarray, float, float]:
    uv = project(hand.xyz, K)
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    return (lo + hi) / 2, float(max(hi - lo)), float(hand.xyz[:, 2].min())


def sample_scene(rng: np.random.Generator, size: int = IMAGE_SIZE) -> Scene:
    """Random camera, hands (pose, shape, orientation, placement), bodies and arms."""
    K = camera_matrix(float(rng.uniform(*FOCAL_RANGE)), size)
    shape = sample_shape(rng)
    skin = _skin(rng)
    n_present = 2 if rng.random() < TWO_HANDS_P else 1
    first = SIDES[int(rng.integers(2))]
    order = [first, "right" if first == "left" else "left"]
    hands: dict[str, SceneHand] = {}
    for k, side in enumerate(order):
        hand = _make_hand(rng, side, shape, skin)
        pts = hand.to_camera(hand.model.joints)  # t = 0
        ext = np.ptp(pts, axis=0)
        if k == 0:
            s_px = _box_size(rng)
            inside = rng.random() < FULLY_INSIDE_P
            center = _center_for(rng, ext[:2] / max(ext[:2]) * s_px, size, inside)
        elif k < n_present:
            c0, s0, _ = _hand_box(hands[order[0]], K)
            s_px = float(np.clip(s0 * rng.uniform(0.8, 1.25), *BBOX_RANGE))
            inside = rng.random() < 0.6
            if rng.random() < OVERLAP_P:  # interacting: overlapping the first hand
                center = c0 + rng.normal(0, 0.45 * s0, 2)
                inside = False
            else:  # apart, as a person's two hands mostly are: a few tries for boxes that do not touch
                for _ in range(SEPARATE_TRIES):
                    center = _center_for(rng, ext[:2] / max(ext[:2]) * s_px, size, inside)
                    if np.abs(center - c0).max() > (s0 + s_px) / 2:
                        break
        else:  # absent: far left of the image, same depth as the first hand
            hand.present = False
            s_px = _hand_box(hands[order[0]], K)[1]
            center = np.array([OFFSCREEN_U, size / 2])
            inside = False
        hand.t = place_hand(pts, K, s_px, (float(center[0]), float(center[1])))
        if inside:
            _nudge_inside(hand, K, size)
        if not hand.present:
            uv = project(hand.xyz, K)
            if uv[:, 0].max() > -50:
                hand.t[0] -= (uv[:, 0].max() + 50) * hand.t[2] / K[0, 0]
        hands[side] = hand
    scene = Scene(K, size, hands)
    present = [h for h in hands.values() if h.present]
    if rng.random() < BODY_P:
        _add_body(rng, scene, present)
    for h in present:
        _add_upper_arm(rng, scene, h)
    return scene


def _new_texture(scene: Scene) -> int:
    scene.n_textures += 1
    return scene.n_textures - 1


def _look(rng: np.random.Generator, scene: Scene, p_texture: float = 0.5) -> dict:
    if rng.random() < p_texture and scene.n_textures < 3:
        return dict(textured=True, texture_slot=_new_texture(scene), shade=str(rng.choice(["cloth", "matte"])))
    return dict(color=backgrounds.random_color(rng, 0.8), shade=str(rng.choice(["cloth", "matte", "glossy"])))


def _backproject(uv: np.ndarray, z: float, K: np.ndarray) -> np.ndarray:
    return np.array([(uv[0] - K[0, 2]) * z / K[0, 0], (uv[1] - K[1, 2]) * z / K[1, 1], z])


def _add_body(rng: np.random.Generator, scene: Scene, present: list[SceneHand]) -> None:
    """A person-like body (torso, neck, head, hair) behind the hands."""
    zmax = max(h.xyz[:, 2].max() for h in present)
    z = zmax + rng.uniform(0.08, 0.6)
    c = _backproject(rng.uniform(0.0, 1.0, 2) * scene.size, z + 0.1, scene.K)
    Rb = rot_z(rng.normal(0, 0.25)) @ rot_y(rng.uniform(-0.9, 0.9))
    s = rng.uniform(0.85, 1.15)
    cloth = _look(rng, scene, 0.6)
    scene.extras.append(Extra(Prim("ell", c, Rb @ np.diag([0.17, 0.30, 0.11]) * s, part=-1), **cloth))
    skin = present[0].skin if present else SKIN_TONES[3]
    neck = c + Rb @ np.array([0.0, -0.30, 0.0]) * s
    head = c + Rb @ np.array([0.0, -0.42, 0.0]) * s
    scene.extras.append(Extra(Prim("cone", c + Rb @ np.array([0, -0.2, 0]) * s, neck, 0.055 * s, 0.05 * s, part=-1),
                              color=skin, shade="skin"))
    scene.extras.append(Extra(Prim("ell", head, Rb @ np.diag([0.08, 0.105, 0.095]) * s, part=-1),
                              color=skin, shade="skin"))
    hair = backgrounds.random_color(rng, 0.5) * 0.35
    scene.extras.append(Extra(Prim("ell", head + Rb @ np.array([0.0, -0.025, 0.02]) * s,
                                   Rb @ np.diag([0.088, 0.1, 0.095]) * s, part=-1), color=hair, shade="glossy"))
    # legs / skirt below the torso
    hip = c + Rb @ np.array([0.0, 0.26, 0.0]) * s
    for sgn in (-1, 1):
        knee = hip + Rb @ np.array([0.09 * sgn, 0.45, rng.normal(0, 0.1)]) * s
        scene.extras.append(Extra(Prim("cone", hip + Rb @ np.array([0.08 * sgn, 0, 0]) * s, knee, 0.085 * s,
                                       0.06 * s, part=-1), **cloth))


def _add_upper_arm(rng: np.random.Generator, scene: Scene, hand: SceneHand) -> None:
    """Upper arm from the elbow, mostly away from the camera, in the sleeve colour."""
    sc = hand.model.shape.scale
    d = hand.linear @ forearm_direction(hand.model.pose)
    elbow = hand.t + d * 0.26 * sc
    away = d + np.array([0.0, 0.0, 1.0]) * rng.uniform(0.3, 1.5) + rng.normal(0, 0.5, 3)
    away /= np.linalg.norm(away)
    shoulder = elbow + away * 0.28 * sc
    look = dict(color=hand.skin, shade="skin") if hand.sleeve is None else dict(shade="cloth")
    scene.extras.append(Extra(Prim("cone", elbow, shoulder, 0.031 * sc, 0.04 * sc, part=-1,
                                   material="sleeve_of_" + hand.side), **look))


# ---------------------------------------------------------------- drawing
def _draw(cv: Canvas, p: Prim, surf: Surface) -> None:
    if p.kind == "cone":
        cv.round_cone(p.a, p.b, p.ra, p.rb, surf)
    else:
        cv.ellipsoid(p.a, p.b, surf)


BLEND_RADIUS = 0.004  # metres: how far the shading blends across the seams of a hand's primitives


def _draw_hand(cv: Canvas, hand: SceneHand, textures: dict, rng: np.random.Generator) -> None:
    L = hand.linear
    owner = 1 + SIDES.index(hand.side)
    nail = hand.skin + (np.array([0.95, 0.80, 0.78]) - hand.skin) * 0.35
    sleeve = textures.get("sleeve_" + hand.side)
    skin_prims = []
    for p in hand_primitives(hand.model, hand.sleeve) + hand.held:
        if p.kind == "cone":
            q = Prim("cone", hand.to_camera(p.a), hand.to_camera(p.b), p.ra, p.rb)
        else:
            q = Prim("ell", hand.to_camera(p.a), L @ p.b)
        label = mask_id(hand.side, p.part)
        pdir = None if p.pdir is None else L @ p.pdir
        if p.material == "skin":
            surf = Surface(label, "skin", hand.skin, hand.palm, pdir, owner=owner)
        elif p.material == "arm":
            surf = Surface(label, "skin", hand.skin, (hand.skin + hand.palm) / 2, pdir, owner=owner)
        elif p.material == "nail":
            surf = Surface(label, "nail", nail)
        elif p.material == "sleeve":
            surf = Surface(label, "cloth", sleeve[0], texture=sleeve[1])
        else:  # held object
            surf = Surface(label, str(rng.choice(["glossy", "matte"])), backgrounds.random_color(rng, 0.8))
        if p.material in ("skin", "arm"):
            skin_prims.append(q)
        _draw(cv, q, surf)
    hand.camera_prims = skin_prims


def _draw_all(cv: Canvas, scene: Scene, textures: dict, tex: list, rng: np.random.Generator) -> None:
    present = [scene.hands[side] for side in SIDES if scene.hands[side].present]
    for hand in present:
        _draw_hand(cv, hand, textures, rng)
    for e in scene.extras:
        if e.prim.material.startswith("sleeve_of_") and e.shade == "cloth":
            col, t = textures["sleeve_" + e.prim.material[len("sleeve_of_"):]]
            surf = Surface(PERSON_ID, "cloth", col, texture=t)
        elif e.textured:
            surf = Surface(PERSON_ID, e.shade, texture=tex[e.texture_slot])
        else:
            surf = Surface(PERSON_ID, e.shade, e.color)
        _draw(cv, e.prim, surf)
    for hand in present:
        cv.blend_normals(hand.camera_prims, 1 + SIDES.index(hand.side), BLEND_RADIUS * hand.model.shape.scale)
        _paint_skin(cv, hand, int(rng.integers(1 << 30)))


def _paint_skin(cv: Canvas, hand: SceneHand, seed: int) -> None:
    """Creases, palm lines, knuckle wrinkles and mottling on a hand's visible skin (lib.synth.skin)."""
    fi = cv.skin_pixels(1 + SIDES.index(hand.side))
    if not len(fi):
        return
    p = cv.points(fi)
    L = hand.linear  # orthogonal (a rotation, times a mirror for a left hand): its inverse is L.T
    q = (p - hand.t) @ L
    n = cv.normal.reshape(-1, 3)[fi].astype(np.float64) @ L
    lab = cv.label.reshape(-1)[fi].astype(np.int64) - (0 if hand.side == "left" else 16)
    part = np.where(lab == 17, 0, lab - 1)
    part[cv.label.reshape(-1)[fi] == PERSON_ID] = -1
    cv.albedo.reshape(-1, 3)[fi] *= skin.detail(hand.model, q, n, part, seed).astype(np.float32)[:, None]
    bumped = n + skin.relief(hand.model, q, n, part)
    bumped /= np.sqrt((bumped * bumped).sum(axis=1))[:, None] + 1e-12
    cv.normal.reshape(-1, 3)[fi] = (bumped @ L.T).astype(np.float32)


def render_scene(scene: Scene, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw a sampled scene: background, hands, extras, lighting, camera effects; ground truth."""
    size = scene.size
    bg = backgrounds.background(rng, size, size)
    tex = [backgrounds.texture(rng, size, size) for _ in range(scene.n_textures)]
    textures: dict = {}
    for side in SIDES:
        if rng.random() < 0.4:
            textures["sleeve_" + side] = (None, backgrounds.texture(rng, size, size))
        else:
            textures["sleeve_" + side] = (backgrounds.random_color(rng, 0.7), None)
    cv = Canvas(scene.K, size, size)
    with np.errstate(invalid="ignore", divide="ignore"):  # rays that miss give NaN
        _draw_all(cv, scene, textures, tex, rng)
    light = _sample_light(rng)
    lit = shade(cv, light)
    covered = np.isfinite(cv.depth)
    img = np.where(covered[..., None], lit, bg)
    color = _camera_effects(rng, img)
    depth = quantize_depth(cv.depth)
    mask = cv.label.copy()
    xyz = scene.xyz
    vis = visibility(xyz, scene.K, mask)
    uv = project(xyz, scene.K)
    return dict(color=color, mask=mask, depth=depth,
                uv_vis=np.concatenate([uv, vis[:, None]], axis=1).astype(np.float32),
                xyz=xyz.astype(np.float32), K=scene.K.astype(np.float32))


def _sample_light(rng: np.random.Generator) -> Light:
    d = rng.normal(size=3) + np.array([0.0, -0.6, -1.3])
    tint = np.clip(1 + rng.normal(0, 0.06, 3), 0.8, 1.2)
    return Light(direction=d, color=tint * rng.uniform(0.65, 1.0), ambient=rng.uniform(0.4, 0.65),
                 ambient_color=np.clip(1 + rng.normal(0, 0.06, 3), 0.8, 1.2),
                 fill_direction=rng.normal(size=3) + np.array([0, 0, -1.0]), fill=rng.uniform(0.0, 0.25),
                 wrap=rng.uniform(0.4, 0.8))


def _camera_effects(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Mild blur (also anti-aliases the edges), sensor noise, exposure and gamma -> uint8 RGB. No motion
    blur (until v5: 10 % of images): RHD renders still frames; training adds it (lib.augment)."""
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), float(rng.uniform(*BLUR_RANGE)))
    h, w = img.shape[:2]
    noise = rng.standard_normal((h // 2, w // 2, 3), dtype=np.float32)
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    img = img * np.float32(255.0) + noise * np.float32(rng.uniform(*NOISE_RANGE) * 1.6)
    img8 = np.clip(img + np.float32(0.5), 0, 255).astype(np.uint8)
    gain, gamma = rng.uniform(*GAIN_RANGE), rng.uniform(*GAMMA_RANGE)
    lut = np.clip((np.clip(np.arange(256) / 255.0 * gain, 0, 1) ** gamma) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(img8, lut)


# ---------------------------------------------------------------- ground truth
def quantize_depth(depth: np.ndarray) -> np.ndarray:
    """Depth (m, inf = background) as RHD stores it: 16 bit over 0..5 m, returned as float32 metres."""
    return decode_depth(encode_depth(depth))


def encode_depth(depth: np.ndarray) -> np.ndarray:
    """(H,W) metres -> (H,W,3) uint8 RGB with the top 8 bits in R, the low 8 bits in G."""
    q = np.clip(np.nan_to_num(np.asarray(depth, np.float64), posinf=DEPTH_MAX) / DEPTH_SCALE * 65536.0 + 0.5,
                0, 65535).astype(np.uint16)
    out = np.zeros(q.shape + (3,), np.uint8)
    out[..., 0] = q >> 8
    out[..., 1] = q & 255
    return out


def decode_depth(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3) RHD depth RGB -> metres float32."""
    rgb = np.asarray(rgb)
    return ((rgb[..., 0].astype(np.float32) * 256 + rgb[..., 1]) / 65536.0 * DEPTH_SCALE).astype(np.float32)


VIS_RADIUS = 2  # px: the neighbourhood (5x5) whose segmentation decides a joint's visibility


def related_ids(k: int) -> set[int]:
    """Mask ids related to joint k of the 42 (RHD order): its own finger's three segments, plus the
    palm for the wrist and the finger bases (MCPs)."""
    off = 0 if k < NUM_JOINTS else 16
    j = k % NUM_JOINTS
    palm = {off + 17}
    if j == 0:
        return palm
    f = (j - 1) // 4
    finger = {off + 2 + 3 * f + s for s in range(3)}
    return finger | palm if j % 4 == 0 else finger


def visibility(xyz: np.ndarray, K: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(42,) 0/1 by RHD's own rule (its author, lmb-freiburg/hand3d issue 32): a heuristic on the hand
    segmentation in a neighbourhood of the projected joint, false outside the image or where the
    neighbourhood is taken by classes unrelated to the joint. Here: in the 5x5 window, at least one
    pixel of a related class (`related_ids`) and no fewer related than unrelated non-background ones
    (for the wrist the forearm, PERSON_ID, counts as neither). So a joint hidden by its own finger
    still counts as visible (as in RHD), one behind another finger, the palm, the other hand, an arm
    or an object does not."""
    xyz = np.asarray(xyz, np.float64)
    h, w = mask.shape
    uv = project(xyz, K)
    j = np.floor(uv[:, 0] + 0.5)
    i = np.floor(uv[:, 1] + 0.5)
    inside = (xyz[:, 2] > NEAR) & (j >= 0) & (j < w) & (i >= 0) & (i < h)
    vis = np.zeros(len(xyz), np.float64)
    r = VIS_RADIUS
    for k in np.nonzero(inside)[0]:
        y, x = int(i[k]), int(j[k])
        win = mask[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1].ravel()
        related = np.isin(win, list(related_ids(k))).sum()
        neutral = (BACKGROUND_ID, PERSON_ID) if k % NUM_JOINTS == 0 else (BACKGROUND_ID,)  # the wrist's forearm
        other = (~np.isin(win, neutral)).sum() - related
        vis[k] = float(related >= 1 and related >= other)
    return vis


def render_image(seed_or_rng: int | np.random.SeedSequence | np.random.Generator = 0,
                 size: int = IMAGE_SIZE) -> dict[str, np.ndarray]:
    """One random RHD-style sample: color (HxWx3 uint8 RGB), mask (HxW uint8), depth (HxW float32 m),
    uv_vis (42,3), xyz (42,3), K (3,3)."""
    rng = as_rng(seed_or_rng)
    return render_scene(sample_scene(rng, size), rng)


def single_hand_scene(pose: Pose, R: np.ndarray, distance: float = 0.45, side: str = "right",
                      shape=None, focal: float = 290.0, size: int = IMAGE_SIZE,
                      center: tuple[float, float] | None = None) -> Scene:
    """A scene with one specified hand (pose, rotation R, wrist at `distance` m) and no extras.

    The hand's keypoint box is centred in the image unless `center` is given; the other hand is
    off-screen. Draw it with `render_scene(scene, rng)`.
    """
    from .hand import HandShape
    K = camera_matrix(focal, size)
    shape = shape or HandShape()
    hands = {}
    for s in SIDES:
        model = forward_kinematics(shape, pose)
        hand = SceneHand(s, model, np.asarray(R, np.float64), np.array([0.0, 0.0, distance]), s == side)
        if s == side:
            uv = project(hand.xyz, K)
            c = np.array(center if center is not None else (size / 2, size / 2))
            hand.t[:2] += (c - (uv.min(axis=0) + uv.max(axis=0)) / 2) * distance / focal
        else:
            hand.t[0] = (OFFSCREEN_U - K[0, 2]) * distance / focal
        hands[s] = hand
    return Scene(K, size, hands)


def render_single_hand(seed_or_rng: int | np.random.SeedSequence | np.random.Generator = 0,
                       size: int = IMAGE_SIZE) -> dict[str, np.ndarray]:
    """One random hand alone (pose, shape, skin, sleeve and view as in render_image), centred at 0.45 m,
    with no second hand, body or object: the hand's own appearance, without the scene's difficulties.
    Same keys as render_image; the hand is the right one (rows 21-41)."""
    rng = as_rng(seed_or_rng)
    pose = sample_pose(rng)
    scene = single_hand_scene(pose, sample_orientation(rng, "right", pose), 0.45, "right", sample_shape(rng),
                              size=size)
    hand = scene.hands["right"]
    hand.skin, hand.palm = _skin(rng)
    hand.sleeve = float(rng.uniform(0.03, 0.2)) if rng.random() < 0.5 else None
    return render_scene(scene, rng)

