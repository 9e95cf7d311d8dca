"""Articulated hand: skeleton in RHD joint order, per-hand shape, joint limits, pose sampler,
forward kinematics and the hand's solid surface (round cones and ellipsoids).

Hand frame (a right hand; metres): origin at the wrist joint, +x radial (towards the thumb),
+y distal (towards the fingers), +z palmar (out of the palm). Flexion is a positive rotation
about a segment's local x axis (it curls the finger towards +z); abduction is a rotation about
the local z axis (positive moves a finger towards the little-finger side). A left hand is this
geometry mirrored through x -> -x.

Joint order (lib.joints): 0 wrist; per finger f (0 thumb .. 4 little) joints 1+4f .. 4+4f are
tip, dip, pip, mcp. For the thumb the four are tip, IP, MCP, CMC (RHD's "thumb1" is the CMC).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lib.joints import NUM_JOINTS

DEG = np.pi / 180.0

# ---------------------------------------------------------------- rest geometry (scale 1)
# base joint of each finger (thumb CMC, finger MCPs) in the hand frame
REST_BASE = np.array([
    [0.019, 0.024, 0.010],    # thumb CMC
    [0.024, 0.088, 0.002],    # index MCP
    [0.003, 0.092, 0.000],    # middle MCP
    [-0.016, 0.087, 0.002],   # ring MCP
    [-0.032, 0.077, 0.005],   # little MCP
])
# extra palmar (z) offset of each base at full cupping (palm arch)
CUP_Z = np.array([0.0, 0.003, 0.0, 0.006, 0.012])
# bone lengths base->2nd->3rd->tip per finger (thumb: metacarpal, proximal, distal)
REST_LENGTHS = np.array([
    [0.043, 0.032, 0.028],
    [0.042, 0.025, 0.022],
    [0.047, 0.029, 0.023],
    [0.044, 0.028, 0.023],
    [0.035, 0.021, 0.021],
])
# surface radius at base, 2nd, 3rd joint and tip. The fingers taper fast beyond the knuckle: with
# radii 25 % larger past the base (renderer v3) they looked like sausages, and the realism meter
# read them 0.012 PCK worse (lib/synth/README.md)
REST_RADII = np.array([
    [0.0160, 0.0126, 0.0112, 0.0098],
    [0.0116, 0.0084, 0.0074, 0.0066],
    [0.0120, 0.0087, 0.0077, 0.0067],
    [0.0114, 0.0082, 0.0074, 0.0064],
    [0.0102, 0.0074, 0.0066, 0.0058],
])
WRIST_RADIUS = 0.020
# rest splay of the four fingers about z (positive = towards the little finger)
BASE_SPLAY = np.array([0.0, -3.0, 0.0, 3.0, 7.0]) * DEG


def _thumb_frame() -> np.ndarray:
    """Rest frame of the thumb metacarpal: columns x (flexion axis), y (long axis), z (flexion)."""
    y = np.array([0.50, 0.82, 0.28])
    y /= np.linalg.norm(y)
    z = np.array([-0.85, -0.10, 0.50])
    z -= y * (z @ y)
    z /= np.linalg.norm(z)
    return np.stack([np.cross(y, z), y, z], axis=1)


THUMB_FRAME = _thumb_frame()

# ---------------------------------------------------------------- joint limits (radians)
# per finger [a0, a1, a2, a3]: fingers (mcp flexion, mcp abduction, pip flexion, dip flexion);
# thumb (cmc flexion, cmc abduction, mcp flexion, ip flexion)
JOINT_LIMITS = np.array([
    [[-20, 55], [-40, 25], [-10, 65], [-20, 85]],
    [[-25, 92], [-22, 22], [0, 110], [-5, 85]],
    [[-25, 92], [-16, 16], [0, 110], [-5, 85]],
    [[-25, 92], [-18, 20], [0, 110], [-5, 85]],
    [[-25, 92], [-18, 30], [0, 110], [-5, 85]],
], dtype=np.float64) * DEG
CUP_LIMITS = (0.0, 1.0)
WRIST_LIMITS = np.array([[-65, 65], [-20, 30]]) * DEG  # flexion/extension, deviation

# ---------------------------------------------------------------- per-hand shape variation
SCALE_RANGE = (0.80, 1.10)        # overall size
FINGER_LEN_RANGE = (0.92, 1.08)   # per-finger length factor
PALM_RANGE = (0.93, 1.07)         # palm width / palm length factors
THICK_RANGE = (0.88, 1.18)        # radius factor


@dataclass
class HandShape:
    """Per-hand size and proportions (all factors multiply the rest geometry)."""
    scale: float = 1.0
    finger_len: np.ndarray = field(default_factory=lambda: np.ones(5))
    palm_width: float = 1.0
    palm_length: float = 1.0
    thickness: float = 1.0


@dataclass
class Pose:
    """Joint angles (5,4) in radians (see JOINT_LIMITS), palm cupping 0..1, wrist (2,)."""
    angles: np.ndarray
    cup: float = 0.0
    wrist: np.ndarray = field(default_factory=lambda: np.zeros(2))
    kind: str = "custom"


@dataclass
class HandModel:
    """Posed hand in the hand frame: joints (21,3), surface radius per joint, segment frames."""
    joints: np.ndarray
    radii: np.ndarray
    seg_rot: np.ndarray  # (5, 3, 3, 3): finger, segment (base, middle, distal), rotation
    shape: HandShape
    pose: Pose


def sample_shape(rng: np.random.Generator) -> HandShape:
    """Random hand size and proportions within the *_RANGE constants."""
    return HandShape(
        scale=float(rng.uniform(*SCALE_RANGE)),
        finger_len=rng.uniform(*FINGER_LEN_RANGE, size=5),
        palm_width=float(rng.uniform(*PALM_RANGE)),
        palm_length=float(rng.uniform(*PALM_RANGE)),
        thickness=float(rng.uniform(*THICK_RANGE)),
    )


def base_positions(shape: HandShape, cup: float) -> np.ndarray:
    """Base joints (thumb CMC, finger MCPs) of a hand shape, (5,3)."""
    b = REST_BASE.copy()
    b[:, 2] += CUP_Z * cup
    b[:, 0] *= shape.palm_width
    b[:, 1] *= shape.palm_length
    return b * shape.scale


def bone_lengths(shape: HandShape) -> np.ndarray:
    """Finger bone lengths (5,3) base->tip of a hand shape."""
    return REST_LENGTHS * shape.finger_len[:, None] * shape.scale


def bone_length_limits() -> np.ndarray:
    """(min, max) length of every bone in lib.joints.EDGES order, (20, 2), over all shapes/poses."""
    s0, s1 = SCALE_RANGE
    out = []
    for f in range(5):
        lo = REST_BASE[f] * np.array([PALM_RANGE[0], PALM_RANGE[0], 1.0])
        hi = (REST_BASE[f] + np.array([0, 0, CUP_Z[f]])) * np.array([PALM_RANGE[1], PALM_RANGE[1], 1.0])
        out.append((s0 * np.linalg.norm(lo), s1 * np.linalg.norm(hi)))
        for k in range(3):
            L = REST_LENGTHS[f, k]
            out.append((s0 * FINGER_LEN_RANGE[0] * L, s1 * FINGER_LEN_RANGE[1] * L))
    return np.array(out)


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def base_frames(cup: float) -> np.ndarray:
    """Rest rotation of each finger's base segment (5,3,3)."""
    frames = [THUMB_FRAME @ rot_y(-0.25 * cup)]
    for f in range(1, 5):
        # cupping rolls the ulnar fingers slightly towards the thumb
        frames.append(rot_z(BASE_SPLAY[f]) @ rot_y(-0.12 * cup * (f - 2) if f > 2 else 0.0))
    return np.array(frames)


def forward_kinematics(shape: HandShape, pose: Pose) -> HandModel:
    """Joint positions (hand frame) and segment frames of a posed hand."""
    J = np.zeros((NUM_JOINTS, 3))
    radii = np.zeros(NUM_JOINTS)
    radii[0] = WRIST_RADIUS * shape.scale * shape.thickness
    seg_rot = np.zeros((5, 3, 3, 3))
    bases = base_positions(shape, pose.cup)
    lengths = bone_lengths(shape)
    frames = base_frames(pose.cup)
    for f in range(5):
        a0, a1, a2, a3 = pose.angles[f]
        R = frames[f] @ rot_z(a1) @ rot_x(a0)
        p = bases[f]
        pts = [p]
        seg_rot[f, 0] = R
        for k, bend in enumerate((a2, a3)):
            p = p + R[:, 1] * lengths[f, k]
            pts.append(p)
            R = R @ rot_x(bend)
            seg_rot[f, k + 1] = R
        pts.append(p + R[:, 1] * lengths[f, 2])
        # joints 1+4f .. 4+4f are tip, dip, pip, base
        for k in range(4):
            J[4 + 4 * f - k] = pts[k]
            radii[4 + 4 * f - k] = REST_RADII[f, k] * shape.scale * shape.thickness
    return HandModel(J, radii, seg_rot, shape, pose)


# ---------------------------------------------------------------- pose sampling
# archetypes: (name, weight, thumb[4], finger[4] for index..little) in degrees; None = relaxed.
# Since v7 closed hands are rarer (fist 1.0, claw 0.7, thumbs-up 0.6 until v6): RHD's curled end is less
# curled than ours was (benchmarks.realism scene: index extension / palm q10 0.46 in RHD, 0.37 in v6).
_RELAX = [[18, 0, 22, 14], [22, 0, 30, 16], [28, 0, 36, 20], [34, 0, 42, 22]]
_FIST = [[88, 0, 100, 62]] * 4
_FLAT = [[2, 0, 4, 3]] * 4
ARCHETYPES: tuple[tuple[str, float, list, list], ...] = (
    ("relaxed", 9.0, [10, -15, 15, 20], _RELAX),
    ("fist", 0.2, [40, 5, 45, 40], _FIST),
    ("point", 0.4, [38, 5, 35, 35], [[5, 0, 6, 4]] + _FIST[1:]),
    ("pinch", 0.8, [30, -25, 20, 25], [[42, 0, 48, 28], [30, 0, 36, 20], [36, 0, 40, 22], [40, 0, 44, 24]]),
    ("ok", 0.2, [30, -25, 20, 25], [[48, 0, 55, 35], [8, 0, 10, 5], [10, 0, 10, 5], [14, 0, 12, 6]]),
    ("spread", 1.2, [-10, -28, 0, 0], [[0, -15, 0, 0], [0, -3, 0, 0], [0, 10, 0, 0], [0, 22, 0, 0]]),
    ("flat", 1.2, [0, -10, 5, 5], _FLAT),
    ("grasp", 1.8, [25, -35, 15, 15], [[50, 0, 55, 32], [55, 0, 58, 34], [58, 0, 60, 36], [62, 0, 62, 38]]),
    ("vsign", 0.2, [40, 5, 40, 40], [[4, -12, 5, 3], [4, 6, 5, 3]] + _FIST[2:]),
    ("thumbs_up", 0.3, [-5, 15, 0, 0], _FIST),
    ("claw", 0.2, [20, -30, 40, 40], [[-10, 0, 85, 60]] * 4),
    ("three", 0.1, [40, 5, 40, 40], [[4, -8, 5, 3], [4, 0, 5, 3], [4, 8, 5, 3], [88, 0, 100, 62]]),
    ("random", 0.4, None, None),
)


DIP_COUPLING = 0.67  # DIP flexion / PIP flexion of a relaxed finger
# RHD's fingers move together: within a hand the four fingers' extensions differ less than v5's did
# (benchmarks.realism scene, "finger extension spread"), so since v6 a hand opens or closes as a whole
# (CURL_SIGMA) more than its fingers deviate one by one, and the gestures that set fingers apart (point,
# pinch, ok, vsign, three) are rarer (weights 1.5/1.5/0.8/0.7/0.5 until v5).
FINGER_NOISE = (4.0, 5.0, 4.0)  # degrees: each finger's own deviation from its archetype (mcp, abd, pip)
CURL_SIGMA = 20.0               # degrees: how much more or less closed the whole hand is than its archetype
NEIGHBOUR_SIGMA = 3.0           # degrees: deviations neighbouring fingers share
THUMB_NOISE = 8.0               # degrees: the thumb's deviation from its archetype, per joint


def _neighbour_noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    """(4,) deviations of index..little that neighbouring fingers share (ring follows middle and little)."""
    z = rng.normal(0.0, sigma, 5)
    return (z[:4] + z[1:]) / np.sqrt(2.0)


def sample_pose(rng: np.random.Generator, kind: str | None = None) -> Pose:
    """A random pose within JOINT_LIMITS: an archetype (relaxed, fist, point, pinch, ...) plus noise."""
    names = [a[0] for a in ARCHETYPES]
    w = np.array([a[1] for a in ARCHETYPES])
    idx = names.index(kind) if kind is not None else int(rng.choice(len(ARCHETYPES), p=w / w.sum()))
    name, _, thumb, fingers = ARCHETYPES[idx]
    lo, hi = JOINT_LIMITS[..., 0], JOINT_LIMITS[..., 1]
    if thumb is None:  # free pose from the hand's synergies: a curl per finger, neighbours alike
        curl = np.clip(rng.uniform(0, 1) + _neighbour_noise(rng, 0.28), 0.0, 1.0)
        ang = np.zeros((5, 4))
        ang[1:, 0] = curl * 85 * DEG + rng.normal(0, 10 * DEG, 4)
        ang[1:, 2] = curl * 100 * DEG + rng.normal(0, 10 * DEG, 4)
        ang[1:, 1] = rng.normal(0, 5 * DEG, 4) + rng.normal(0.0, 8 * DEG) * (1 - curl) * np.array([-1.0, -0.2, 0.6, 1.2])
        ang[0] = np.array([rng.uniform(-10, 50), rng.uniform(-40, 20), rng.uniform(0, 55), rng.uniform(0, 70)]) * DEG
    else:
        ang = np.array([thumb] + fingers, dtype=np.float64) * DEG
        noise = rng.normal(0.0, 1.0, size=(5, 4)) * np.array([*FINGER_NOISE, 0.0]) * DEG
        noise[0] = rng.normal(0.0, THUMB_NOISE * DEG, size=4)
        curl = (rng.normal(0.0, CURL_SIGMA * DEG) + _neighbour_noise(rng, NEIGHBOUR_SIGMA * DEG))[:, None]
        ang[1:, [0, 2]] += curl
        spread = rng.normal(0.0, 6 * DEG)   # fingers together or apart
        ang[1:, 1] += spread * np.array([-1.0, -0.2, 0.6, 1.2])
        ang = ang + noise
    if name != "claw":  # the DIP follows the PIP (a shared tendon); a claw is the exception
        ang[1:, 3] = ang[1:, 2] * DIP_COUPLING + rng.normal(0, 6 * DEG, 4)
    ang = np.clip(ang, lo, hi)
    cup = float(np.clip(rng.normal(0.35 if name in ("fist", "grasp", "pinch", "ok") else 0.15, 0.2), *CUP_LIMITS))
    wrist = np.clip(rng.normal(0.0, 1.0, 2) * np.array([30, 12]) * DEG, WRIST_LIMITS[:, 0], WRIST_LIMITS[:, 1])
    return Pose(ang, cup, wrist, name)


def pose_from_degrees(thumb: list[float], fingers: list[list[float]], cup: float = 0.0,
                      wrist: tuple[float, float] = (0.0, 0.0)) -> Pose:
    """Build a pose from degrees: thumb [cmc flex, cmc abd, mcp, ip], 4 fingers [mcp, abd, pip, dip]."""
    ang = np.array([thumb] + list(fingers), dtype=np.float64) * DEG
    return Pose(ang, cup, np.array(wrist, dtype=np.float64) * DEG, "custom")


# ---------------------------------------------------------------- surface primitives
@dataclass
class Prim:
    """A solid: 'cone' = convex hull of spheres (a, ra) and (b, rb); 'ell' = a + B @ unit ball.

    part: -1 forearm/other, 0 palm, 1 + 3f + k finger f segment k (0 distal, 1 middle, 2 base).
    material: a name the scene maps to colours; pdir: palmar direction (skin colour blend).
    """
    kind: str
    a: np.ndarray
    b: np.ndarray
    ra: float = 0.0
    rb: float = 0.0
    part: int = 0
    material: str = "skin"
    pdir: np.ndarray | None = None


def hand_primitives(model: HandModel, sleeve: float | None = None, forearm_len: float = 0.26) -> list[Prim]:
    """Surface of a posed hand plus forearm, in the hand frame.

    sleeve: distance from the wrist where a sleeve starts (None: bare arm).
    """
    s = model.shape.scale * model.shape.thickness
    J, R = model.joints, model.radii
    prims: list[Prim] = []
    ez = np.array([0.0, 0.0, 1.0])
    # fingers
    for f in range(5):
        tip, dip, pip, base = (J[1 + 4 * f + k] for k in range(4))
        rt, rd, rp, rbase = (R[1 + 4 * f + k] for k in range(4))
        d = tip - dip
        d = d / (np.linalg.norm(d) + 1e-12)
        end = tip - d * rt * 0.85
        rots = model.seg_rot[f]
        prims.append(Prim("cone", base, pip, rbase * (0.92 if f == 0 else 1.0), rp, part=1 + 3 * f + 2,
                          pdir=rots[0][:, 2]))
        prims.append(Prim("cone", pip, dip, rp, rd, part=1 + 3 * f + 1, pdir=rots[1][:, 2]))
        prims.append(Prim("cone", dip, end, rd, rt, part=1 + 3 * f, pdir=rots[2][:, 2]))
        # fingernail: a thin ellipsoid on the back of the distal segment
        Rd = rots[2]
        c = dip + (end - dip) * 0.66 - Rd[:, 2] * rt * 0.74
        B = Rd @ np.diag([rt * 0.80, np.linalg.norm(end - dip) * 0.46, rt * 0.32])
        prims.append(Prim("ell", c, B, part=1 + 3 * f, material="nail"))
    # palm
    pw, pl, sc = model.shape.palm_width, model.shape.palm_length, model.shape.scale
    P = lambda x, y, zz: np.array([x * pw * sc, y * pl * sc, zz * sc])  # noqa: E731
    cup = model.pose.cup
    # a plate: distal and proximal flattened ellipsoids, bulging more on the palmar side
    prims.append(Prim("ell", P(-0.004, 0.066, 0.003 + 0.003 * cup),
                      np.diag([0.040 * pw * sc, 0.030 * pl * sc, 0.0125 * s]), part=0, pdir=ez))
    prims.append(Prim("ell", P(-0.002, 0.032, 0.003), np.diag([0.032 * pw * sc, 0.030 * pl * sc, 0.0135 * s]),
                      part=0, pdir=ez))
    # metacarpals (knuckles and tendons show on the back of the hand)
    for f, (bx, by, br) in zip(range(1, 5), [(0.013, 0.024, 0.0105), (0.002, 0.022, 0.0108),
                                            (-0.010, 0.024, 0.0104), (-0.019, 0.028, 0.0098)]):
        prims.append(Prim("cone", P(bx, by, 0.001), J[4 + 4 * f], br * 0.8 * s, R[4 + 4 * f] * 1.0, part=0, pdir=ez))
    # webs between the finger bases: on the palm side the fingers start well beyond the MCPs
    for f in range(1, 4):
        pts = []
        for g in (f, f + 1):
            base, pip = J[4 + 4 * g], J[3 + 4 * g]
            pts.append(base + (pip - base) * 0.3 + model.seg_rot[g, 0][:, 2] * 0.002 * sc)
        prims.append(Prim("cone", pts[0], pts[1], 0.0078 * s, 0.0076 * s, part=0, pdir=ez))
    # hypothenar and thenar bulges on the palmar side
    prims.append(Prim("cone", P(-0.017, 0.020, 0.004), P(-0.027, 0.062, 0.004 + 0.006 * cup), 0.0125 * s,
                      0.0105 * s, part=0, pdir=ez))
    th = J[4] + (J[3] - J[4]) * 0.55
    prims.append(Prim("cone", P(0.008, 0.028, 0.006), th, 0.0155 * s, 0.0125 * s, part=0, pdir=ez))
    # wrist
    prims.append(Prim("ell", P(0.0, 0.004, 0.001), np.diag([0.027 * pw * sc, 0.024 * sc, 0.0155 * s]),
                      part=0, pdir=ez))
    # forearm: two tapered cones side by side (radius & ulna) give a flattened cross-section
    fl, fd = model.pose.wrist
    dirn = rot_x(-fl) @ rot_z(fd) @ np.array([0.0, -1.0, 0.0])
    side = rot_x(-fl) @ rot_z(fd) @ np.array([1.0, 0.0, 0.0])
    L = forearm_len * sc
    for sgn in (1.0, -1.0):
        a = dirn * 0.012 * sc + side * sgn * 0.0065 * sc
        b = dirn * L + side * sgn * 0.008 * sc
        if sleeve is None or sleeve >= L:
            prims.append(Prim("cone", a, b, 0.0195 * s, 0.029 * s, part=-1, material="arm", pdir=ez))
        else:
            m = dirn * max(sleeve, 0.02) + side * sgn * 0.007 * sc
            r_m = 0.0195 * s + (0.029 - 0.0195) * s * max(sleeve, 0.02) / L
            prims.append(Prim("cone", a, m, 0.0195 * s, r_m, part=-1, material="arm", pdir=ez))
            prims.append(Prim("cone", m - dirn * 0.004, b, r_m * 1.22, 0.029 * s * 1.2, part=-1, material="sleeve"))
    return prims
