"""lib.augment's deferred pixel ops: geometry() + draw_pixels() in the worker, apply_pixels() on a batch."""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from albumentations.augmentations.blur import functional as fblur

from lib import data
from lib.augment import PIXEL_LAYOUT as L
from lib.augment import (PIXEL_PARAMS, ModernAugment, apply_pixels, batch_noise_seed, blur_kernels, build,
                         identity_pixels, warp_batch)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
OPS = ("color_p", "gamma_p", "blur_p", "noise_p", "cutout_p")
QUIET = {op: 0.0 for op in OPS}


def only(op: str) -> ModernAugment:
    return ModernAugment(**{**QUIET, op: 1.0})


def image(seed: int, size: int = 128) -> np.ndarray:
    """Smooth colours, sensor-like noise and a few sharp-edged patches, uint8 RGB."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.uniform(0, 255, (8, 8, 3)).astype(np.float32), (size, size),
                     interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 6, img.shape)
    for _ in range(4):
        x0, y0 = rng.integers(0, size - 30, 2)
        img[y0:y0 + 30, x0:x0 + 20] = rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def run(imgs, params, device: str, noise_seed: int | None = None) -> np.ndarray:
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).to(device)
    out = apply_pixels(x, torch.from_numpy(np.stack(params)).to(device), noise_seed)
    assert out.dtype == torch.float32 and out.shape == x.shape
    return out.permute(0, 2, 3, 1).cpu().numpy()


def ctx_sample(seed: int = 0):
    rng = np.random.default_rng(seed)
    ctx = cv2.resize(image(seed, 96), (192, 192))
    return ctx, rng.uniform(60, 130, (21, 2)), 1.0


# ---------------------------------------------------------------- geometry and draws

def test_geometry_matches_call_and_is_deterministic():
    ctx, p, s = ctx_sample()
    aug, plain = build("modern", defer_pixels=True), build("modern", **QUIET)
    assert aug.defer_pixels and "defer_pixels=True" in repr(aug)
    for seed in range(5):
        img, p_out, s_out, v = aug.geometry(ctx, p, s, seed)
        ref = plain(ctx, p, s, seed)
        np.testing.assert_array_equal(img, ref[0])
        np.testing.assert_array_equal(p_out, ref[1])
        assert s_out == ref[2] and v.shape == (PIXEL_PARAMS,) and v.dtype == np.float32
        again = aug.geometry(ctx, p, s, seed)
        np.testing.assert_array_equal(img, again[0])
        np.testing.assert_array_equal(v, again[3])
    a, b = aug.geometry(ctx, p, s, 1), aug.geometry(ctx, p, s, 2)
    assert not np.array_equal(a[3], b[3]) and not np.array_equal(a[0], b[0])


def test_blur_kernels_are_albumentations_kernels():
    """The vectorised kernels equal albumentations' create_gaussian_kernel_1d / create_motion_kernel
    (what A.GaussianBlur and the centred A.MotionBlur use), placed in the middle of 7 x 7."""
    rng = np.random.default_rng(0)
    n = 400
    motion = rng.random(n) < 0.5
    size = np.where(motion, rng.choice([3, 5, 7], n), rng.choice([3, 5], n))
    sigma_angle = np.where(motion, rng.uniform(0, 360, n), rng.uniform(0.5, 3.0, n))
    sigma_angle[:8] = [0, 45, 90, 135, 180, 225, 270, 315]  # rounding ties on the diagonals and axes
    motion[:8] = True
    got = blur_kernels(motion, size, sigma_angle)
    for k in range(n):
        if motion[k]:
            ref = fblur.create_motion_kernel(int(size[k]), float(sigma_angle[k]), 0.0, False, None)
            ref = ref / ref.sum()
        else:
            k1 = fblur.create_gaussian_kernel_1d(float(sigma_angle[k]), int(size[k]))
            ref = np.outer(k1, k1)
        a = (7 - size[k]) // 2
        want = np.zeros((7, 7))
        want[a:a + size[k], a:a + size[k]] = ref
        np.testing.assert_allclose(got[k], want, rtol=1e-6, atol=1e-7, err_msg=f"kernel {k}")


def test_batch_draws_have_the_per_sample_distributions():
    """draw_batch (one generator per batch, vectorised: --cache-on-device) draws what geometry() draws
    per sample: the same flip share, realised magnification and rotation, joints on the image, and
    pixel-op shares; its labels are its matrices applied to the keypoints, its warp their inverse."""
    rng = np.random.default_rng(1)
    n = 3000
    p = rng.uniform(70, 125, (n, 21, 2)) + rng.uniform(-25, 25, (n, 1, 2))  # hands off centre: some redraws
    s = rng.uniform(0.8, 1.6, n)
    aug = build("modern", defer_pixels=True, defer_warp=True)
    ctx = np.zeros((192, 192, 3), np.uint8)
    one = [aug.geometry(ctx, p[i], s[i], seed=i, warp=False) for i in range(n)]
    p1, s1, v1 = np.stack([o[1] for o in one]), np.array([o[2] for o in one]), np.stack([o[3] for o in one])
    p2, s2, v2 = aug.draw_batch(p, s, np.random.default_rng(7))
    assert p2.shape == (n, 21, 2) and p2.dtype == np.float32 and v2.shape == (n, PIXEL_PARAMS) and v2.dtype == np.float32

    def stats(p_out, s_out, v):
        inv = v[:, L["warp"]].reshape(-1, 2, 3).astype(np.float64)
        det = np.linalg.det(inv[:, :, :2])
        angle = np.degrees(np.arctan2(inv[:, 1, 0], inv[:, 0, 0]) * np.sign(det))
        on = [(v[:, L[key].start] > 0).mean() for key in ("color", "gamma_on", "blur", "noise", "cutout")]
        inside = ((p_out >= -0.5) & (p_out <= 127.5)).all((1, 2)).mean()
        return np.array([(det < 0).mean(), np.median(s_out / s), np.abs(angle).mean() / 45, inside, *on])

    a, b = stats(p1, s1, v1), stats(p2, s2, v2)
    assert a[3] == b[3] == 1.0  # max_outside 0: every joint on the image
    np.testing.assert_allclose(b, a, atol=0.04)
    # labels = matrices applied; warp = their inverse (a crop pixel -> its context pixel)
    inv = v2[:, L["warp"]].reshape(-1, 2, 3).astype(np.float64)
    back = np.einsum("bij,bnj->bni", inv[:, :, :2], p2) + inv[:, None, :, 2]
    np.testing.assert_allclose(back, p, atol=1e-3)
    np.testing.assert_allclose(s2, s / np.sqrt(np.abs(np.linalg.det(inv[:, :, :2]))), rtol=1e-5)
    again = aug.draw_batch(p, s, np.random.default_rng(7))
    np.testing.assert_array_equal(again[2], v2)


def test_draw_shares_match_probabilities():
    aug = ModernAugment()
    v = np.stack([aug.draw_pixels(np.random.default_rng(seed)) for seed in range(2000)])
    for op, key in zip(OPS, ("color", "gamma_on", "blur", "noise", "cutout")):
        share = (v[:, L[key].start] > 0).mean()
        assert abs(share - aug.config[op]) <= 0.04, (op, share)
    blur = v[v[:, L["blur"].start] > 0, L["blur"]]
    assert abs((blur[:, 0] == 2).mean() - 0.5) < 0.1  # OneOf: Gaussian or motion
    assert set(blur[blur[:, 0] == 1, 1]) == {3, 5} and set(blur[blur[:, 0] == 2, 1]) == {3, 5, 7}
    np.testing.assert_allclose(v[:, L["kernel"]].sum(1), 1, atol=1e-5)
    seeds = v[:, L["noise"].start + 2]
    assert (seeds == np.round(seeds)).all() and seeds.max() < 2 ** 24


@pytest.mark.parametrize("device", DEVICES)
def test_identity_leaves_images_unchanged(device):
    imgs = [image(i) for i in range(3)]
    out = run(imgs, [identity_pixels(), ModernAugment.identity_pixels(), identity_pixels()], device)
    np.testing.assert_array_equal(out, np.stack(imgs).astype(np.float32))


# ---------------------------------------------------------------- parity with albumentations

def _jitter(v: np.ndarray, keep: int | None) -> np.ndarray:
    """v with only jitter component `keep` (None: all four) left on."""
    w = identity_pixels()
    w[L["color"]] = 1.0
    for i in range(4):
        if keep is None or i == keep:
            w[L["jitter"].start + i] = v[L["jitter"].start + i]
    return w


# (mean abs, max abs) grey levels allowed; measured on 30 seeds: 0/0, .002/1, .001/1, .034/1,
# .17/8 (a one-level step before the HSV round trip moves the hue by a few levels), 0/0, 0/1, 0/0
TOL = {"brightness": (0.01, 1), "contrast": (0.02, 1), "saturation": (0.02, 1), "hue": (0.1, 2),
       "jitter": (0.5, 12), "gamma": (0.01, 1), "blur": (0.02, 1), "cutout": (0.0, 0)}


def _reference(op: str, img: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(params to apply, albumentations' output with the same parameters)."""
    b, c, s, h = (float(f) for f in v[L["jitter"]])
    neutral = dict(brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0, order=[0, 1, 2, 3])
    names = ("brightness", "contrast", "saturation", "hue")
    if op in names:
        i = names.index(op)
        return _jitter(v, i), A.ColorJitter().apply(img.copy(), **{**neutral, op: (b, c, s, h)[i]})
    if op == "jitter":
        return v, A.ColorJitter().apply(img.copy(), brightness=b, contrast=c, saturation=s, hue=h,
                                        order=[0, 1, 2, 3])
    if op == "gamma":
        return v, A.RandomGamma().apply(img, gamma=float(v[L["gamma"]][0]))
    if op == "blur":
        kind, size, sigma = v[L["blur"]]
        if kind == 1:
            k1 = fblur.create_gaussian_kernel_1d(float(sigma), int(size))
            return v, A.GaussianBlur().apply(img, kernel=k1)
        return v, A.MotionBlur().apply(img, kernel=v[L["kernel"]].reshape(7, 7))
    ref = img.copy()
    for hole in v[L["holes"]].reshape(2, 7):
        fill = tuple(float(f) for f in hole[4:])
        ref = A.CoarseDropout(fill=fill).apply(ref, holes=hole[None, :4].astype(int), seed=0)
    return v, ref


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", list(TOL))
def test_parity_with_albumentations(op, device):
    key = {"gamma": "gamma_p", "blur": "blur_p", "cutout": "cutout_p"}.get(op, "color_p")
    aug, imgs, params, refs = only(key), [], [], []
    for seed in range(12):
        img = image(seed)
        w, ref = _reference(op, img, aug.draw_pixels(np.random.default_rng(seed)))
        imgs.append(img), params.append(w), refs.append(ref)
    kinds = {int(w[L["blur"].start]) for w in params}
    assert op != "blur" or kinds == {1, 2}, kinds  # both Gaussian and motion kernels are tried
    d = np.abs(run(imgs, params, device) - np.stack(refs).astype(np.float32))
    mean_tol, max_tol = TOL[op]
    assert d.mean(axis=(1, 2, 3)).max() <= mean_tol and d.max() <= max_tol, (d.mean(), d.max())


@pytest.mark.parametrize("device", DEVICES)
def test_noise_std_and_determinism(device):
    aug = only("noise_p")
    params = [aug.draw_pixels(np.random.default_rng(seed)) for seed in range(6)]
    grey = [np.full((128, 128, 3), 128, np.uint8)] * 6
    out = run(grey, params, device)
    std = (out - 128).std(axis=(1, 2, 3))
    np.testing.assert_allclose(std, [v[L["noise"].start + 1] for v in params], rtol=0.03)
    np.testing.assert_array_equal(out, run(grey, params, device))
    assert not np.array_equal(out[0], out[1])
    # a sample's noise depends on its own seed only, not on the batch around it
    np.testing.assert_array_equal(run(grey[:1], params[:1], device)[0], out[0])


@pytest.mark.parametrize("device", DEVICES)
def test_noise_from_one_generator_per_batch(device):
    """The training loop's path (noise_seed from the CPU batch): the same per-sample std, the same
    output for the same batch, other noise for another seed."""
    aug = only("noise_p")
    params = [aug.draw_pixels(np.random.default_rng(seed)) for seed in range(6)]
    grey = [np.full((128, 128, 3), 128, np.uint8)] * 6
    seed = batch_noise_seed(torch.from_numpy(np.stack(params)))
    out = run(grey, params, device, seed)
    np.testing.assert_allclose((out - 128).std(axis=(1, 2, 3)), [v[L["noise"].start + 1] for v in params], rtol=0.03)
    np.testing.assert_array_equal(out, run(grey, params, device, seed))
    assert not np.array_equal(out, run(grey, params, device, seed + 1))


@pytest.mark.parametrize("device", DEVICES)
def test_warp_on_the_batch_side_matches_cv2(device):
    """warp_batch = cv2.warpAffine (bilinear, border 0, pixel centres) on the matrices the modern
    draws make, to cv2's fixed-point rounding: here mean |diff| <= 0.3 grey levels."""
    aug = ModernAugment()
    diffs = []
    for seed in range(12):
        ctx, kp, s = ctx_sample(seed)
        img, _, _, v = aug.geometry(ctx, kp, s, seed)
        out = warp_batch(torch.from_numpy(ctx).permute(2, 0, 1)[None].to(device),
                         torch.from_numpy(v[L["warp"]])[None].to(device))[0].permute(1, 2, 0).cpu().numpy()
        diffs.append(np.abs(out - img.astype(np.float32)))
    d = np.stack(diffs)
    assert d.mean() <= 0.3 and np.percentile(d, 99.9) <= 4, (d.mean(), np.percentile(d, 99.9), d.max())


@pytest.mark.slow  # compiles (~20-40 s on a CPU)
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_pixel_ops_match_eager(device):
    """--pixel-ops compiled: torch.compile of the same ops, warp included, gives the eager result
    (fused float arithmetic may move a rounded value by one grey level, rarely)."""
    aug = ModernAugment(color_p=1.0, gamma_p=1.0, blur_p=1.0, noise_p=1.0, cutout_p=1.0)
    ctx = [ctx_sample(i)[0] for i in range(4)]
    params = []
    for i, c in enumerate(ctx):
        _, _, _, v = aug.geometry(c, ctx_sample(i)[1], 1.0, i, warp=False)
        params.append(v)
    x = torch.from_numpy(np.stack(ctx)).permute(0, 3, 1, 2).to(device)
    p = torch.from_numpy(np.stack(params)).to(device)
    seed = batch_noise_seed(p.cpu())
    eager, fused = (apply_pixels(x, p, seed, compiled=c).cpu().numpy() for c in (False, True))
    assert fused.shape == (4, 3, 128, 128)
    d = np.abs(fused - eager)
    assert d.max() <= 1 and (d > 0).mean() < 0.01, (d.max(), (d > 0).mean())


@pytest.mark.gpu
def test_no_host_sync_on_cuda():
    aug = ModernAugment(color_p=1.0, gamma_p=1.0, blur_p=1.0, noise_p=1.0, cutout_p=1.0)
    x = torch.from_numpy(np.stack([image(i) for i in range(4)])).permute(0, 3, 1, 2).cuda()
    p = torch.from_numpy(np.stack([aug.draw_pixels(np.random.default_rng(i)) for i in range(4)])).cuda()
    apply_pixels(x, p)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        apply_pixels(x, p)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ---------------------------------------------------------------- HandDataset

def test_hand_dataset_items_carry_pixel_params(tiny_data, tmp_path):
    """Deferred items: the geometry crop (or with defer_warp the 192 context, which warp_batch turns
    into that crop to rounding) plus the parameters, the same labels; the ramp's exact crop stays exact."""
    cache = data.build_cache(data.find_data(tiny_data).training, tmp_path / "cache")
    aug, whole = build("modern", defer_pixels=True), build("modern", defer_pixels=True, defer_warp=True)
    ds, ds_whole = (data.HandDataset(cache, np.arange(8), augment=a, seed=3) for a in (aug, whole))
    i = ds.indices[2]
    img, p, s, v = aug.geometry(np.asarray(cache.ctx[i]), cache.ctx_kp[i], float(cache.scale[i]), 7)
    item, item_whole = ds[(2, 7, True)], ds_whole[(2, 7, True)]
    np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), img)
    np.testing.assert_array_equal(item_whole["image"].permute(1, 2, 0).numpy(), cache.ctx[i])
    for it in (item, item_whole):
        np.testing.assert_array_equal(it["pixel"].numpy(), v)
        np.testing.assert_array_equal(it["kp"].numpy(), data.label_from_pixels(p, s).astype(np.float32))
    warped = warp_batch(item_whole["image"][None], item_whole["pixel"][None, L["warp"]])[0].permute(1, 2, 0).numpy()
    assert np.abs(warped - img).mean() < 0.5 and np.abs(warped - img).max() <= 8
    for d in (ds, ds_whole):  # the augmentation ramp's exact crop
        exact = d[(2, 7, False)]
        np.testing.assert_array_equal(exact["pixel"].numpy(), identity_pixels())
        out = apply_pixels(exact["image"][None], exact["pixel"][None])[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(out, cache.crop[i])
        batch = next(iter(torch.utils.data.DataLoader(d, batch_size=4)))
        assert batch["pixel"].shape == (4, PIXEL_PARAMS) and batch["pixel"].dtype == torch.float32
    with pytest.raises(ValueError, match="defer_warp needs defer_pixels"):
        build("modern", defer_warp=True)
    assert "pixel" not in data.HandDataset(cache, np.arange(8), augment=build("modern"))[0]
    assert "pixel" not in data.HandDataset(cache, np.arange(8))[0]
