"""lib.augment: shapes, determinism, keypoints follow pixels, paper statistics."""
from __future__ import annotations

import json
import math
import pickle
import warnings

import albumentations as A
import cv2
import numpy as np
import pytest

from lib import augment as aug_mod
from lib.augment import NAMES, PAPER_OPS, apply_affine, build, crop_matrix
from lib.data import CROP_SIZE, CTX_PAD, CTX_SIZE, context_crop, crop_box

KP = A.KeypointParams(format="xy", remove_invisible=False, check_each_transform=False)
QUIET = {"color_p": 0.0, "gamma_p": 0.0, "blur_p": 0.0, "noise_p": 0.0, "cutout_p": 0.0}
BOX = np.s_[CTX_PAD:CTX_PAD + CROP_SIZE, CTX_PAD:CTX_PAD + CROP_SIZE]  # the competition box in a ctx


# ---------------------------------------------------------------- helpers

def hand(rng: np.random.Generator, s: float = 1.0) -> np.ndarray:
    """21 joints spread over the competition box of a ctx (box side 128, margin 8 s)."""
    lo, hi = CTX_PAD + 8 * s + 1, CTX_PAD + CROP_SIZE - 8 * s - 2
    return rng.uniform(lo, hi, size=(21, 2)).astype(np.float32)


def blob(shape: tuple[int, int], pt: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """uint8 RGB image, black but for a Gaussian blob centred at pt (pixel-centre coords)."""
    ys, xs = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    g = 255.0 * np.exp(-((xs - pt[0]) ** 2 + (ys - pt[1]) ** 2) / (2 * sigma ** 2))
    return np.repeat(np.round(g).astype(np.uint8)[..., None], 3, axis=2)


def centroid(img: np.ndarray, near: np.ndarray | None = None, r: int = 9) -> np.ndarray:
    """Blob centre, robust to salt/pepper, dropout and uniform colour changes."""
    g = cv2.medianBlur(np.ascontiguousarray(img), 3).astype(np.float64).mean(axis=2)
    y0 = x0 = 0
    if near is not None:
        x0, y0 = max(int(round(near[0])) - r, 0), max(int(round(near[1])) - r, 0)
        g = g[y0:int(round(near[1])) + r + 1, x0:int(round(near[0])) + r + 1]
    ring = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    g = np.clip(g - np.median(ring), 0, None)
    g[g < 0.25 * g.max()] = 0
    ys, xs = np.mgrid[:g.shape[0], :g.shape[1]]
    return np.array([(g * xs).sum() / g.sum() + x0, (g * ys).sum() / g.sum() + y0])


def follows(pipe, p: np.ndarray, s: float, seed: int, joints, tol: float = 0.5) -> float:
    """Worst distance between each joint's output keypoint and where its blob landed."""
    worst, checked = 0.0, 0
    for j in joints:
        img, p_out, _ = pipe(blob((CTX_SIZE, CTX_SIZE), p[j], sigma=2.5), p, s, seed)
        if not (2 <= p_out[j]).all() or not (p_out[j] <= CROP_SIZE - 3).all():
            continue  # too close to the border for a clean centroid
        err = float(np.linalg.norm(centroid(img, p_out[j]) - p_out[j]))
        assert err < tol, (pipe, seed, j, p_out[j], err)
        worst, checked = max(worst, err), checked + 1
    assert checked > 0, "every joint fell near the border: nothing was checked"
    return worst


# ---------------------------------------------------------------- albumentations convention

@pytest.mark.parametrize("name,t", [
    ("hflip", A.HorizontalFlip(p=1)),
    ("vflip", A.VerticalFlip(p=1)),
    ("transpose", A.Transpose(p=1)),
    ("rotate30", A.Affine(rotate=(30, 30), p=1)),
    ("shear15", A.Affine(shear={"x": (15, 15), "y": (0, 0)}, p=1)),
    ("scale1.7", A.Affine(scale=(1.7, 1.7), p=1)),
    ("scale0.7", A.Affine(scale=(0.7, 0.7), p=1)),
])
def test_albumentations_geometry_is_pixel_centre(name, t):
    for pt in ([30.3, 40.6], [50.0, 61.2], [44.7, 33.1]):
        pt = np.array(pt)
        out = A.Compose([t], keypoint_params=KP, seed=0)(
            image=blob((96, 96), pt), keypoints=pt[None].astype(np.float32))
        assert np.abs(out["keypoints"][0, :2] - centroid(out["image"])).max() < 0.25, name


def test_albumentations_resize_slips_half_a_pixel():
    """Resize scales keypoints x*k; cv2 puts the pixels at (x+0.5)k-0.5 (pixel centres)."""
    pt = np.array([30.3, 40.6])
    k = 200 / 96
    out = A.Compose([A.Resize(200, 200)], keypoint_params=KP)(
        image=blob((96, 96), pt), keypoints=pt[None].astype(np.float32))
    c = centroid(out["image"])
    assert np.allclose(out["keypoints"][0, :2], pt * k, atol=1e-4)
    assert np.abs((pt + 0.5) * k - 0.5 - c).max() < 0.25
    assert np.abs(out["keypoints"][0, :2] - c).min() > 0.4  # the (k - 1) / 2 slip


def test_albumentations_set_random_seed_correlates_children():
    """Why lib.augment seeds with set_random_state: set_random_seed gives every child the
    same stream, so two p=0.5 transforms are applied together or not at all."""
    c = A.Compose([A.ColorJitter(brightness=0.5, contrast=0, saturation=0, hue=0, p=0.5),
                   A.InvertImg(p=0.5)], save_applied_params=True)
    img = np.full((8, 8, 3), 128, np.uint8)
    agree = 0
    for seed in range(100):
        c.set_random_seed(seed)
        names = [name for name, _ in c(image=img)["applied_transforms"]]
        agree += ("ColorJitter" in names) == ("InvertImg" in names)
    assert agree == 100


def test_our_rotation_matches_albumentations_affine():
    rng = np.random.default_rng(0)
    p = rng.uniform(20, 170, (21, 2)).astype(np.float32)
    for deg in (-70.0, 30.0):
        out = A.Compose([A.Affine(rotate=(deg, deg), p=1)], keypoint_params=KP)(
            image=np.zeros((CTX_SIZE, CTX_SIZE, 3), np.uint8), keypoints=p)
        c = (CTX_SIZE - 1) / 2
        mine = apply_affine(aug_mod._about(aug_mod._rotation(deg), c, c), p)
        assert np.abs(out["keypoints"][:, :2] - mine).max() < 1e-3


# ---------------------------------------------------------------- API

def test_build_names_and_errors():
    assert NAMES == ("none", "paper", "modern")
    with pytest.raises(ValueError, match="none, paper, modern"):
        build("fancy")
    with pytest.raises(ValueError, match="only"):
        build("paper", only="zoom")
    with pytest.raises(ValueError, match="ctx"):
        build("none")(np.zeros((128, 128, 3), np.uint8), np.zeros((21, 2)), 1.0, 0)
    with pytest.raises(ValueError, match="p must be"):
        build("none")(np.zeros((CTX_SIZE, CTX_SIZE, 3), np.uint8), np.zeros((20, 2)), 1.0, 0)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_determinism(name):
    rng = np.random.default_rng(1)
    ctx = rng.integers(0, 256, (CTX_SIZE, CTX_SIZE, 3), dtype=np.uint8)
    p, s = hand(rng), 1.3
    pipe = build(name, **({"p_augment": 1.0} if name == "paper" else {}))
    outs = [pipe(ctx, p, s, seed) for seed in (7, 8, 7)]
    again = build(name, **({"p_augment": 1.0} if name == "paper" else {}))(ctx, p, s, 7)
    clone = pickle.loads(pickle.dumps(pipe))(ctx, p, s, 7)
    for img, p_out, s_out in outs:
        assert img.shape == (CROP_SIZE, CROP_SIZE, 3) and img.dtype == np.uint8
        assert p_out.shape == (21, 2) and p_out.dtype == np.float32
        assert isinstance(s_out, float) and s_out > 0
    for other in (outs[2], again, clone):
        assert np.array_equal(outs[0][0], other[0]) and np.array_equal(outs[0][1], other[1])
        assert outs[0][2] == other[2]
    if name != "none":
        assert not np.array_equal(outs[0][0], outs[1][0])


def test_none_is_the_central_crop():
    rng = np.random.default_rng(2)
    ctx = rng.integers(0, 256, (CTX_SIZE, CTX_SIZE, 3), dtype=np.uint8)
    p = hand(rng)
    img, p_out, s_out = build("none")(ctx, p, 0.77, 3)
    assert np.array_equal(img, ctx[BOX])
    assert np.array_equal(p_out, p - CTX_PAD) and s_out == 0.77


def test_paper_unaugmented_is_the_none_crop():
    rng = np.random.default_rng(3)
    ctx = rng.integers(0, 256, (CTX_SIZE, CTX_SIZE, 3), dtype=np.uint8)
    p = hand(rng)
    ref = build("none")(ctx, p, 1.1, 0)
    out = build("paper", p_augment=0.0)(ctx, p, 1.1, 0)
    assert np.array_equal(ref[0], out[0]) and np.array_equal(ref[1], out[1]) and ref[2] == out[2]


# ---------------------------------------------------------------- geometry and s_out

def test_tight_crop_rule_and_scale():
    s = 2.0
    u = np.array([[3.2, 10.0], [40.7, 20.0]] + [[20.0, 15.0]] * 19)  # source px from the box
    q = (u + 0.5) * s + CTX_PAD - 0.5  # -> ctx px
    m = crop_matrix(q, s)
    # x: ceil 4, floor 40 -> [-4, 48), side 52; y: [2, 28) extended toward +y to [2, 54)
    assert crop_box(u + 16, size=96) == (12, 18, 52)  # the ctx holds source px -16..79
    side_ctx = 52 * s
    assert math.isclose(math.sqrt(abs(np.linalg.det(m[:2, :2]))), CROP_SIZE / side_ctx)
    assert math.isclose(s * math.sqrt(abs(np.linalg.det(m[:2, :2]))), s * CROP_SIZE / side_ctx)
    # the box's outer pixel edges map onto the output's outer pixel edges
    edges = (np.array([[-4, 2], [48, 54]]) - 0.5 + 0.5) * s + CTX_PAD - 0.5
    assert np.allclose(apply_affine(m, edges), [[-0.5, -0.5], [CROP_SIZE - 0.5, CROP_SIZE - 0.5]])


def test_crop_rule_recovers_the_competition_box():
    """On an unwarped ctx built by the same rule the tight crop is the central crop.

    (Unless the source box was clipped at the source border: the ctx can't tell; the paper
    pipeline then uses the given box itself.)"""
    rng = np.random.default_rng(4)
    checked = 0
    for _ in range(40):
        size = rng.uniform(15, 280)
        kp = rng.uniform(0, size, (21, 2)) + rng.uniform(10, 310 - size, 2)
        x0, y0, side = crop_box(kp)
        if ((x0, y0) != tuple(np.ceil(kp.min(0)).astype(int) - 8) or max(x0, y0) + side > 319
                or np.floor(kp.max(0)).max() + 8 >= 319):
            continue  # a margin or the square met the source border
        ctx, p, s = context_crop(np.zeros((320, 320, 3), np.uint8), kp)
        checked += 1
        assert np.allclose(crop_matrix(p, s), aug_mod._translate(-CTX_PAD, -CTX_PAD), atol=1e-9)
    assert checked >= 20


@pytest.mark.parametrize("op", ["rotate", "shear", "crop", "hflip", "vflip"])
def test_paper_geometric_ops_follow_pixels(op):
    rng = np.random.default_rng(5)
    pipe = build("paper", only=op)
    for seed in range(4):
        s = float(rng.uniform(0.6, 1.8))
        p = hand(rng, s)
        follows(pipe, p, s, seed, joints=rng.choice(21, 4, replace=False))


@pytest.mark.parametrize("kw", [QUIET, {}])
def test_modern_follows_pixels(kw):
    rng = np.random.default_rng(6)
    kw = dict(kw, cutout_p=0.0)  # a hole over the blob hides it
    pipe = build("modern", rotate=180, vflip=0.5, **kw)
    for seed in range(6):
        s = float(rng.uniform(0.6, 1.8))
        p = hand(rng, s)
        follows(pipe, p, s, seed, joints=rng.choice(21, 4, replace=False), tol=0.5)


@pytest.mark.parametrize("op", ["color_p", "gamma_p", "blur_p", "noise_p"])
def test_modern_pixel_ops_move_no_pixels(op):
    """Each pixel op, always on, leaves blobs where the keypoints say (motion blur included)."""
    rng = np.random.default_rng(13)
    pipe = build("modern", **dict(QUIET, **{op: 1.0}))
    for seed in range(12):
        follows(pipe, hand(rng), 1.0, seed, joints=rng.choice(21, 2, replace=False), tol=0.3)


def test_paper_flips_mirror_the_crop_exactly():
    rng = np.random.default_rng(14)
    ctx = rng.integers(0, 256, (CTX_SIZE, CTX_SIZE, 3), dtype=np.uint8)
    p = hand(rng)
    crop, u = ctx[BOX], p - CTX_PAD
    for op, flipped, q in (("hflip", crop[:, ::-1], [CROP_SIZE - 1 - u[:, 0], u[:, 1]]),
                           ("vflip", crop[::-1], [u[:, 0], CROP_SIZE - 1 - u[:, 1]])):
        img, p_out, s_out = build("paper", only=op)(ctx, p, 1.5, 0)
        assert np.array_equal(img, flipped) and s_out == 1.5
        assert np.allclose(p_out, np.stack(q, axis=1), atol=1e-4)


def test_full_paper_follows_pixels():
    rng = np.random.default_rng(7)
    pipe = build("paper", p_augment=1.0)
    for seed in range(8):
        p = hand(rng)
        follows(pipe, p, 1.0, seed, joints=rng.choice(21, 3, replace=False), tol=0.6)


def test_similarity_scale_is_s_out():
    """Rotation + zoom (+ flip) scale distances by s_out / s."""
    rng = np.random.default_rng(8)
    ctx = np.zeros((CTX_SIZE, CTX_SIZE, 3), np.uint8)
    for name, kw in (("modern", {}), ("paper", {"only": "rotate"}), ("none", {})):
        pipe = build(name, **kw)
        for seed in range(20):
            p, s = hand(rng), float(rng.uniform(0.5, 2))
            _, p_out, s_out = pipe(ctx, p, s, seed)
            ratio = np.linalg.norm(p_out[0] - p_out[1]) / np.linalg.norm(p[0] - p[1])
            assert math.isclose(ratio, s_out / s, rel_tol=1e-4), (name, seed)
            if name == "modern":
                lo, hi = pipe.config["scale"]
                assert lo - 1e-9 <= s_out / s <= hi + 1e-9


def test_modern_keeps_joints_inside_and_varies():
    rng = np.random.default_rng(9)
    pipe = build("modern", rotate=180)
    ctx = np.zeros((CTX_SIZE, CTX_SIZE, 3), np.uint8)
    scales = []
    for seed in range(300):
        p = hand(rng)
        _, p_out, s_out = pipe(ctx, p, 1.0, seed)
        assert ((p_out >= -0.5) & (p_out <= CROP_SIZE - 0.5)).all()
        scales.append(s_out)
    assert min(scales) < 0.9 and max(scales) > 1.1


# ---------------------------------------------------------------- paper statistics

def test_paper_joints_stay_inside_with_rollbacks():
    rng = np.random.default_rng(10)
    pipe = build("paper", p_augment=1.0)
    ctx = np.zeros((CTX_SIZE, CTX_SIZE, 3), np.uint8)
    for seed in range(600):
        if seed % 2:  # joints out to the ctx edges: rotations must roll back now and then, and
            # the rule drops margins at the border, so a joint may sit <1.5 source px outside
            p, slack = rng.uniform(2, CTX_SIZE - 3, (21, 2)).astype(np.float32), 1.5
        else:
            p, slack = hand(rng), 0.0
        _, p_out, s_out = pipe(ctx, p, 1.0, seed)
        tol = 1e-4 + slack * s_out
        assert ((p_out >= -0.5 - tol) & (p_out <= CROP_SIZE - 0.5 + tol)).all(), seed
    assert pipe.stats["rotate"]["rolled_back"] > 0
    assert pipe.stats["rotate"]["applied"] > 0


def test_paper_probabilities():
    rng = np.random.default_rng(11)
    n = 3000
    pipe = build("paper")
    ctx = np.zeros((CTX_SIZE, CTX_SIZE, 3), np.uint8)
    p = hand(rng)
    for seed in range(n):
        pipe(ctx, p, 1.0, seed)
    st = pipe.stats
    assert st["samples"]["applied"] == n and st["crop"]["applied"] == n
    n_aug = st["augmented"]["applied"]
    assert abs(n_aug / n - 0.3) < 4 * math.sqrt(0.21 / n)
    tol = 4 * math.sqrt(0.25 / n_aug)
    for op in PAPER_OPS:
        if op == "crop":
            continue
        tried = st[op]["applied"] + st[op]["rolled_back"]
        assert abs(tried / n_aug - 0.5) < tol, (op, tried, n_aug)
        assert st[op]["rolled_back"] <= 0.02 * n_aug, op  # a hand in its ctx rarely leaves


def test_paper_only_applies_one_op_always():
    rng = np.random.default_rng(12)
    ctx, p = np.zeros((CTX_SIZE, CTX_SIZE, 3), np.uint8), hand(rng)
    for op in PAPER_OPS:
        pipe = build("paper", only=op)
        for seed in range(20):
            pipe(ctx, p, 1.0, seed)
        for other in PAPER_OPS:
            tried = pipe.stats[other]["applied"] + pipe.stats[other]["rolled_back"]
            assert tried == (20 if other in (op, "crop") else 0), (op, other)


# ---------------------------------------------------------------- real frames

def test_real_rhd_frames(shared_reference):
    folder = shared_reference / "rhd_samples"
    meta = json.loads((folder / "test_rhd.json").read_text())
    names = {im["id"]: im["file_name"] for im in meta["images"]}
    pipes = [build(n) for n in NAMES]
    for ann in meta["annotations"]:
        src = cv2.cvtColor(cv2.imread(str(folder / names[ann["image_id"]])), cv2.COLOR_BGR2RGB)
        kp = np.array(ann["keypoints"], np.float64).reshape(21, 3)[:, :2]
        ctx, p, s = context_crop(src, kp)
        assert np.array_equal(build("none")(ctx, p, s, 0)[0], ctx[BOX])
        for pipe in pipes:
            for seed in range(10):
                img, p_out, s_out = pipe(ctx, p, s, seed)
                assert img.shape == (CROP_SIZE, CROP_SIZE, 3) and img.mean() > 5
                assert ((p_out >= -0.5) & (p_out <= CROP_SIZE - 0.5)).all()


def test_no_warnings_on_build():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in NAMES:
            build(name)
