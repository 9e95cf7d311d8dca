"""The training engine: exact resume, the NaN guard, torchrun/DDP on CPU, TTA geometry, bad input."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lib import config, data, io, predict, train
from lib.models import create_model, load_trained
from lib.runs import Run, read_checkpoint

MODEL = "hm_resnet18"  # the fastest registered model keeps these tests in seconds


def small(tiny_data, tmp_path, **kw):
    base = dict(model=MODEL, recipe="modern", profile="smoke", data_dir=str(tiny_data), out_dir=str(tmp_path),
                limit_train=16, batch_size=8, workers=0, seed=3, device="cpu")  # CPU on a GPU box too
    return {**base, **kw}


def weights(run_dir, which="last"):
    return read_checkpoint(Path(run_dir) / f"{which}.pt")


def killed_in_epoch_2(monkeypatch, **kw):
    """Train kw's run until the start of its second epoch, where a simulated kill stops it."""
    real_set_epoch = train.EpochBatches.set_epoch

    def killed_at_epoch_2(self, epoch, skip=0, first_step=0):
        if epoch == 1:
            raise KeyboardInterrupt("simulated kill")
        return real_set_epoch(self, epoch, skip, first_step)

    monkeypatch.setattr(train.EpochBatches, "set_epoch", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train.fit(**kw)
    monkeypatch.setattr(train.EpochBatches, "set_epoch", real_set_epoch)


@pytest.mark.parametrize("ramp, drawn", [(0.0, False), (0.75, False), (0.75, True)])
def test_resume_equals_straight_run(tiny_data, tmp_path, monkeypatch, ramp, drawn):
    """A run killed after its first epoch and started again ends with the same weights (the
    cosine schedule spans the whole run, so the kill is simulated inside the 2-epoch run); with an
    augmentation ramp too (exact crops first, augmented ones taking over); and with the batches
    drawn in the main process (--cache-on-device, lib.data.DrawnBatches)."""
    tmp_path = tmp_path / f"ramp{ramp}{drawn}"
    extra = dict(augment_ramp=ramp, **(dict(pixel_ops="device", warp_on_device=True, cache_on_device=True) if drawn else {}))
    straight = train.fit(**small(tiny_data, tmp_path, run="straight", epochs=2, **extra))
    killed_in_epoch_2(monkeypatch, **small(tiny_data, tmp_path, run="resumed", epochs=2, **extra))
    assert weights(tmp_path / "resumed")["state"]["epoch"] == 1
    resumed = train.fit(**small(tiny_data, tmp_path, run="resumed", epochs=2, **extra))
    a, b = weights(straight), weights(resumed)
    assert a["state"]["step"] == b["state"]["step"] == 4
    for key in ("model", "ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name} differs after resume"
    assert len(Run(resumed).history()) == 2
    # a finished run is not trained again
    before = (Path(resumed) / "last.pt").stat().st_mtime_ns
    train.fit(**small(tiny_data, tmp_path, run="resumed", epochs=2, **extra))
    assert (Path(resumed) / "last.pt").stat().st_mtime_ns == before


def test_paper_recipe_resolves_to_the_report(tiny_data, tmp_path):
    cfg = config.TrainConfig(model="resnet34", recipe="paper", profile="full", data_dir=str(tiny_data)).resolved()
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.schedule, cfg.augment, cfg.sampler, cfg.epochs) == \
        ("adam", 1e-4, 8, "constant", "paper", "window", 55)
    assert config.TrainConfig(model="irv2", recipe="paper", profile="full", data_dir=str(tiny_data)).resolved().epochs == 108
    modern = config.TrainConfig(model=MODEL, recipe="modern", batch_size=128, data_dir=str(tiny_data)).resolved()
    assert modern.lr == pytest.approx(config.RECIPES["modern"]["lr"] * 4)  # scaled with the batch


def test_the_profile_subsets_do_not_change_with_the_seed(tiny_data):
    """--limit-train / --limit-val pick the same hands for every seed, so runs of other seeds compare
    on one validation set and the leaderboard can ensemble them (it groups runs by val_index)."""
    files = data.find_data(tiny_data)
    cache = data.build_cache(files.training)
    subsets = []
    for seed in (0, 1, 7):
        cfg = config.TrainConfig(model=MODEL, profile="full", data_dir=str(tiny_data), limit_train=10, limit_val=4,
                                 seed=seed).resolved()
        subsets.append(train.split_indices(files, cache, cfg))
    full = train.split_indices(files, cache, config.TrainConfig(model=MODEL, profile="full", data_dir=str(tiny_data)).resolved())
    assert len(subsets[0][0]) == 10 and len(subsets[0][1]) == 4 and len(full[1]) > 4
    assert set(subsets[0][1]) < set(full[1]) and set(subsets[0][0]) < set(full[0])
    for tr, va in subsets[1:]:
        assert np.array_equal(tr, subsets[0][0]) and np.array_equal(va, subsets[0][1])


def test_every_training_option_says_what_it_does():
    """`python -m lib.train --help` explains each option (from TrainConfig's field comments, their one
    home), with its default where it has one; a field added without a comment fails here."""
    ap = train.parser()
    options = [a for a in ap._actions if a.dest != "help"]
    assert {a.dest for a in options} == {f.name for f in dataclasses.fields(config.TrainConfig)}
    bare = [a.option_strings[0] for a in options if len(a.help.replace(" (default: %(default)s)", "").strip()) < 8]
    assert not bare, f"options without help (add a comment to the TrainConfig field): {bare}"
    text = " ".join(ap.format_help().split())  # the words, however argparse wraps them
    assert "bf16 on CUDA 8.0+ and on CPUs with bf16 instructions" in text and "hm_resnet18_64" in text and "(default: 50)" in text
    assert train._parse(["--amp", "fp16", "--cuda-graph", "--model-kwargs", '{"input_size": 64}']) == \
        config.TrainConfig(amp="fp16", cuda_graph=True, model_kwargs={"input_size": 64})


def test_nan_guard_keeps_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    run = train.fit(**small(tiny_data, tmp_path, run="nan", epochs=1))
    good = (Path(run) / "last.pt").read_bytes()
    real = train.create_model

    def poisoned(name, **kw):
        m = real(name, **kw)
        loss = m.loss
        m.loss = lambda out, kp, vis: loss(out, kp, vis) * float("nan")
        return m

    monkeypatch.setattr(train, "create_model", poisoned)
    with pytest.raises(FloatingPointError, match=r"loss became nan at epoch 2.*last\.pt"):
        train.fit(**small(tiny_data, tmp_path, run="nan", epochs=2))
    assert (Path(run) / "last.pt").read_bytes() == good


def test_bad_names_and_checkpoints(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="model: expected one of .*resnet34"):
        config.TrainConfig(model="resnet35", data_dir=str(tiny_data)).resolved()
    with pytest.raises(ValueError, match="recipe: expected one of \\['modern', 'paper'\\]"):
        config.TrainConfig(recipe="fast", data_dir=str(tiny_data)).resolved()
    with pytest.raises(FileNotFoundError, match="make data"):
        config.TrainConfig(data_dir=str(tmp_path / "nothing")).resolved()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt: not a readable checkpoint"):
        read_checkpoint(bad)
    run = train.fit(**small(tiny_data, tmp_path, run="other", epochs=1))
    with pytest.raises(ValueError, match=f"a checkpoint of model '{MODEL}', expected 'resnet34'"):
        read_checkpoint(Path(run) / "best.pt", "resnet34")
    # the CLI turns these into one line and exit code 2
    r = subprocess.run([sys.executable, "-m", "lib.train", "--model", "nope", "--data-dir", str(tiny_data)],
                       capture_output=True, text=True, cwd=train.REPO)
    assert r.returncode == 2 and "model: expected one of" in r.stderr


def test_pretrained_run_checkpoint_gives_the_validated_ema_weights(tiny_data, tmp_path):
    """create_model(pretrained=<run>/best.pt) and load_trained(<run>) give the EMA weights that
    validation scored (not the raw ones), and a checkpoint of another registered model is refused
    by name."""
    run = train.fit(**small(tiny_data, tmp_path, run="ema", epochs=2))  # EMA warm-up copies the first 2 steps
    ck = read_checkpoint(Path(run) / "last.pt")  # best.pt may be epoch 1, where EMA = raw
    assert ck["ema"] is not None
    differs = [k for k, t in ck["model"].items() if t.is_floating_point() and not torch.equal(t, ck["ema"][k])]
    assert differs, "EMA and raw weights are equal: the test would not tell them apart"
    for model in (create_model(MODEL, pretrained=Path(run) / "last.pt"), load_trained(run, "last")):
        own = model.state_dict()
        for k, t in ck["ema"].items():
            assert torch.equal(own[k], t), k
    with pytest.raises(ValueError, match=f"a checkpoint of model '{MODEL}', not 'resnet34'"):
        create_model("resnet34", pretrained=Path(run) / "best.pt")


def test_data_dir_auto_finds_each_profiles_synthetic_set(tiny_data, tmp_path, monkeypatch):
    """`--data-dir auto` finds the synthetic set that `lib.pipeline --profile smoke` (or full) renders."""
    import shutil
    monkeypatch.setenv("HANDJOINTS_DATA", str(tmp_path / "data"))
    for profile in ("smoke", "full", "cpu"):
        with pytest.raises(FileNotFoundError, match=f"--only data --profile {profile}"):
            config.TrainConfig(model=MODEL, profile=profile).resolved()
        home = config.synthetic_dir(profile)
        home.mkdir(parents=True)
        for f in ("training.h5", "testing.h5", "solution.csv"):
            shutil.copy(tiny_data / f, home / f)
        io.write_json(home / config.STAMP, config.synthetic_stamp(profile))  # as if rendered: not rendered again
        assert config.TrainConfig(model=MODEL, profile=profile).resolved().data_dir == str(home)
    assert config.synthetic_dir("smoke") == tmp_path / "data" / "synthetic-smoke"
    # the CLI, as a user types it
    r = subprocess.run([sys.executable, "-m", "lib.train", "--model", MODEL, "--profile", "smoke", "--data-dir", "auto",
                        "--out-dir", str(tmp_path / "runs"), "--workers", "0"],
                       capture_output=True, text=True, cwd=train.REPO, env={**os.environ, "HANDJOINTS_DATA": str(tmp_path / "data")})
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_checkpoint(tmp_path / "runs" / f"{MODEL}_modern_smoke" / "last.pt")["config"]["data_dir"] == \
        str(config.synthetic_dir("smoke"))


def test_predict_run_writes_predictions(tiny_data, tmp_path):
    run = train.fit(**small(tiny_data, tmp_path, run="pred", epochs=1))
    res = predict.predict_run(run, rotations=(15,))
    for f in ("val_pred.npy", "test_pred.npy", "submission.csv", "val_metrics.json", "per_joint.csv"):
        assert (Path(run) / f).exists(), f
    assert np.load(Path(run) / "val_pred.npy").shape == (len(np.load(Path(run) / "val_index.npy")), 21, 2)
    assert np.isfinite(res["kaggle_mse"]) and "test_kaggle_mse" in res


class Blob(torch.nn.Module):
    """A 'model' that finds the centroid of the bright pixels, reported for all 21 joints at scale s."""

    def __init__(self, s: float = 1.0):
        super().__init__()
        self.s = s

    def forward(self, x):
        w = (x[:, 0] > 128).float()
        ys, xs = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
        c = torch.stack([(w * xs).sum((1, 2)), (w * ys).sum((1, 2))], -1) / w.sum((1, 2))[:, None]
        return {"kp": (c - (self.s - 1) / 2)[:, None].expand(-1, 21, 2)}


@pytest.mark.parametrize("s", [1.0, 3.0])
def test_tta_geometry_flip_and_rotation(s):
    img = np.zeros((1, 128, 128, 3), np.uint8)
    img[0, 30:35, 80:85] = 255  # centroid (82, 32) in pixel-centre coordinates
    label = np.array([82.0, 32.0]) - (s - 1) / 2
    for flip, rot in [(False, ()), (True, ()), (True, (20.0, -35.0))]:
        out = predict.predict(Blob(s), img, flip=flip, rotations=rot, device="cpu")
        np.testing.assert_allclose(out[0, 0], label, atol=0.15)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_same_weights(tiny_data, tmp_path):
    """DDP keeps parameters identical on every rank (BatchNorm running stats stay rank-local; rank 0 saves)."""
    script = tmp_path / "ddp.py"
    script.write_text(
        "import os, sys, torch\n"
        "from lib import train\n"
        f"run, model = train.train_model(model='{MODEL}', recipe='modern', profile='smoke', data_dir=r'{tiny_data}',"
        f" out_dir=r'{tmp_path}', run='ddp', limit_train=16, batch_size=8, workers=0, epochs=2, resume=False)\n"
        f"torch.save(dict(model.named_parameters()), r'{tmp_path}' + f\"/rank{{os.environ['RANK']}}.pt\")\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(train.REPO)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
                        str(script)], capture_output=True, text=True, env=env, cwd=train.REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (torch.load(tmp_path / f"rank{k}.pt", weights_only=True) for k in (0, 1))
    for name, t in a.items():
        assert torch.equal(t, b[name]), name
    assert read_checkpoint(tmp_path / "ddp" / "last.pt")["state"]["step"] == 4


def test_eval_every_writes_the_learning_curve_and_resume_keeps_it(tiny_data, tmp_path, monkeypatch):
    """--eval-every N validates every N steps inside epochs (curve.csv, also inside last.pt), the
    epoch end adds its own row, validation time is not training time, and a resumed run keeps the
    rows of the epochs before the kill."""
    kw = small(tiny_data, tmp_path, run="curve", epochs=2, batch_size=4, eval_every=3)  # 4 steps per epoch
    killed_in_epoch_2(monkeypatch, **kw)
    run = Run(tmp_path / "curve")
    assert run.curve()["step"].tolist() == [3, 4]
    train.fit(**kw)
    curve = run.curve()
    assert curve["step"].tolist() == [3, 4, 6, 8]  # 3, 6: every 3 steps; 4, 8: epoch ends
    assert curve["images"].tolist() == [12, 16, 24, 32]
    assert (np.diff(curve["elapsed_s"]) > 0).all() and np.isfinite(curve["kaggle_mse"]).all()
    log = run.history()
    assert log["step"].tolist() == [4, 8] and log["images"].tolist() == [16, 32]
    # the epoch-end rows of the curve are the log's validations
    assert np.allclose(curve.set_index("step").loc[[4, 8], "kaggle_mse"], log["kaggle_mse"])
    assert read_checkpoint(run.checkpoint_path("last"))["curve"][-1]["step"] == 8


def test_validation_inside_an_epoch_is_not_training_time(tiny_data, tmp_path, monkeypatch):
    """A slow validation between steps does not eat into the wall-clock budget or elapsed_s. Each
    validation takes 100 s of a clock moved forward (no sleeping), so a busy machine's slower steps
    cannot decide the test: counted, the seven inside the epoch would be 700 s."""
    import time

    real, real_clock, ahead = train.Trainer._validate, time.perf_counter, [0.0]

    def slow(self):
        ahead[0] += 100.0
        return real(self)

    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + ahead[0])
    monkeypatch.setattr(train.Trainer, "_validate", slow)
    run = train.fit(**small(tiny_data, tmp_path, run="paused", epochs=1, batch_size=2, eval_every=1,
                            budget_minutes=5))
    curve, log = Run(run).curve(), Run(run).history()
    assert ahead[0] >= 800  # 16 hands / 2: a validation after each of the 8 steps, and the epoch's
    assert len(curve) == 8 and log["stopped_by"].fillna("").tolist() == [""]  # not stopped by the budget
    assert curve["elapsed_s"].iloc[-1] < 100  # the validations inside the epoch are not counted


def test_an_older_layouts_optimizer_state_is_mapped_onto_the_fused_layers():
    """A run saved with Inception-v3's old layout (timm's separate 1x1 heads) resumes in the fused one:
    its Adam moments are mapped onto the fused layers (train.optimizer_state_across_layouts), so the
    next step moves every weight as the old layout's next step does."""
    torch.manual_seed(0)
    old = create_model("inception_v3", fused=False)
    g = torch.Generator().manual_seed(0)
    x, kp = torch.rand(2, 3, 128, 128, generator=g) * 255, 12 + 104 * torch.rand(2, 21, 2, generator=g)

    def step(model, opt):
        opt.zero_grad()
        model.loss(model(x), kp).backward()
        opt.step()

    def adamw(model):
        return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, fused=True)

    old_opt = adamw(old)
    for _ in range(3):
        step(old, old_opt)
    new = create_model("inception_v3")
    new.load_state_dict(old.state_dict())
    new_opt = adamw(new)
    with pytest.raises(ValueError):  # what resuming met before
        new_opt.load_state_dict(old_opt.state_dict())
    mapped = train.optimizer_state_across_layouts(new, old.state_dict(), old_opt.state_dict())
    new_opt.load_state_dict(mapped)
    before = [p.detach().clone() for p in new.parameters()]
    step(old, old_opt), step(new, new_opt)
    want = create_model("inception_v3")
    want.load_state_dict(old.state_dict())  # the old layout's weights after its 4th step, in the fused layout
    moved = [(q - b).abs().mean().item() for q, b in zip(want.parameters(), before)]
    assert min(moved) > 1e-6  # every layer moved
    # Adam divides by its moments, so where a gradient is ~0 the fused and separate convolutions' rounding
    # shows in single elements: compared per layer, on the mean
    off = [(p - q).abs().mean().item() / m for p, q, m in zip(new.parameters(), want.parameters(), moved)]
    assert max(off) < 0.02, max(off)
    # a state that does not pair up with the checkpoint's parameters is not guessed at
    assert train.optimizer_state_across_layouts(new, create_model("resnet34").state_dict(), old_opt.state_dict()) is None


def test_a_resume_keeps_this_runs_optimizer_setup(tiny_data, tmp_path, monkeypatch):
    """Loading an optimizer state also sets its groups' flags: an eager run's capturable=False would keep
    the same run resumed on one GPU out of its CUDA graph (the capture refused, training on eagerly),
    and a graph run's True would slow an eager one. The resumed run keeps its own; the moments load."""
    kw = small(tiny_data, tmp_path, run="r", epochs=2)
    killed_in_epoch_2(monkeypatch, **kw)
    run = Run(tmp_path / "r")
    ck = run.load_checkpoint("last")
    for g in ck["optimizer"]["param_groups"]:  # as a run trained in a CUDA graph saves it
        assert g["capturable"] is False and g["fused"] is True
        g["capturable"] = True
    run.save_checkpoint("last", ck)
    trainer = train.Trainer(config.TrainConfig(**kw))
    assert trainer._resume() is False and trainer.state["epoch"] == 1
    assert [g["capturable"] for g in trainer.optimizer.param_groups] == [False]
    saved = ck["optimizer"]["state"][0]["exp_avg"]
    assert saved.abs().sum() > 0 and torch.equal(trainer.optimizer.state[next(trainer.model.parameters())]["exp_avg"], saved)
    trainer.close()


def test_a_run_saved_without_an_ema_resumes_with_one_from_its_weights(tiny_data, tmp_path):
    """--ema turned on when resuming a run that had none: the EMA starts from the run's weights (from
    random ones it would be what is validated and saved, its decay near 1 at that step)."""
    kw = small(tiny_data, tmp_path, run="no_ema", epochs=1, ema=0.0)
    train.fit(**kw)
    assert weights(tmp_path / "no_ema")["ema"] is None
    trainer = train.Trainer(config.TrainConfig(**{**kw, "epochs": 2, "ema": 0.999}))
    assert trainer._resume() is False
    for (name, a), b in zip(trainer.ema.module.state_dict().items(), trainer.model.state_dict().values()):
        assert torch.equal(a, b), name
    trainer.close()
