"""Nothing lost, nothing stale: the training run's faults (issue 11), each reproduced on tiny data."""
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lib import config, ensemble, pipeline, predict, train
from lib.models import create_model
from lib.runs import Run, RunInUse, list_runs, read_checkpoint

MODEL = "hm_resnet18"


def small(data_dir, out, **kw):
    return {**dict(model=MODEL, recipe="modern", profile="smoke", data_dir=str(data_dir), out_dir=str(out),
                   limit_train=16, batch_size=8, workers=0, seed=3, device="cpu"), **kw}  # CPU on a GPU box too


def test_a_non_finite_epoch_saves_nothing(tiny_data, tmp_path):
    """--lr 1e6 on a good run: BatchNorm statistics and validation go non-finite; last.pt, best.pt
    and config.json stay the good ones, and the error names the last good checkpoint."""
    run = Run(train.fit(**small(tiny_data, tmp_path, run="r", epochs=1)))
    good = {p.name: p.read_bytes() for p in (run.checkpoint_path("last"), run.checkpoint_path("best"), run.config_path)}
    with pytest.raises(FloatingPointError, match=r"not finite after epoch 2: .*nothing saved.*last\.pt"):
        train.fit(**small(tiny_data, tmp_path, run="r", epochs=2, lr=1e6))
    assert {name: (run.dir / name).read_bytes() for name in good} == good


def test_checkpoint_and_log_agree_after_a_kill_between_them(tiny_data, tmp_path, monkeypatch):
    real = Run.write_history

    def killed_in_epoch_2(self, rows):
        if len(rows) == 2:
            raise KeyboardInterrupt("killed after last.pt, before log.csv")
        return real(self, rows)

    monkeypatch.setattr(Run, "write_history", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train.fit(**small(tiny_data, tmp_path, run="k", epochs=3))
    monkeypatch.setattr(Run, "write_history", real)
    run = Run(tmp_path / "k")
    assert read_checkpoint(run.checkpoint_path("last"))["state"]["epoch"] == 2 and len(run.history()) == 1
    train.fit(**small(tiny_data, tmp_path, run="k", epochs=3))
    assert run.history()["epoch"].tolist() == [1, 2, 3]


def test_a_second_process_cannot_take_a_busy_run_and_a_dead_ones_lock_is_taken_over(tiny_data, tmp_path, capsys):
    run = Run(tmp_path / "busy")
    with run.lock("training"):
        with pytest.raises(RunInUse, match=rf"busy: in use by process {os.getpid()} .*training.*another run name"):
            train.fit(**small(tiny_data, tmp_path, run="busy", epochs=1))
    assert not run.checkpoint_path("last").exists()
    # a process holding the lock is killed: the next start takes the run over
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom lib.runs import Run\n"
                               f"with Run({str(run.dir)!r}).lock('training'):\n    print('held', flush=True)\n"
                               "    time.sleep(60)"], stdout=subprocess.PIPE, text=True, cwd=train.REPO)
    assert holder.stdout.readline().strip() == "held"
    (run.dir / ".last.pt.x1y2.tmp.pt").write_bytes(b"half a checkpoint")  # its kill interrupted a write
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    train.fit(**small(tiny_data, tmp_path, run="busy", epochs=1))
    assert f"taking over from process {holder.pid}" in capsys.readouterr().out
    assert run.checkpoint_path("last").exists() and not list(run.dir.glob(".*.tmp*"))


def test_a_fresh_start_removes_the_old_runs_files_and_stale_predictions_are_not_used(tiny_data, tmp_path, monkeypatch,
                                                                                    capsys):
    run = Run(train.fit(**small(tiny_data, tmp_path, run="s", epochs=1)))
    predict.predict_run(run)
    assert run.stale_predictions() is None and [r.name for r in ensemble.load_runs(tmp_path)] == ["s"]
    # trained further: best.pt is newer than the predictions
    os.utime(run.checkpoint_path("best"), ns=(time.time_ns(), time.time_ns() + 10**9))
    assert "another best.pt" in run.stale_predictions()
    assert ensemble.load_runs(tmp_path) == [] and "leaving out s: its predictions are stale" in capsys.readouterr().out
    # restarted from scratch and killed in its first epoch: nothing of the old run is left
    monkeypatch.setattr(train.Trainer, "_step", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        train.fit(**small(tiny_data, tmp_path, run="s", epochs=1, resume=False))
    assert [p.name for p in run.artefacts() if p.exists()] == []
    assert ensemble.load_runs(tmp_path) == []


def test_another_models_checkpoint_in_a_run_is_refused(tiny_data, tmp_path):
    run = Run(train.fit(**small(tiny_data, tmp_path, run="m", epochs=1)))
    run.save_checkpoint("best", {"model": create_model("cpm").state_dict(), "ema": None,
                                 "config": {"model": "cpm", "model_kwargs": {}}})
    with pytest.raises(ValueError, match=f"best.pt: a checkpoint of model 'cpm', expected '{MODEL}'"):
        predict.predict_run(run)
    assert not run.metrics_path.exists()


def test_a_run_whose_optimizer_state_no_longer_fits_the_model_is_refused_in_one_line(tiny_data, tmp_path):
    """Resuming a run whose optimizer state does not pair up with the model's parameters, not even
    through the model's loading hooks (a layout change they map is resumed: test_train), says so,
    naming the checkpoint and the way out;
    such a run that has finished is found finished as before (make run goes on to its predictions)."""
    run = Run(train.fit(**small(tiny_data, tmp_path, run="o", epochs=1)))
    ck = read_checkpoint(run.checkpoint_path("last"))
    ck["optimizer"]["param_groups"][0]["params"].pop()
    run.save_checkpoint("last", ck)
    assert train.fit(**small(tiny_data, tmp_path, run="o", epochs=1)) == run.dir
    with pytest.raises(ValueError, match=r"last.pt: its optimizer state does not fit hm_resnet18's parameters of now "
                                         r"\(.*\); .* use --no-resume or another run name"):
        train.fit(**small(tiny_data, tmp_path, run="o", epochs=2))


def test_other_hands_in_the_data_are_refused_then_set_aside_and_a_relative_data_dir_works_from_anywhere(
        tiny_data, tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "d"
    shutil.copytree(tiny_data, data_dir, ignore=shutil.ignore_patterns("cache", "split.json"))
    monkeypatch.chdir(tmp_path)
    run = Run(train.fit(**small("d", tmp_path / "runs", run="h", epochs=1)))
    assert run.config()["data_dir"] == str(data_dir.resolve())
    old_labels = run.config()["labels"]
    monkeypatch.chdir("/")
    predict.predict_run(run)  # the run's data is found from another directory
    with h5py.File(data_dir / "training.h5", "r+") as f:  # same size, hands in another order
        for key in ("img", "kp_2D", "vis_2D"):
            f["train"][key][...] = f["train"][key][...][::-1]
    with pytest.raises(ValueError, match="trained on other hands than .*training.h5 holds now"):
        predict.predict_run(run)
    with pytest.raises(ValueError, match="last.pt: trained on other hands"):
        train.fit(**small(data_dir, tmp_path / "runs", run="h", epochs=2))
    # make run sets such runs aside whole (a new renderer re-rendered the data) and trains them again
    old = {p.name: p.read_bytes() for p in run.dir.iterdir() if p.is_file() and p.name != ".lock"}
    other = Run(train.fit(**small(tiny_data, tmp_path / "runs", run="o", epochs=1)))  # other data: stays
    pipeline.set_aside_stale_runs(data_dir, tmp_path / "runs")
    kept = tmp_path / "runs" / "stale" / f"h-{old_labels.replace(':', '-')}"
    assert f"h: trained on other hands than {data_dir} holds now; kept as {kept}" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in kept.iterdir() if p.name in old} == old and not run.dir.exists()
    assert [r.name for r in list_runs(tmp_path / "runs")] == ["o"] and other.has_checkpoint("last")
    train.fit(**small(data_dir, tmp_path / "runs", run="h", epochs=1))  # a fresh start on the data of now
    assert run.config()["labels"] != old_labels
    pipeline.set_aside_stale_runs(data_dir, tmp_path / "runs")  # nothing stale now
    assert sorted(p.name for p in (tmp_path / "runs" / "stale").iterdir()) == [kept.name]


def test_the_wall_clock_budget_holds_when_steps_slow_down(tiny_data, tmp_path, monkeypatch):
    """2 steps per epoch (the old calibration needed 7 in one epoch), and steps that get 10x slower
    after the calibration, on a simulated clock (0.1 s per step for 8 steps, then 1 s): the run stops
    at the first step past its 3 s budget, not after the ~30 steps the first steps' pace promised."""
    clock = {"t": 0.0, "steps": 0}
    fake_time = type("FakeTime", (), {"perf_counter": staticmethod(lambda: clock["t"])})
    monkeypatch.setattr(train, "time", fake_time)
    real = train.Trainer._step

    def timed(self, net, batch, lr):
        clock["steps"] += 1
        clock["t"] += 0.1 if clock["steps"] <= 8 else 1.0
        return real(self, net, batch, lr)

    monkeypatch.setattr(train.Trainer, "_step", timed)
    run = Run(train.fit(**small(tiny_data, tmp_path, run="b", epochs=1000, budget_minutes=0.05)))
    log = run.history()
    assert log["stopped_by"].iloc[-1] == "budget" and (log["stopped_by"].fillna("").iloc[:-1] == "").all()
    assert log["step"].iloc[-1] == 11 and log["elapsed_s"].iloc[-1] == pytest.approx(3.8)
    assert read_checkpoint(run.checkpoint_path("last"))["state"]["finished"]


@pytest.mark.parametrize("option, value, message", [
    ("batch_size", 0, "--batch-size: expected an integer >= 1, found 0"),
    ("epochs", -1, "--epochs: expected an integer >= 1"),
    ("schedule", "linear", "--schedule: expected one of \\['constant', 'cosine'\\], found 'linear'"),
    ("amp", "fp32", "amp: expected one of"),
    ("device", "tpu", "device: expected auto, cpu, cuda or cuda:N, found 'tpu'"),
    ("model_kwargs", {"depth": 3}, "--model-kwargs .*unknown \\['depth'\\]"),
    ("model_kwargs", [1], "--model-kwargs: expected a JSON object"),
    ("workers", -1, "--workers: expected an integer >= 0"),
    ("lr", float("nan"), "--lr: expected a number > 0"),
    ("ema", 1.0, "--ema: expected a decay in \\[0, 1\\)"),
    ("val_fraction", 1.5, "--val-fraction: expected a number in \\(0, 1\\)"),
    ("budget_minutes", 0, "--budget-minutes: expected minutes > 0"),
    ("run", "../elsewhere", "--run: expected a name"),
    ("eval_every", -5, "--eval-every: expected an integer >= 0"),
    ("augment_ramp", 1.5, "--augment-ramp: expected a share of the run in \\[0, 1\\]"),
])
def test_bad_training_options_are_one_clear_line(tiny_data, option, value, message):
    with pytest.raises(ValueError, match=message):
        config.TrainConfig(model="resnet34", data_dir=str(tiny_data), **{option: value}).resolved()


def test_the_saved_split_follows_val_fraction(tiny_data, tmp_path):
    from lib import data

    cache = data.build_cache(tiny_data / "training.h5")
    ids = cache.image_ids
    a = data.load_or_make_split(tmp_path, ids, "src", val_fraction=0.1)
    b = data.load_or_make_split(tmp_path, ids, "src", val_fraction=0.5)
    assert b.sum() > a.sum()
    assert np.array_equal(data.load_or_make_split(tmp_path, ids, "src", val_fraction=0.5), b)  # then kept


def test_two_processes_building_one_crop_cache(tiny_data, tmp_path):
    shutil.copytree(tiny_data, tmp_path / "d", ignore=shutil.ignore_patterns("cache", "split.json"))
    code = ("from lib import data\n"
            f"c = data.build_cache({str(tmp_path / 'd' / 'training.h5')!r})\n"
            "print(len(c), int(c.crop[len(c) - 1].sum()))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=train.REPO) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(f"rc {p.returncode}: ...{o[1][-600:]}"
                                                            for p, o in zip(procs, outs))
    assert outs[0][0] == outs[1][0]
    assert [p.name for p in (tmp_path / "d" / "cache").iterdir()] and not list((tmp_path / "d" / "cache").glob(".*"))


def test_publishing_a_crop_cache_never_removes_a_complete_one(tiny_data, tmp_path, monkeypatch):
    """The loser of two builds of one cache uses the winner's folder as it is (it may be reading it
    already); a partial folder left by an interrupted removal is replaced."""
    from lib import data

    built = data.build_cache(tiny_data / "training.h5", cache_root=tmp_path / "a").dir
    final, tmp = tmp_path / "cache" / built.name, tmp_path / "cache" / f".{built.name}.1.tmp"
    shutil.copytree(built, final)
    (final / "winner").write_text("")
    shutil.copytree(built, tmp)
    cache = data._publish_cache(tmp, final)
    assert (final / "winner").exists() and not tmp.exists() and len(cache) == len(data.CropCache(built))
    shutil.rmtree(final)
    final.mkdir()
    (final / "crop.u8").write_bytes(b"partial")  # no info.json: not a finished cache
    shutil.copytree(built, tmp)
    cache = data._publish_cache(tmp, final)
    assert not tmp.exists() and (final / "info.json").exists() and len(cache) == len(data.CropCache(built))
    # the race: another process publishes between this one's check and its rename
    shutil.rmtree(final)
    shutil.copytree(built, tmp)
    rename = os.rename

    def other_process_first(a, b):
        if not Path(b).exists():
            shutil.copytree(built, b)
            (Path(b) / "winner").write_text("")
        rename(a, b)

    monkeypatch.setattr(data.os, "rename", other_process_first)
    cache = data._publish_cache(tmp, final)
    assert (final / "winner").exists() and not tmp.exists() and len(cache) == len(data.CropCache(built))


def test_predicting_a_missing_run_creates_nothing(tmp_path, capsys):
    assert predict.main(["--run", str(tmp_path / "runs" / "nope")]) == 2
    assert "nope/config.json: no such file" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_stale_run_in_use_is_not_set_aside(tmp_path):
    """Runs of other hands are moved to runs/stale/ whole, unless another process holds them; runs of
    other data directories, of the same hands, or with an unreadable config stay."""
    import json
    from lib.runs import set_aside_stale
    runs, data_dir = tmp_path / "runs", tmp_path / "d"
    for name, d, labels in [("a", data_dir, "1:x"), ("b", data_dir, "1:x"), ("c", data_dir, "2:now"),
                            ("e", tmp_path / "other", "1:x")]:
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text(json.dumps({"data_dir": str(d), "labels": labels}))
    (runs / "f").mkdir()
    (runs / "f" / "config.json").write_text("{not json")
    with Run(runs / "b").lock("training"):
        moved = set_aside_stale(data_dir, "2:now", runs)
    assert [(r.name, p) for r, p in moved] == [("a", runs / "stale" / "a-1-x")]
    assert (runs / "stale" / "a-1-x" / "config.json").exists()
    assert [r.name for r in list_runs(runs)] == ["b", "c", "e", "f"]


def test_a_failed_write_of_the_last_epochs_files_still_stops_the_writer_and_the_workers(tiny_data, tmp_path,
                                                                                          monkeypatch):
    """The last epoch's files fail to write (a full disk): fit() raises that error, and its writer thread
    and DataLoader workers are still stopped (they would otherwise live on: 5 s of join per worker at exit)."""
    closed = []
    real_close = train.Trainer.close

    def close(self):
        closed.append(self)
        real_close(self)

    def full(self, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train.Trainer, "close", close)
    monkeypatch.setattr(Run, "write_history", full)
    with pytest.raises(OSError, match="No space left on device"):
        train.fit(**small(tiny_data, tmp_path, run="full", epochs=1, workers=1))
    assert len(closed) == 1 and closed[0].writer._shutdown
    assert getattr(closed[0].train_loader, "_iterator", None) is None


def test_a_failed_write_stops_the_run_at_the_next_loss_check_and_a_nan_names_the_checkpoint_being_written(
        tiny_data, tmp_path):
    """An epoch's files are written behind the next epoch: a failed write stops the run at the next loss
    check (not an epoch of training later), and a NaN found while a write is in flight names the
    checkpoint that write makes (not "none")."""
    trainer = train.Trainer(config.TrainConfig(**small(tiny_data, tmp_path, run="w", epochs=2)))
    failed = concurrent.futures.Future()
    failed.set_exception(OSError(28, "No space left on device"))
    trainer.pending = failed
    with pytest.raises(OSError, match="No space left on device"):
        trainer._read_loss()
    assert trainer.pending is None

    trainer.run.dir.mkdir(parents=True, exist_ok=True)
    writing = concurrent.futures.Future()

    def write():  # the epoch-1 checkpoint, landing after the NaN was found
        time.sleep(0.3)
        trainer.run.checkpoint_path("last").write_bytes(b"epoch 1")
        writing.set_result(None)

    threading.Thread(target=write).start()
    trainer.pending = writing
    trainer.meter.add(torch.tensor(float("nan")), 8, 5)
    with pytest.raises(FloatingPointError, match=r"loss became nan at epoch 1 step 5.*checkpoint is \S*last\.pt;"):
        trainer._read_loss()
    trainer.close()


def test_the_pipeline_gives_its_notebooks_absolute_folders(tiny_data, tmp_path, monkeypatch):
    """The notebooks run in notebooks/: a relative --data-dir or HANDJOINTS_* folder (taken from where
    the command was started) reaches them absolute, so they read and write where it points."""
    from lib import paths

    calls = []
    monkeypatch.setattr(pipeline, "run_notebook", lambda name, params: calls.append((name, params, dict(os.environ))))
    monkeypatch.chdir(tiny_data.parent)
    monkeypatch.setenv("HANDJOINTS_OUTPUTS", "out")
    monkeypatch.setenv("HANDJOINTS_SUBMISSIONS", "subs")
    pipeline.run(profile="smoke", only=["01_eda"], data_dir=tiny_data.name)
    [(name, params, env)] = calls
    assert params["data_dir"] == str(tiny_data) and name == "01_eda"
    assert env["HANDJOINTS_OUTPUTS"] == str(tiny_data.parent / "out") == str(paths.outputs())
    assert env["HANDJOINTS_SUBMISSIONS"] == str(tiny_data.parent / "subs")


def test_the_ensemble_leaves_out_runs_whose_data_changed_since(tiny_data, tmp_path, monkeypatch, capsys):
    """The data folder rendered again (same size, other hands): `python -m lib.ensemble` leaves out the
    runs trained before it, with a line, instead of scoring their predictions against the new hands."""
    monkeypatch.setenv("HANDJOINTS_OUTPUTS", str(tmp_path / "out"))
    data_dir, runs = tmp_path / "d", tmp_path / "runs"
    shutil.copytree(tiny_data, data_dir, ignore=shutil.ignore_patterns("cache", "split.json"))
    for name in ("a", "b"):
        predict.predict_run(Run(train.fit(**small(data_dir, runs, run=name, epochs=1))))
    board, _ = ensemble.ensemble_and_submit("e", data_dir, runs, tmp_path / "subs")
    assert {"a", "b", "ensemble_fitted"} <= set(board["name"])
    # the table of another runs folder goes beside it, not over outputs/leaderboard.csv
    assert (tmp_path / "leaderboard.csv").exists() and not (tmp_path / "out" / "leaderboard.csv").exists()
    with h5py.File(data_dir / "training.h5", "r+") as f:  # same size, the hands in another order
        for key in ("img", "kp_2D", "vis_2D"):
            f["train"][key][...] = f["train"][key][...][::-1]
    predict.predict_run(Run(train.fit(**small(data_dir, runs, run="b", epochs=1, resume=False))))
    capsys.readouterr()
    board, path = ensemble.ensemble_and_submit("e", data_dir, runs, tmp_path / "subs")
    assert f"ensemble: leaving out a: trained on other hands than {data_dir.resolve()} holds now" in capsys.readouterr().out
    assert "a" not in set(board["name"]) and "b" in set(board["name"]) and "ensemble_fitted" not in set(board["name"])
