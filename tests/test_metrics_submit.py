"""Metrics against hand-computed values; submission files written, validated, scored, refused."""
import numpy as np
import pandas as pd
import pytest

from lib import joints, metrics
from lib.data import COLUMNS
from lib.submit import SubmissionError, read_submission, score, validate_submission, write_submission


def test_joint_order_and_conversion():
    assert joints.NAMES[0] == "wrist" and joints.NAMES[1] == "thumb_tip" and joints.NAMES[8] == "index_mcp"
    assert joints.NAMES[17] == "little_tip" and len(joints.EDGES) == 20
    assert joints.TIPS.tolist() == [1, 5, 9, 13, 17]
    base_tip = np.arange(21)[:, None] * np.ones((1, 2))  # theirs: wrist, thumb base..tip, ...
    ours = joints.from_base_tip(base_tip)
    assert ours[1, 0] == 4 and ours[4, 0] == 1 and ours[5, 0] == 8  # thumb tip is their 4th
    np.testing.assert_array_equal(joints.to_base_tip(ours), base_tip)
    assert len(set(joints.FINGER_COLORS)) == 5


def test_metrics_hand_computed():
    gt = np.zeros((2, 21, 2))
    pred = gt.copy()
    pred[0, 0] = (3, 4)      # distance 5, squared errors 9 + 16
    pred[1, 5] = (1, 1)      # distance sqrt 2, squared errors 1 + 1
    assert metrics.kaggle_mse(pred, gt) == pytest.approx(27 / 84)
    assert metrics.epe(pred, gt) == pytest.approx((5 + np.sqrt(2)) / 42)
    vis = np.zeros((2, 21), bool)
    vis[0, 0] = vis[1, 5] = True
    assert metrics.epe(pred, gt, vis) == pytest.approx((5 + np.sqrt(2)) / 2)
    assert metrics.acc_2px(pred, gt) == pytest.approx(41 / 42)          # 5 px fails, sqrt 2 passes
    assert metrics.acc_coord_sq2(pred, gt) == pytest.approx(82 / 84)    # 9 and 16 fail, 1 and 1 pass
    # PCK averages per joint: joint 0 is 50 % within 2 px, every other joint 100 %
    assert metrics.pck(pred, gt, 2.0) == pytest.approx((0.5 + 20) / 21)
    curve = metrics.pck_curve(pred, gt)
    assert curve[0] == 0.0  # threshold 0: nothing is strictly closer
    assert len(curve) == 20 and metrics.auc(pred, gt) == pytest.approx(curve.mean())
    table = metrics.per_joint(pred, gt, vis)
    assert table.loc["wrist", "mse"] == pytest.approx(25 / 4) and table.loc["index_tip", "epe"] == pytest.approx(np.sqrt(2) / 2)
    assert set(metrics.summary(pred, gt, vis)) >= {"kaggle_mse", "epe", "pck@2px", "auc", "acc_2px", "acc_coord_sq2", "epe_visible"}
    with pytest.raises(ValueError, match="equal shapes"):
        metrics.kaggle_mse(pred, gt[:1])


def test_submission_round_trip_and_score(tmp_path):
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 128, (5, 21, 2))
    write_submission(tmp_path / "sol.csv", gt)
    write_submission(tmp_path / "sub.csv", gt + 1.0)
    np.testing.assert_allclose(read_submission(tmp_path / "sub.csv", 5), gt + 1, atol=1e-6)
    s = score(tmp_path / "sub.csv", tmp_path / "sol.csv")
    assert s["kaggle_mse"] == pytest.approx(1.0, abs=1e-5) and s["epe"] == pytest.approx(np.sqrt(2), abs=1e-5)


def test_writer_matches_the_real_2018_submission(shared_reference, tmp_path):
    ref = shared_reference / "kaggle_submission_example.csv"
    assert validate_submission(ref, 3611) == 3611
    kp = read_submission(ref)
    write_submission(tmp_path / "ours.csv", kp)
    assert (tmp_path / "ours.csv").read_text().splitlines()[0] == ref.read_text().splitlines()[0]
    assert [l.split(",")[0] for l in (tmp_path / "ours.csv").read_text().splitlines()[1:4]] == ["0", "1", "2"]


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda df: df.iloc[:-1], "rows: expected 4"),
        (lambda df: df.drop(columns=["Joint 20 y"]), "header"),
        (lambda df: df.rename(columns={"Joint 3 x": "joint 3 x"}), "header"),
        (lambda df: df.assign(Id=[0, 2, 1, 3]), "Id: expected 0..3"),
        (lambda df: df.assign(**{"Joint 7 y": [1.0, np.nan, 2.0, 3.0]}),
         "row 1 column 'Joint 7 y': expected a finite number, found an empty cell"),
        (lambda df: df.assign(**{"Joint 7 y": [1.0, np.inf, 2.0, 3.0]}), "expected a finite number, found inf"),
        (lambda df: df.assign(**{"Joint 2 x": ["1", "a", "2", "3"]}), "row 1 column 'Joint 2 x'.* found 'a'"),
        ("sep;", "header: expected 43 comma-separated columns, found one column holding ; between names"),
    ],
)
def test_bad_submissions_refused(tmp_path, edit, match):
    write_submission(tmp_path / "ok.csv", np.ones((4, 21, 2)))
    if edit == "sep;":  # a spreadsheet's export in a comma-decimal locale
        pd.read_csv(tmp_path / "ok.csv").to_csv(tmp_path / "bad.csv", index=False, sep=";")
    else:
        edit(pd.read_csv(tmp_path / "ok.csv")).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SubmissionError, match=match) as e:
        read_submission(tmp_path / "bad.csv", 4)
    assert "bad.csv" in str(e.value)


def test_writer_refuses_nan_and_leaves_no_file(tmp_path):
    kp = np.ones((3, 21, 2))
    kp[1, 2, 0] = np.nan
    with pytest.raises(SubmissionError, match="NaN"):
        write_submission(tmp_path / "x.csv", kp)
    assert not list(tmp_path.iterdir())
    assert COLUMNS[:3] == ["Id", "Joint 0 x", "Joint 0 y"] and len(COLUMNS) == 43


def _no_credentials(monkeypatch, tmp_path):
    for k in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nokaggle"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))


def test_kaggle_without_credentials_is_one_clear_error(monkeypatch, tmp_path):
    import subprocess
    import sys

    from lib import submit

    _no_credentials(monkeypatch, tmp_path)
    write_submission(tmp_path / "s.csv", np.ones((3, 21, 2)))
    calls = []
    monkeypatch.setattr(submit.subprocess, "run", lambda *a, **k: calls.append(a))
    with pytest.raises(submit.KaggleError, match="no Kaggle credentials: set KAGGLE_API_TOKEN"):
        submit.kaggle_submit(tmp_path / "s.csv", "msg", rows=3)
    assert not calls  # no network call attempted
    monkeypatch.undo()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "KAGGLE_CONFIG_DIR": str(tmp_path / "no")}
    r = subprocess.run([sys.executable, "-m", "lib.submit", "kaggle", str(tmp_path / "s.csv"), "-m", "x", "--rows", "3"],
                       capture_output=True, text=True, env=env, cwd=str(submit.Path(submit.__file__).parents[1]))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no Kaggle credentials" in r.stderr


def test_kaggle_dry_run_and_fake_cli(monkeypatch, tmp_path, capsys):
    from lib import submit

    write_submission(tmp_path / "s.csv", np.ones((3, 21, 2)))
    cmd = submit.kaggle_submit(tmp_path / "s.csv", "first try", dry_run=True, rows=3)
    assert cmd == ["kaggle", "competitions", "submit", "mp18-hand-joint-recognition", "-f", str(tmp_path / "s.csv"),
                   "-m", "first try"]
    assert "kaggle competitions submit mp18-hand-joint-recognition" in capsys.readouterr().out
    fake = tmp_path / "bin" / "kaggle"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path}/args.txt\necho Successfully submitted\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{submit.os.environ['PATH']}")
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "secret-key-123")
    submit.kaggle_submit(tmp_path / "s.csv", "first try", rows=3)
    assert (tmp_path / "args.txt").read_text().splitlines() == cmd[1:]
    out = capsys.readouterr().out
    assert "Successfully submitted" in out and "secret-key-123" not in out
    with pytest.raises(SubmissionError):  # validated before anything is sent
        (tmp_path / "bad.csv").write_text("Id\n0\n")
        submit.kaggle_submit(tmp_path / "bad.csv", "x")


def test_fitted_ensemble_weights_are_the_best_combination_and_scored_out_of_fold():
    """fit_weights minimises the MSE over weights >= 0 summing to 1 (a grid over the simplex finds
    nothing better; NNLS then normalised gave all to the scaled model here: MSE 428 against 39.7), and
    the leaderboard scores the fitted ensemble out of fold, not on the hands its weights were fitted on."""
    from lib import ensemble

    rng = np.random.default_rng(0)
    gt = rng.uniform(20, 108, (300, 21, 2))
    preds = [gt + rng.normal(0, 8, gt.shape), gt + rng.normal(0, 12, gt.shape), 0.7 * gt]
    w = ensemble.fit_weights(preds, gt)
    mse = lambda p: float(((p - gt) ** 2).mean())  # noqa: E731
    grid = [(a, b, 1 - a - b) for a in np.arange(0, 1.001, 0.01) for b in np.arange(0, 1.001 - a, 0.01)]
    best = min(mse(ensemble.combine(preds, np.array(g))) for g in grid)
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-9 and mse(ensemble.combine(preds, w)) <= best + 1e-6
    # ten models of noise beside one good one: fitted on all hands they flatter the ensemble
    noise = [gt + rng.normal(0, 30, gt.shape) for _ in range(10)]
    vals = [preds[0], *noise]
    in_sample = mse(ensemble.combine(vals, ensemble.fit_weights(vals, gt)))
    oof = ensemble.out_of_fold(vals, gt)
    assert mse(oof) > in_sample
    runs = [ensemble.RunPredictions(f"r{i}", "m", "modern", np.arange(300), v, v[:5], "d") for i, v in enumerate(vals)]
    board, _ = ensemble.leaderboard(runs, gt, np.ones(gt.shape[:2]))
    assert board.set_index("name").loc["ensemble_fitted", "kaggle_mse"] == pytest.approx(mse(oof), rel=1e-6)
