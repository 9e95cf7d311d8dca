"""lib.models: the output / loss / checkpoint contract of every registered model, and that each
one can fit a few crops.

The overfit test trains on 16 simple synthetic crops (a bright dot at every joint on a dark
background, random joint positions). Two models run it in a slimmer variant so the suite stays
a few minutes on a 2-core CPU: `irv2` with ``blocks=(1, 1, 1), width=0.25`` (its default is
~14 GFLOPs per image) and `cpm` with ``channels=48`` (its full-resolution 5x5 trunk makes the
default ~4 s per 16-crop step here); every other model runs its real default architecture. The
shape / loss / autocast tests build the real defaults of every model, irv2 and cpm included.
"""
import time

import numpy as np

import pytest
import torch

from lib.models import create_model, list_models

# expected parameter counts (millions) of the registered defaults: a range per model
PARAMS_M = {
    "cpm": (3.0, 5.0),
    "resnet34": (21.0, 22.5),
    "inception_v3": (21.0, 23.0),
    "irv2": (53.0, 57.0),
    "hm_resnet18": (10.0, 13.0),
    "hm_resnet18_64": (10.0, 13.0),
    "simcc_resnet18_64": (3.0, 4.5),
}
# smaller variants for the overfit test only (see the module docstring)
OVERFIT_KW = {"irv2": {"blocks": (1, 1, 1), "width": 0.25}, "cpm": {"channels": 48}}
OVERFIT_STEPS = 80
NAMES = list_models()


def _batch(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crops (n, 3, 128, 128) in 0..255 with a bright dot at each of 21 random joints."""
    g = torch.Generator().manual_seed(seed)
    kp = 12 + 104 * torch.rand(n, 21, 2, generator=g)
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    d2 = (xx - kp[..., 0, None, None]) ** 2 + (yy - kp[..., 1, None, None]) ** 2  # (n, 21, H, W)
    colour = torch.rand(n, 21, 3, generator=g) * 155 + 100
    img = (torch.exp(-d2 / 8.0).unsqueeze(2) * colour[..., None, None]).amax(dim=1)
    vis = (torch.rand(n, 21, generator=g) > 0.2).float()
    return img.clamp(0, 255), kp, vis


def test_registry_matches_expectations():
    assert set(NAMES) == set(PARAMS_M), "add a parameter range for every registered model"


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        create_model("resnet35")
    for name in NAMES:
        assert name in str(e.value)


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_params_and_loss(name):
    torch.manual_seed(0)
    model = create_model(name)
    assert model.name == name and model.family in ("regression", "heatmap", "simcc")
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    lo, hi = PARAMS_M[name]
    assert lo <= n_params <= hi, f"{name}: {n_params:.2f}M parameters"
    x, kp, vis = _batch(2)
    out = model(x)
    assert out["kp"].shape == (2, 21, 2) and out["kp"].dtype == torch.float32
    assert torch.isfinite(out["kp"]).all()
    if model.family == "heatmap":
        for maps in out["heatmaps"]:
            assert maps.dim() == 4 and maps.shape[:2][0] == 2 and maps.shape[1] in (21, 22)
    loss = model.loss(out, kp, vis)
    assert loss.dim() == 0 and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    model.eval()
    with torch.no_grad():
        assert model(x)["kp"].shape == (2, 21, 2)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_and_bf16_autocast(name):
    torch.manual_seed(0)
    model = create_model(name, **OVERFIT_KW.get(name, {})).to(memory_format=torch.channels_last)
    x, kp, vis = _batch(2)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = model.loss(out, kp, vis)
    assert out["kp"].dtype == torch.float32 and torch.isfinite(out["kp"]).all()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()


def test_checkpoint_round_trip_and_refusals(tmp_path):
    model = create_model("cpm").eval()
    own = tmp_path / "cpm.pt"
    torch.save(model.state_dict(), own)
    x, _, _ = _batch(1)
    again = create_model("cpm", pretrained=own).eval()
    with torch.no_grad():
        assert torch.equal(model(x)["kp"], again(x)["kp"])
    # a training-style checkpoint dict is unwrapped
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, wrapped)
    create_model("cpm", pretrained=wrapped)
    # another architecture
    other = tmp_path / "resnet34.pt"
    torch.save(create_model("resnet34").state_dict(), other)
    with pytest.raises(ValueError, match="resnet34.pt"):
        create_model("cpm", pretrained=other)
    # same family, other settings
    with pytest.raises(ValueError, match="cpm.pt"):
        create_model("cpm", channels=64, pretrained=own)
    # a corrupt file
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(own.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt.pt"):
        create_model("cpm", pretrained=bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        create_model("cpm", pretrained=tmp_path / "missing.pt")


def test_a_checkpoint_of_an_older_layout_loads_through_load_weights(tmp_path):
    """create_model(pretrained=...) and load_weights take a checkpoint of Inception-v3's older layout
    (timm's separate 1x1 heads, before FusedHeads), as load_state_dict does: the model's load hooks map
    it. A file that does not fit is still refused in one line and leaves the model as it was."""
    from lib.models import load_weights

    torch.manual_seed(1)
    old = create_model("inception_v3", fused=False).eval()
    path = tmp_path / "inception_v3_timm_layout.pt"
    torch.save(old.state_dict(), path)
    new = create_model("inception_v3", pretrained=path).eval()
    x, _, _ = _batch(2)
    with torch.no_grad():
        torch.testing.assert_close(new(x)["kp"], old(x)["kp"], rtol=1e-4, atol=1e-4)
    other = tmp_path / "resnet34.pt"
    torch.save(create_model("resnet34").state_dict(), other)
    before = [t.clone() for t in new.state_dict().values()]
    with pytest.raises(ValueError, match="resnet34.pt is not a checkpoint of model 'inception_v3'"):
        load_weights(new, other)
    assert all(torch.equal(a, b) for a, b in zip(before, new.state_dict().values()))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_overfits_16_crops(name):
    """The training loss falls at least 10x within OVERFIT_STEPS full-batch Adam steps.

    For an L1-type loss (pixels, not pixels squared: `hm_resnet18`'s integral loss) the bar is
    sqrt(10)x, the same 10x fall of the squared error.
    """
    torch.manual_seed(0)
    model = create_model(name, **OVERFIT_KW.get(name, {}))
    factor = 10 ** 0.5 if getattr(model, "loss_kind", "") in ("l1", "integral") else 10.0
    x, kp, vis = _batch(16, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = best = None
    start = time.time()
    for step in range(OVERFIT_STEPS):
        loss = model.loss(model(x), kp, vis)
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = loss.item()
        first = value if first is None else first
        best = value if best is None else min(best, value)
        if best <= first / factor:
            break
    assert best <= first / factor, (f"{name}: loss {first:.4g} -> {best:.4g} in {step + 1} steps "
                                    f"({time.time() - start:.1f}s), expected a {factor:.3g}x fall")


def test_simcc_outputs_and_flip_geometry():
    """SimCC logits cover the crop at split_ratio bins per pixel; mirroring the x logits mirrors
    the decoded x in the labels' convention (x -> 127 - x), which flip TTA relies on."""
    torch.manual_seed(0)
    model = create_model("simcc_resnet18_64").eval()
    x, kp, vis = _batch(2)
    with torch.no_grad():
        out = model(x)
    assert out["simcc_x"].shape == out["simcc_y"].shape == (2, 21, 256)
    assert torch.allclose(out["kp"], model.decode(out["simcc_x"], out["simcc_y"]))
    from lib import codecs
    tx, ty, _ = codecs.simcc_targets(kp, (128, 128), 2.0, 4.0)
    lx, ly = torch.log(tx), torch.log(ty)
    assert (model.decode(lx, ly) - kp).abs().max() < 0.1  # round trip through the model's decoder
    mirrored = model.decode(lx.flip(-1), ly)
    assert torch.allclose(mirrored[..., 0], 127 - kp[..., 0], atol=0.1)
    assert torch.allclose(mirrored[..., 1], kp[..., 1], atol=0.1)


def test_simcc_flip_tta_averages_the_mirrored_view():
    """lib.predict's flip TTA on a SimCC model = the mean of the direct view and the mirrored view
    mapped back (the flip pair estimates the crop width: 127 for a scale-1 crop)."""
    from lib import predict

    torch.manual_seed(0)
    model = create_model("simcc_resnet18_64").eval()
    x, _, _ = _batch(3, seed=4)
    crops = x.permute(0, 2, 3, 1).round().to(torch.uint8).numpy()
    xf = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        direct, mirror = model(xf)["kp"], model(xf.flip(-1))["kp"]
    width = (direct[..., 0] + mirror[..., 0]).mean(1, keepdim=True)
    back = mirror.clone()
    back[..., 0] = width - mirror[..., 0]
    got = predict.predict(model, crops, flip=True, device="cpu", amp="off")  # the reference is float32
    assert np.allclose(got, ((direct + back) / 2).numpy(), atol=1e-4)


@pytest.mark.slow
def test_simcc_memorises_16_crops_to_subpixel():
    """The SimCC model reaches a mean joint error below 1 px on its 16 training crops in 80 steps
    (measured: 25 px after 20 steps, 2.0 after 60, 0.76 after 80)."""
    torch.manual_seed(0)
    model = create_model("simcc_resnet18_64")
    x, kp, vis = _batch(16, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(80):
        loss = model.loss(model(x), kp, vis)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        epe = (model(x)["kp"] - kp).norm(dim=-1).mean().item()
    assert epe < 1.0, f"train EPE {epe:.2f} px after 80 steps"


def test_irv2_fused_heads_equal_separate_branches_and_load_old_checkpoints():
    """irv2's Mixed (the branches' leading 1x1 convolutions as one wider conv, split after) is the
    function of separate branches: a Concat of separate branches' weights (the layout before
    2026-11-26) loads into it and gives the same output, in eval and in train mode."""
    from torch import nn

    from lib.models.irv2 import Concat, Mixed, conv

    torch.manual_seed(0)
    old = Concat(conv(16, 8, 1), nn.Sequential(conv(16, 6, 1), conv(6, 4, 3, padding=1), conv(4, 5, 3, padding=1)),
                 nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), conv(16, 3, 1)))
    new = Mixed(16, [8, 6], [None, [conv(6, 4, 3, padding=1), conv(4, 5, 3, padding=1)]],
                (nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), conv(16, 3, 1)),))
    for m in old.modules():  # non-trivial BatchNorm state, so a misplaced channel shows
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.uniform_(-1, 1)
            m.running_var.data.uniform_(0.5, 2)
    new.load_state_dict(old.state_dict())
    x = torch.randn(4, 16, 9, 9)
    for mode in ("eval", "train"):
        getattr(old, mode)(), getattr(new, mode)()
        with torch.no_grad():
            torch.testing.assert_close(new(x), old(x), rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in new.parameters()) == sum(p.numel() for p in old.parameters())


def test_inception_v3_fused_heads_compute_timms_function_and_load_its_checkpoints():
    """inception_v3's blocks run their input-reading 1x1 convolutions as one (FusedHeads): from the
    same seed it is the stock timm layout's model, a checkpoint of that layout (non-trivial BatchNorm
    state) loads and gives the same outputs and gradients, with the same parameters and 19 fewer
    convolutions per pass."""
    from torch import nn

    torch.manual_seed(0)
    stock = create_model("inception_v3", fused=False)
    torch.manual_seed(0)
    fresh = create_model("inception_v3")
    x = torch.rand(2, 3, 128, 128) * 255
    with torch.no_grad():
        torch.testing.assert_close(fresh(x)["kp"], stock(x)["kp"])
    for m in stock.modules():  # so that a misplaced channel shows
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.uniform_(-1, 1)
            m.running_var.data.uniform_(0.5, 2)
    fused = create_model("inception_v3")
    fused.load_state_dict(stock.state_dict())
    for mode in ("eval", "train"):
        getattr(stock, mode)(), getattr(fused, mode)()
        outs = [m(x)["kp"] for m in (stock, fused)]
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
    outs[0].square().mean().backward(), outs[1].square().mean().backward()
    grads = [torch.cat([p.grad.reshape(-1) for p in m.parameters()]).sort().values for m in (stock, fused)]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)
    assert [sum(p.numel() for p in m.parameters()) for m in (stock, fused)] == [21_871_626] * 2
    convs = [sum(isinstance(m, nn.Conv2d) for m in model.modules()) for model in (stock, fused)]
    assert convs == [94, 75]


def test_training_drops_batchnorm_counters_and_keeps_the_state_dicts(tmp_path):
    """drop_batchnorm_counters (lib.train's model): a training step dispatches one op per BatchNorm layer
    fewer (the counter's += 1), the statistics move as before, and the state dicts keep their keys, so
    checkpoints load both ways: a model with counters (every model before, timm's) into one without, its
    EMA and load_weights, and back. create_model keeps the counters (torch's reset_running_stats needs them)."""
    from torch import nn

    from benchmarks.speed import dispatched_ops
    from lib.models import drop_batchnorm_counters, load_weights
    from lib.train import LeanEma

    torch.manual_seed(0)
    old = create_model("resnet34")
    torch.manual_seed(0)
    new = drop_batchnorm_counters(create_model("resnet34"))
    layers = [m for m in new.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(layers) == 36 and all(m.num_batches_tracked is None for m in layers)
    assert all(m.num_batches_tracked is not None for m in old.modules() if isinstance(m, nn.BatchNorm2d))
    assert list(new.state_dict()) == list(old.state_dict())
    x, kp, vis = _batch(2)

    def step(model):
        model.loss(model(x), kp, vis).backward()

    assert dispatched_ops(lambda: step(old)) - dispatched_ops(lambda: step(new)) == len(layers)
    stats = [{k: v for k, v in m.state_dict().items() if k.endswith(("running_mean", "running_var"))} for m in (old, new)]
    assert len(stats[1]) == 72
    torch.testing.assert_close(stats[1], stats[0])
    for m in old.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.num_batches_tracked.fill_(7)
            m.running_mean.data.uniform_(-1, 1)
    torch.save(old.state_dict(), tmp_path / "old.pt")
    loaded = drop_batchnorm_counters(create_model("resnet34"))
    loaded.load_state_dict(old.state_dict())
    ema = LeanEma(drop_batchnorm_counters(create_model("resnet34")), 0.99).module
    ema.load_state_dict(old.state_dict())
    from_file = load_weights(drop_batchnorm_counters(create_model("resnet34")), tmp_path / "old.pt")
    back = create_model("resnet34")
    back.load_state_dict(loaded.state_dict())  # strict: a model with counters takes the dropped one's state
    with torch.no_grad():
        want = old.eval()(x)["kp"]
        for model in (loaded, ema, from_file, back):
            assert torch.equal(model.eval()(x)["kp"], want)
    for m in create_model("resnet34").modules():  # torch's API on the models users get
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()


@pytest.mark.slow  # compiles (~30 s on a CPU)
def test_compile_model_compiles_irv2_block_by_block():
    """compile_model: irv2's repeated blocks compiled in place (the same object, the same state-dict
    keys), giving the eager model's output and gradients."""
    from lib.models import compile_model

    torch.manual_seed(0)
    eager = create_model("irv2", blocks=(2, 1, 1), width=0.25)
    model = create_model("irv2", blocks=(2, 1, 1), width=0.25)
    model.load_state_dict(eager.state_dict())
    keys = list(model.state_dict())
    assert compile_model(model) is model and list(model.state_dict()) == keys
    x = torch.rand(2, 3, 128, 128) * 255
    outs = [m(x)["kp"] for m in (eager, model)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-3, atol=1e-3)
    for out in outs:
        out.sum().backward()
    grads = [torch.cat([p.grad.reshape(-1) for p in m.parameters()]) for m in (eager, model)]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-2, atol=1e-2)
