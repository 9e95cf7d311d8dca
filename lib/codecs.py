"""Keypoint codecs: heatmap and SimCC targets, and decoding back to crop pixels.

Coordinate convention (the labels' own): the centre of input pixel column i is at x = i, so a
128-pixel crop spans [-0.5, 127.5]. A map with stride s has pixel j centred on input coordinate
``j * s + (s - 1) / 2`` (the convention of ``F.interpolate(..., align_corners=False)`` and of
strided convolutions with "same" padding), so

    input x  ->  map u = (x - (s - 1) / 2) / s        map u  ->  input x = u * s + (s - 1) / 2

Everything works on batched torch tensors (B, K, 2) / (B, K, H, W) on any device, always in
float32 so targets and decoding are exact under autocast.

Decoders:
- ``argmax``: the integer peak (error up to half a map pixel times the stride).
- ``quadratic``: Newton step on the log map around the argmax (the DARK Taylor expansion; exact
  for an unclipped Gaussian).
- ``dark``: DARK (Zhang et al. 2020): Gaussian-modulate the map first, then the quadratic step;
  robust for predicted (noisy, non-Gaussian) maps.
- ``soft_argmax``: the integral (expectation) of the softmax of the map, differentiable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "to_map", "from_map", "gaussian_heatmaps", "background_map", "heatmap_weights",
    "argmax_2d", "quadratic_refine", "gaussian_blur", "decode_heatmaps", "soft_argmax",
    "simcc_targets", "simcc_expectation", "decode_simcc",
]

DECODERS = ("argmax", "quadratic", "dark", "soft_argmax")


def to_map(kp: Tensor, stride: float) -> Tensor:
    """Input (crop-pixel) coordinates -> coordinates on a map of the given stride."""
    return (kp - (stride - 1) / 2) / stride


def from_map(uv: Tensor, stride: float) -> Tensor:
    """Coordinates on a map of the given stride -> input (crop-pixel) coordinates."""
    return uv * stride + (stride - 1) / 2


def heatmap_weights(kp: Tensor, vis: Tensor | None) -> Tensor:
    """Per-joint loss weights (B, K) in float32: the visibility flags, or ones when None."""
    if vis is None:
        return torch.ones(kp.shape[:-1], device=kp.device, dtype=torch.float32)
    return vis.to(device=kp.device, dtype=torch.float32)


def gaussian_heatmaps(kp: Tensor, size: tuple[int, int], stride: float, sigma: float,
                      vis: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Unnormalised Gaussian targets, peak 1, for keypoints (B, K, 2) in crop pixels.

    `size` is the map's (H, W), `sigma` is in map pixels. Returns (maps (B, K, H, W), weights
    (B, K)); a joint with vis == 0 has weight 0 (its map is still drawn, to be masked in the loss).
    """
    h, w = size
    uv = to_map(kp.float(), stride)
    xs = torch.arange(w, device=kp.device, dtype=torch.float32)
    ys = torch.arange(h, device=kp.device, dtype=torch.float32)
    gx = torch.exp(-((xs - uv[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, K, W)
    gy = torch.exp(-((ys - uv[..., 1:2]) ** 2) / (2 * sigma**2))  # (B, K, H)
    maps = gy.unsqueeze(-1) * gx.unsqueeze(-2)
    return maps, heatmap_weights(kp, vis)


def background_map(maps: Tensor) -> Tensor:
    """The CPM background channel (B, 1, H, W): 1 minus the max over the joint maps."""
    return 1.0 - maps.amax(dim=1, keepdim=True)


def argmax_2d(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Integer peak of each map: (coordinates (B, K, 2) as (u, v) floats, peak values (B, K))."""
    b, k, h, w = maps.shape
    vals, idx = maps.reshape(b, k, h * w).max(dim=-1)
    uv = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=-1)
    return uv.float(), vals


def quadratic_refine(maps: Tensor, uv: Tensor, eps: float = 1e-10) -> Tensor:
    """Sub-pixel refinement of integer peaks `uv` (B, K, 2): one Newton step on log(map).

    This is DARK's second-order Taylor expansion; for an exact Gaussian it recovers the centre
    exactly, borders included: the 3x3 stencil is moved inside the map where the peak sits on its
    edge (central differences of a quadratic are exact anywhere). The result stays within one map
    pixel of the argmax; a peak whose Hessian is not negative definite is left as it is.
    """
    maps = maps.float()
    b, k, h, w = maps.shape
    if h < 3 or w < 3:
        return uv
    logm = torch.log(maps.clamp_min(eps)).reshape(b * k, h, w)
    x = uv[..., 0].long().reshape(-1).clamp(1, w - 2)  # stencil centre, inside the map
    y = uv[..., 1].long().reshape(-1).clamp(1, h - 2)
    n = torch.arange(b * k, device=maps.device)

    def at(dy: int, dx: int) -> Tensor:
        return logm[n, y + dy, x + dx]

    c = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = at(0, 1) - 2 * c + at(0, -1)
    dyy = at(1, 0) - 2 * c + at(-1, 0)
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy**2
    ok = (det > 1e-12) & (dxx < 0) & (dyy < 0)
    det = torch.where(ok, det, torch.ones_like(det))
    # Newton step from the stencil centre: offset = -H^{-1} g
    ox = -(dyy * dx - dxy * dy) / det
    oy = -(dxx * dy - dxy * dx) / det
    refined = torch.stack([x.float() + ox, y.float() + oy], dim=-1).reshape(b, k, 2)
    refined = torch.minimum(torch.maximum(refined, uv - 1.0), uv + 1.0)
    return torch.where(ok.reshape(b, k, 1) & torch.isfinite(refined), refined, uv)


def gaussian_blur(maps: Tensor, kernel: int = 11, sigma: float | None = None) -> Tensor:
    """Per-map Gaussian blur that keeps each map's maximum (DARK's distribution modulation).

    Zero padding, as in the DARK reference code: a peak within about `kernel // 2` map pixels of
    the border is pulled slightly inwards, so use a kernel matched to the target sigma.
    """
    maps = maps.float()
    b, k, h, w = maps.shape
    sigma = sigma if sigma is not None else 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = kernel // 2
    t = torch.arange(-r, r + 1, device=maps.device, dtype=torch.float32)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    flat = maps.reshape(b * k, 1, h, w)
    peak = flat.amax(dim=(2, 3), keepdim=True)
    out = F.conv2d(flat, g.view(1, 1, 1, -1), padding=(0, r))
    out = F.conv2d(out, g.view(1, 1, -1, 1), padding=(r, 0))
    out = out * peak / out.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    return out.reshape(b, k, h, w)


def soft_argmax(maps: Tensor, beta: float = 1.0) -> Tensor:
    """Differentiable expected position (B, K, 2) in map pixels under softmax(beta * map)."""
    b, k, h, w = maps.shape
    p = torch.softmax(beta * maps.float().reshape(b, k, h * w), dim=-1).reshape(b, k, h, w)
    xs = torch.arange(w, device=maps.device, dtype=torch.float32)
    ys = torch.arange(h, device=maps.device, dtype=torch.float32)
    return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=-1)


def decode_heatmaps(maps: Tensor, stride: float, method: str = "dark",
                    blur_kernel: int = 11) -> Tensor:
    """Keypoints (B, K, 2) in crop pixels from heatmaps (B, K, H, W) of the given stride.

    `method` is one of argmax, quadratic, dark, soft_argmax (see the module docstring). For
    soft_argmax, pass maps already scaled as logits (the model's own choice of temperature).
    """
    maps = maps.detach().float()
    if method == "soft_argmax":
        uv = soft_argmax(maps)
    else:
        if method not in DECODERS:
            raise ValueError(f"unknown heatmap decoder {method!r}; expected one of {DECODERS}")
        uv, _ = argmax_2d(maps)
        if method == "quadratic":
            uv = quadratic_refine(maps, uv)
        elif method == "dark":
            uv = quadratic_refine(gaussian_blur(maps.clamp_min(0), blur_kernel), uv)
    return from_map(uv, stride)


# --------------------------------------------------------------------------------------- SimCC
def simcc_targets(kp: Tensor, size: tuple[int, int], split_ratio: float, sigma: float,
                  vis: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """SimCC 1-D targets for keypoints (B, K, 2) in crop pixels of an (H, W) input.

    Each axis is split into `split_ratio` bins per input pixel, bin j centred on input coordinate
    (j + 0.5) / split_ratio - 0.5; `sigma` is in bins. Returns (x targets (B, K, W*r), y targets
    (B, K, H*r), weights (B, K)), each target a probability distribution (sums to 1).
    """
    h, w = size
    kp = kp.float()

    def axis(c: Tensor, n: int) -> Tensor:
        bins = torch.arange(int(round(n * split_ratio)), device=kp.device, dtype=torch.float32)
        centre = (c + 0.5) * split_ratio - 0.5
        t = torch.exp(-((bins - centre.unsqueeze(-1)) ** 2) / (2 * sigma**2))
        return t / t.sum(-1, keepdim=True).clamp_min(1e-12)

    return axis(kp[..., 0], w), axis(kp[..., 1], h), heatmap_weights(kp, vis)


def from_bins(b: Tensor, split_ratio: float) -> Tensor:
    """SimCC bin coordinates -> input (crop-pixel) coordinates (bin j is centred on (j + 0.5) / r - 0.5)."""
    return (b + 0.5) / split_ratio - 0.5


def simcc_expectation(logits_x: Tensor, logits_y: Tensor, split_ratio: float) -> Tensor:
    """Differentiable keypoints (B, K, 2) in crop pixels: the expectation of softmax(logits) per
    axis over all bins (integral regression on SimCC logits, e.g. for an L1 loss)."""
    def axis(lg: Tensor) -> Tensor:
        bins = torch.arange(lg.shape[-1], device=lg.device, dtype=torch.float32)
        return (torch.softmax(lg.float(), dim=-1) * bins).sum(-1)

    return from_bins(torch.stack([axis(logits_x), axis(logits_y)], dim=-1), split_ratio)


def decode_simcc(logits_x: Tensor, logits_y: Tensor, split_ratio: float,
                 method: str = "soft_argmax", beta: float = 1.0, window: int | None = None) -> Tensor:
    """Keypoints (B, K, 2) in crop pixels from SimCC logits (B, K, W*r) and (B, K, H*r).

    `method`: argmax (the bin centre), or soft_argmax: the expectation of softmax(beta * logits),
    over the whole axis or, with `window`, only over bins within `window` of the argmax (robust
    to a far-away second mode).
    """
    def axis(lg: Tensor) -> Tensor:
        lg = lg.detach().float()
        idx = lg.argmax(-1)
        if method == "argmax":
            return idx.float()
        if method != "soft_argmax":
            raise ValueError(f"unknown SimCC decoder {method!r}; expected argmax or soft_argmax")
        bins = torch.arange(lg.shape[-1], device=lg.device, dtype=torch.float32)
        z = beta * lg
        if window is not None:
            far = (bins - idx.unsqueeze(-1).float()).abs() > window
            z = z.masked_fill(far, float("-inf"))
        return (torch.softmax(z, dim=-1) * bins).sum(-1)

    return from_bins(torch.stack([axis(logits_x), axis(logits_y)], dim=-1), split_ratio)
