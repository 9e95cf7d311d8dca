"""lib.codecs: heatmap / SimCC targets and decoders round-trip keypoints in crop pixels."""
import pytest
import torch

from lib import codecs

# (stride, map side, sigma in map pixels): the modern head, CPM, and two others
CONFIGS = [(4, 32, 2.0), (8, 16, 1.0), (2, 64, 2.0), (1, 128, 3.0)]


def _random_kp(n: int, lo: float, hi: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, 21, 2, generator=g)


def test_coordinate_convention():
    # map pixel j covers input coordinate j * s + (s - 1) / 2
    assert codecs.from_map(torch.tensor([0.0]), 4).item() == 1.5
    assert codecs.from_map(torch.tensor([0.0]), 8).item() == 3.5
    kp = _random_kp(4, -0.5, 127.5)
    for s in (1, 2, 4, 8):
        assert torch.allclose(codecs.from_map(codecs.to_map(kp, s), s), kp, atol=1e-5)


def test_gaussian_peak_and_weights():
    kp = torch.tensor([[[13.5, 41.5]] * 21])  # exactly the centre of map pixel (3, 10) at stride 4
    vis = torch.zeros(1, 21)
    vis[0, 0] = 1
    maps, w = codecs.gaussian_heatmaps(kp, (32, 32), 4, 2.0, vis)
    assert maps.shape == (1, 21, 32, 32)
    assert maps[0, 0, 10, 3].item() == pytest.approx(1.0)
    assert maps[0, 0].argmax().item() == 10 * 32 + 3
    assert w.tolist()[0][:2] == [1.0, 0.0]
    bg = codecs.background_map(maps)
    assert bg.shape == (1, 1, 32, 32) and bg.min().item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("stride,side,sigma", CONFIGS)
def test_subpixel_round_trip_everywhere(stride, side, sigma):
    """Quadratic (log-Taylor) decoding recovers any sub-pixel position, borders included."""
    kp = _random_kp(64, -0.5, 127.5, seed=stride)
    maps, _ = codecs.gaussian_heatmaps(kp, (side, side), stride, sigma)
    dec = codecs.decode_heatmaps(maps, stride, "quadratic")
    assert (dec - kp).abs().max().item() < 0.1


@pytest.mark.parametrize("stride,side,sigma", CONFIGS)
def test_dark_and_soft_argmax_round_trip_inside(stride, side, sigma):
    """DARK (blur + Taylor) and soft-argmax are exact for peaks away from the map border."""
    margin = (5 + 3 * sigma) * stride  # blur radius + the Gaussian's support, in input pixels
    kp = _random_kp(64, margin, 127 - margin, seed=10 + stride)
    maps, _ = codecs.gaussian_heatmaps(kp, (side, side), stride, sigma)
    assert (codecs.decode_heatmaps(maps, stride, "dark") - kp).abs().max().item() < 0.1
    logits = torch.log(maps.clamp_min(1e-30))  # softmax(log g) = g / sum(g)
    assert (codecs.decode_heatmaps(logits, stride, "soft_argmax") - kp).abs().max().item() < 0.1


@pytest.mark.parametrize("stride,side,sigma", CONFIGS)
def test_argmax_error_bounded_by_half_a_map_pixel(stride, side, sigma):
    kp = _random_kp(64, -0.5, 127.5, seed=20 + stride)
    maps, _ = codecs.gaussian_heatmaps(kp, (side, side), stride, sigma)
    err = (codecs.decode_heatmaps(maps, stride, "argmax") - kp).abs().max().item()
    assert err <= 0.5 * stride + 1e-4


def test_quadratic_refine_on_noisy_maps_is_bounded():
    """A noisy map never moves the estimate more than one map pixel from the argmax."""
    kp = _random_kp(16, 10, 117)
    maps, _ = codecs.gaussian_heatmaps(kp, (32, 32), 4, 2.0)
    noisy = maps + 0.05 * torch.randn(maps.shape, generator=torch.Generator().manual_seed(0))
    uv, _ = codecs.argmax_2d(noisy)
    for method in ("quadratic", "dark"):
        ref = codecs.to_map(codecs.decode_heatmaps(noisy, 4, method), 4)
        assert (ref - uv).abs().max().item() <= 1.0 + 1e-5
        assert torch.isfinite(ref).all()


def test_decoding_is_float32_under_bf16_maps():
    kp = _random_kp(2, 20, 100)
    maps, _ = codecs.gaussian_heatmaps(kp, (32, 32), 4, 2.0)
    dec = codecs.decode_heatmaps(maps.bfloat16(), 4, "dark")
    assert dec.dtype == torch.float32
    assert (dec - kp).abs().max().item() < 1.0


def test_unknown_decoder():
    with pytest.raises(ValueError, match="argmax"):
        codecs.decode_heatmaps(torch.zeros(1, 21, 8, 8), 4, "nope")


@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_simcc_round_trip(ratio):
    kp = _random_kp(32, 5, 122, seed=3)
    tx, ty, w = codecs.simcc_targets(kp, (128, 128), ratio, sigma=2.0 * ratio)
    assert tx.shape == (32, 21, int(128 * ratio)) and ty.shape == tx.shape and w.shape == (32, 21)
    assert torch.allclose(tx.sum(-1), torch.ones(32, 21))
    soft = codecs.decode_simcc(torch.log(tx), torch.log(ty), ratio, "soft_argmax")
    assert (soft - kp).abs().max().item() < 0.1
    windowed = codecs.decode_simcc(torch.log(tx), torch.log(ty), ratio, window=int(8 * ratio))
    assert (windowed - kp).abs().max().item() < 0.1
    hard = codecs.decode_simcc(torch.log(tx), torch.log(ty), ratio, "argmax")
    assert (hard - kp).abs().max().item() <= 0.5 / ratio + 1e-4
