"""benchmarks.curves: learning curves of fake runs (no training): interpolation at equal images and
equal seconds, reach, the log.csv fallback, the CLI's section and PNG, and one error line for a bad run."""
import math

import numpy as np
import pandas as pd
import pytest

from benchmarks.__main__ import main
from benchmarks.curves import curve_table, default_points, interpolate, load_curves, plot_curves, reach
from benchmarks.report import markdown, section
from lib.runs import Run

# (images, elapsed_s, kaggle_mse) per validation
CURVE_A = [(100, 10.0, 1000.0), (200, 20.0, 800.0), (400, 40.0, 400.0)]
CURVE_B = [(200, 30.0, 900.0), (400, 60.0, 600.0)]


def make_run(root, name: str, points, batch: int = 10, model: str = "cpm", recipe: str = "modern") -> Run:
    run = Run(root / name)
    run.dir.mkdir(parents=True)
    run.write_config({"model": model, "recipe": recipe, "batch_size": batch, "budget_minutes": 1.0})
    run.write_curve([{"step": img // batch, "images": img, "elapsed_s": t, "lr": 1e-3, "train_loss": 1.0,
                      "kaggle_mse": mse, "epe": math.sqrt(mse), "pck@2px": 0.1} for img, t, mse in points])
    return run


@pytest.fixture
def runs_dir(tmp_path):
    d = tmp_path / "runs"
    make_run(d, "a_modern", CURVE_A, model="hm_resnet18")
    make_run(d, "b_paper", CURVE_B, batch=20, recipe="paper")
    return d


def test_load_curves_long_table(runs_dir):
    df = load_curves(None, runs_dir)
    assert list(df["run"]) == ["a_modern"] * 3 + ["b_paper"] * 2
    assert list(df.columns[:3]) == ["run", "model", "recipe"]
    assert {"step", "images", "elapsed_s", "kaggle_mse", "epe", "pck@2px", "lr", "train_loss"} <= set(df.columns)
    assert df.loc[df["run"] == "a_modern", "model"].unique().tolist() == ["hm_resnet18"]
    only_b = load_curves(["b_paper", "b_paper"], runs_dir)  # a name given twice is read once
    assert list(only_b["kaggle_mse"]) == [900.0, 600.0] and only_b["recipe"].unique().tolist() == ["paper"]
    assert list(load_curves([str(runs_dir / "a_modern")])["images"]) == [100, 200, 400]  # a directory works too


def test_interpolation_at_equal_images_and_seconds(runs_dir):
    df = load_curves(None, runs_dir)
    t = curve_table(df, "images", points=[100, 150, 300, 400, 500]).set_index("run")
    assert list(t.columns) == [100, 150, 300, 400, 500, "end", "final", "best"]
    assert t.loc["a_modern", 150] == 900.0 and t.loc["a_modern", 300] == 600.0 and t.loc["a_modern", 400] == 400.0
    assert np.isnan(t.loc["b_paper", 100]) and np.isnan(t.loc["b_paper", 150])  # before its first validation
    assert t.loc["b_paper", 300] == 750.0
    assert np.isnan(t.loc["a_modern", 500]) and np.isnan(t.loc["b_paper", 500])  # after the last one
    assert t.loc["a_modern", "end"] == 400 and t.loc["a_modern", "final"] == 400.0 and t.loc["b_paper", "best"] == 600.0

    s = curve_table(df, "elapsed_s", points=[15, 45, 60, 61]).set_index("run")
    assert s.loc["a_modern", 15] == 900.0 and np.isnan(s.loc["a_modern", 45])
    assert s.loc["b_paper", 45] == 750.0 and s.loc["b_paper", 60] == 600.0 and np.isnan(s.loc["b_paper", 61])
    assert list(curve_table(df, "images")["run"]) == ["a_modern", "b_paper"]  # by final kaggle_mse
    with pytest.raises(ValueError, match="at: expected one of images, elapsed_s"):
        curve_table(df, "epoch")


def test_default_grid_is_round(runs_dir):
    df = load_curves(None, runs_dir)
    assert default_points(df, "images").tolist() == [100, 200]  # 1-2-5 within 100..400
    assert default_points(df, "elapsed_s").tolist() == [10, 20, 30, 40]  # up to the shorter run's end
    many = pd.DataFrame({"run": "r", "images": [50, 12_000], "elapsed_s": [5.0, 150.0], "kaggle_mse": [2.0, 1.0]})
    assert default_points(many, "images").tolist() == [200, 500, 1000, 2000, 5000, 10000]
    assert default_points(many, "elapsed_s").tolist() == [30, 60, 90, 120, 150]


def test_interpolate_edges():
    x, y = np.array([1.0, 3.0]), np.array([10.0, 30.0])
    assert np.array_equal(interpolate(x, y, [1.0, 2.0, 3.0]), [10.0, 20.0, 30.0])
    assert np.isnan(interpolate(x, y, [0.5, 3.5])).all()


def test_reach(runs_dir):
    df = load_curves(None, runs_dir)
    r = reach(df, 700.0)
    assert r["a_modern"] == pytest.approx(250.0) and r["b_paper"] == pytest.approx(200 + 200 * 200 / 300)
    assert reach(df, 700.0, at="elapsed_s").tolist() == pytest.approx([25.0, 50.0])
    assert reach(df, 1000.0)["a_modern"] == 100.0  # its first validation already did
    assert reach(df, 100.0).isna().all()  # never
    t = curve_table(df, "images", reach_mse=700.0).set_index("run")
    assert t.loc["a_modern", "reach 700"] == pytest.approx(250.0)


def test_log_csv_fallback_counts_images_from_batch(tmp_path):
    run = Run(tmp_path / "old_run")
    run.dir.mkdir()
    run.write_config({"model": "resnet34", "recipe": "paper", "batch_size": 8})
    run.write_history([{"epoch": 1, "step": 50, "elapsed_s": 30.0, "kaggle_mse": 900.0, "epe": 30.0},
                       {"epoch": 2, "step": 100, "elapsed_s": 60.0, "kaggle_mse": 700.0, "epe": 26.0}])
    assert not run.curve_path.exists()
    df = load_curves([str(run.dir)])
    assert list(df["images"]) == [400, 800] and list(df["model"]) == ["resnet34"] * 2
    assert curve_table(df, "images", points=[600]).loc[0, 600] == 800.0


def test_section_with_subtitled_tables_and_a_single_one(tmp_path, capsys):
    one = pd.DataFrame({"a": [1]})
    plain = section("x", "T", one, [], "cpu", "", None)
    assert "####" not in plain and plain.rstrip().endswith(markdown(one))
    two = section("x", "T", [("first", one), ("second", one)], [], "cpu", "", tmp_path / "B.md")
    assert two.index("#### first") < two.index("#### second")
    assert "<!-- bench:x -->" in (tmp_path / "B.md").read_text()


def test_cli_writes_section_and_png(runs_dir, tmp_path, capsys):
    md, png = tmp_path / "B.md", tmp_path / "fig" / "curves.png"
    md.write_text("# Benchmarks\n\nprose\n")
    code = main(["curves", "--runs-dir", str(runs_dir), "--out", str(md), "--png", str(png), "--reach", "700",
                 "--baseline", "950", "--baseline-label", "mean pose"])
    out = capsys.readouterr().out
    assert code == 0, out
    text = md.read_text()
    assert "prose" in text and "<!-- bench:curves -->" in text and "<!-- /bench:curves -->" in text
    for line in ("- command: `python -m benchmarks curves --runs-dir", "- date: ", "- device: ", "- versions: python"):
        assert line in text
    assert "#### kaggle_mse at equal training images seen" in text
    assert "#### kaggle_mse at equal training seconds" in text
    assert "reach 700 (images)" in text and "reach 700 (s)" in text and "a_modern" in text and "b_paper" in text
    assert "#### kaggle_mse at equal training images seen" in out and f"wrote {png}" in out
    head = png.read_bytes()
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) > 20_000


def test_plot_curves_directly(runs_dir, tmp_path):
    path = plot_curves(load_curves(None, runs_dir), tmp_path / "c.png", baseline=950.0)
    assert path.stat().st_size > 20_000
    with pytest.raises(ValueError, match="no learning curve"):
        plot_curves(load_curves(None, tmp_path / "nothing"), tmp_path / "d.png")


def one_error_line(capsys, code: int) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_cli_missing_run_is_one_error_line(runs_dir, capsys):
    line = one_error_line(capsys, main(["curves", "--runs", "a_modern", "nope", "--runs-dir", str(runs_dir)]))
    assert "'nope'" in line and "no such run directory" in line


def test_cli_run_without_curve_is_one_error_line(runs_dir, capsys):
    Run(runs_dir / "fresh").dir.mkdir()
    Run(runs_dir / "fresh").write_config({"model": "cpm", "recipe": "modern", "batch_size": 8})
    line = one_error_line(capsys, main(["curves", "--runs", "fresh", "--runs-dir", str(runs_dir)]))
    assert "'fresh'" in line and "no learning curve yet" in line
    assert list(load_curves(None, runs_dir)["run"].unique()) == ["a_modern", "b_paper"]  # all runs: skipped


@pytest.mark.parametrize("args, words", [
    (["--reach", "0"], "--reach: expected a kaggle_mse > 0"),
    (["--baseline", "-5"], "--baseline: expected a kaggle_mse > 0"),
])
def test_cli_bad_numbers(runs_dir, capsys, args, words):
    assert words in one_error_line(capsys, main(["curves", "--runs-dir", str(runs_dir), *args]))


def test_cli_png_is_a_directory(runs_dir, tmp_path, capsys):
    assert "--png" in one_error_line(capsys, main(["curves", "--runs-dir", str(runs_dir), "--png", str(tmp_path)]))


def test_cli_no_runs_says_so(tmp_path, capsys):
    assert main(["curves", "--runs-dir", str(tmp_path)]) == 0
    assert "no run with a learning curve" in capsys.readouterr().out


def test_memorise_reports_steps_to_the_threshold(tiny_data):
    """benchmarks.memorise on the tiny data: a generous threshold is reached at the first check,
    an impossible one is reported as not reached within the step limit."""
    from benchmarks.memorise import bench_memorise

    easy = bench_memorise(["hm_resnet18"], hands=8, threshold=500.0, max_steps=2, data_dir=str(tiny_data))
    row = easy.iloc[0]
    assert row["hands"] == 8 and row["steps"] <= 2
    hard = bench_memorise(['hm_resnet18:{"input_size": 64}'], hands=8, threshold=1e-6, max_steps=3,
                          data_dir=str(tiny_data))
    assert hard.iloc[0]["steps to EPE < 1e-06 px"] == "> 3" and hard.iloc[0]["model"].startswith("hm_resnet18 {")


def test_memorise_cli_refuses_an_unknown_model(capsys):
    assert main(["memorise", "--models", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope" in err[0]
