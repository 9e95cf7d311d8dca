"""benchmarks: markdown sections update in place; the per-model measurement returns sane numbers; one CLI."""
import subprocess
import sys

import pytest
import torch

from benchmarks.accuracy import parse_spec
from benchmarks.report import update_section
from benchmarks.speed import bench_one_model, dispatched_ops, forward_flops
from lib.data import CROP_SIZE
from lib.models import create_model
from lib.paths import REPO


def test_update_section_replaces_only_its_block(tmp_path):
    md = tmp_path / "B.md"
    md.write_text("# Benchmarks\n\nprose before\n")
    update_section(md, "models", "table one")
    update_section(md, "input", "input table")
    update_section(md, "models", "table two")
    text = md.read_text()
    assert "prose before" in text and "input table" in text
    assert "table one" not in text and text.count("table two") == 1
    assert text.index("<!-- bench:models -->") < text.index("<!-- bench:input -->")


def test_forward_flops_counts_a_known_layer():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert forward_flops(conv) == pytest.approx(2 * 3 * 8 * 9 * CROP_SIZE * CROP_SIZE)


def test_forward_flops_of_resnet34_regressor():
    # timm resnet34 at 224 is ~3.6 GMACs; at 128x128 that is ~1.2 GMACs = ~2.4 GFLOPs
    assert 2.0e9 < forward_flops(create_model("resnet34")) < 2.8e9


def test_dispatched_ops_count_what_would_be_kernels():
    """Each computing op counts once, whatever its device; views and bare allocations do not."""
    x = torch.ones(4, 3)
    assert dispatched_ops(lambda: (x + 1).view(12).mul(2)) == 2
    assert dispatched_ops(lambda: (x.t(), x[1:], x.detach(), torch.empty(3))) == 0
    conv = torch.nn.Conv2d(3, 4, 3)
    assert dispatched_ops(lambda: conv(torch.ones(1, 3, 8, 8)).sum().backward()) >= 4  # conv, sum, their backwards


def test_bench_one_model_cpu():
    r = bench_one_model("cpm", batch=2, steps=1, device="cpu", amp="off")
    assert r["model"] == "cpm" and r["train img/s"] > 0 and r["infer img/s"] > 0
    assert 200 < r["ops / train step"] < 400  # 285 when written (fused AdamW: one op for all weights)
    assert r["peak mem (GiB)"] > 0 and r["GFLOPs/img (fwd)"] > 0 and r["% of peak"] is None


def test_leaderboard_run_spec():
    assert parse_spec("cpm:modern") == ("cpm", "modern", {}, None)
    assert parse_spec('hm_resnet18:modern:{"backbone":"resnet34"}@hm_resnet34') == (
        "hm_resnet18", "modern", {"backbone": "resnet34"}, "hm_resnet34")
    with pytest.raises(ValueError, match="MODEL:RECIPE"):
        parse_spec("cpm")


def test_cli_help_lists_every_benchmark():
    res = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    for cmd in ("input", "models", "loop", "scaling", "accuracy", "leaderboard", "curves", "memorise", "targets", "all"):
        assert f"python -m benchmarks {cmd}" in res.stdout
    assert "_one" not in res.stdout  # internal subcommand of `models`


def test_input_bench_measures_the_workers_share_on_cuda(tiny_data):
    """modern-deferred: the geometry and the pixel-op draws only (the workers' part of --pixel-ops device)."""
    from benchmarks.speed import bench_input

    df = bench_input(n=8, workers=(0,), batch=4, pipelines=("modern", "modern-deferred", "modern-context"),
                     data_dir=str(tiny_data))
    assert df["pipeline"].tolist() == ["modern", "modern-deferred", "modern-context"]
    assert (df["per core (crops/CPU-s)"] > 0).all() and (df["0 workers (crops/s)"] > 0).all()


def test_a_model_over_its_time_limit_gets_a_row_and_the_table_is_kept(tmp_path, capsys):
    """--timeout bounds each model's subprocess (a long compile, say): a row says so, the section is
    written after every model, so a killed benchmark leaves the rows it finished."""
    from benchmarks.__main__ import main

    md = tmp_path / "B.md"
    assert main(["models", "--models", "hm_resnet18_64", "--batch", "2", "--steps", "1", "--timeout", "0.5",
                 "--out", str(md)]) == 0
    assert "| hm_resnet18_64 |" in md.read_text() and "over the 0.5-s limit" in md.read_text()
    assert main(["models", "--timeout", "0"]) == 2
    assert "--timeout: expected seconds > 0, found 0.0" in capsys.readouterr().err


def test_bench_accuracy_reads_finished_runs(tmp_path, monkeypatch):
    from benchmarks.accuracy import bench_accuracy
    from lib.runs import Run

    monkeypatch.setenv("HANDJOINTS_OUTPUTS", str(tmp_path))
    for name, mse, finished in (("a_modern_cpu", 500.0, True), ("b_paper_cpu", 700.0, True), ("c_cpu", 1.0, False)):
        run = Run(tmp_path / "runs" / name)
        run.dir.mkdir(parents=True)
        run.write_config({"model": name[0], "recipe": "modern", "batch_size": 8, "train_size": 80})
        run.write_history([{"step": 5, "elapsed_s": 60.0, "img_s": 10.0}, {"step": 20, "elapsed_s": 120.0, "img_s": 20.0}])
        if finished:
            run.write_metrics({"kaggle_mse": mse, "epe": 1.0, "pck@2px": 0.5, "auc": 0.4})
    df = bench_accuracy()
    assert list(df["run"]) == ["a_modern_cpu", "b_paper_cpu"]  # sorted by kaggle_mse; unfinished left out
    assert df["train min"].iloc[0] == pytest.approx(2.0) and df["epochs"].iloc[0] == pytest.approx(2.0)
    assert df["train img/s"].iloc[0] == pytest.approx(15.0) and df["test kaggle_mse"].isna().all()


def test_report_epochs_time_from_the_loops_paper_rows():
    """benchmarks loop's `paper` rows carry the report run's minutes at their rate; the four report models'
    total comes from each one's fastest row (BENCHMARKS 7c by hand: 4.5 h), and only when all four have one."""
    import pandas as pd

    from benchmarks.loop import report_minutes, report_total

    assert report_minutes("irv2", 505) == pytest.approx(57_466 * 108 / 505 / 60)
    rates = [("resnet34", 2439), ("resnet34", 2909), ("cpm", 3048), ("inception_v3", 1131), ("irv2", 505),
             ("hm_resnet18", None)]
    df = pd.DataFrame([{"model": m, "report epochs (min)": report_minutes(m, r) if r else None} for m, r in rates])
    line = report_total(df)
    assert line.startswith("the four report models at report epochs of 57,466 hands, from their fastest rows: "
                           "269 min in all (irv2 108 epochs 205 min, resnet34 55 epochs 18 min, cpm 40 epochs 13 min, "
                           "inception_v3 40 epochs 34 min)"), line
    assert report_total(df[df.model != "cpm"]) == "" and report_total(df.drop(columns="report epochs (min)")) == ""


def _loop_rows():
    """`loop --csv` rows as a GPU session would write them: the large batch with the graph off and on, and
    the report's batch 8 (rates near §7k's H200 figures)."""
    import pandas as pd

    from benchmarks.loop import report_minutes

    rows = [("hm_resnet18", "modern", 256, False, 9_000, 20_000), ("hm_resnet18", "modern", 256, True, 17_500, 20_000),
            ("irv2", "modern", 256, True, 2_000, 2_625)]
    rows += [(m, "paper", 8, True, r, r / 5) for m, r in (("resnet34", 2_600), ("cpm", 2_900), ("inception_v3", 1_385),
                                                           ("irv2", 537))]
    return pd.DataFrame([{"model": m, "recipe": rec, "batch": b, "amp": "bf16", "cuda graph": g, "compile": False,
                          "loop img/s": loop, "model-only img/s": alone, "loop / model": loop / alone,
                          "report epochs (min)": report_minutes(m, loop) if rec == "paper" else None}
                         for m, rec, b, g, loop, alone in rows])


def _profile_run(path, curve_mse):
    from lib.runs import Run

    run = Run(path)
    run.dir.mkdir(parents=True)
    run.write_config({"model": "hm_resnet18_64", "recipe": "modern", "train_size": 1000})
    run.write_curve([{"step": k, "images": 1000 * k, "elapsed_s": 10.0 * k, "kaggle_mse": m}
                     for k, m in enumerate(curve_mse, 1)])
    run.write_metrics({"kaggle_mse": 83.1, "test_kaggle_mse": 79.1, "epe": 8.1})
    return run


def test_targets_table_reads_goal_measured_and_met(tmp_path, capsys):
    """benchmarks targets: a row per target of issue 12 from gpu_check.sh's files; the best row of a
    model counts (the graph's ratio, not the eager one's), a missing model says `not measured`, and the
    gpu profile's curve says whether it still fell at the end."""
    from benchmarks.__main__ import main
    from benchmarks.loop import write_rows

    write_rows(tmp_path / "loop.csv", _loop_rows())
    _profile_run(tmp_path / "falling", [300, 200, 150, 120, 110, 100])
    md = tmp_path / "T.md"
    assert main(["targets", "--loop", str(tmp_path / "loop.csv"), "--run", str(tmp_path / "falling"),
                 "--seconds", "profile=461,all=500", "--out", str(md)]) == 0
    header, *rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.read_text().splitlines()
                     if line.startswith("| ") and "---" not in line]
    got = {r[0]: dict(zip(header, r)) for r in rows}
    ratio = got["loop / model alone, hm_resnet18"]
    assert (ratio["measured"], ratio["met"]) == ("0.88", "yes") and "CUDA graph" in ratio["how"]
    assert got["loop / model alone, irv2"]["met"] == "no"  # 0.76
    assert got["IRv2 alone, train img/s"]["measured"].replace(",", "") == "2625"
    assert [got[f"paper recipe loop img/s, {m}"]["met"] for m in ("resnet34", "cpm", "inception_v3", "irv2")] == \
        ["yes", "yes", "no", "no"]
    report = got["the four report models at report epochs (min)"]
    assert report["met"] == "no" and int(report["measured"].replace(",", "")) == round(
        57_466 * (55 / 2_600 + 40 / 2_900 + 40 / 1_385 + 108 / 537) / 60)
    assert got["gpu profile: render, train, predict (s)"]["met"] == "yes"
    assert got["gpu_check.sh all (s)"]["met"] == "no"  # 500 > 480
    assert got["gpu profile, test kaggle_mse (flip TTA)"]["measured"] == "79.1"
    converged = "gpu profile converged: fall per epoch at the end (% of val kaggle_mse)"
    assert (got[converged]["measured"], got[converged]["met"]) == ("16.67", "no")  # 150 -> 100 in 3 epochs: 16.7 %/epoch
    assert got["loop / model alone, cpm"]["met"] == "not measured"  # a model the rows lack still has its row

    from benchmarks.targets import targets
    flat = targets(None, _profile_run(tmp_path / "flat", [300, 100, 100.3, 100.1, 100.0]), {})
    assert flat.set_index("target").loc[converged, "met"] == "yes"  # 0.1 % per epoch
    nothing = targets(_loop_rows().iloc[:0], None, {}, ["irv2"])
    assert set(nothing["met"]) == {"not measured"} and len(nothing) == 12  # nothing measured, nothing claimed
    assert "loop / model alone, irv2" in nothing["target"].tolist()

    bad = tmp_path / "bad.csv"
    bad.write_text("model,batch\nirv2,8\n")
    assert main(["targets", "--loop", str(bad)]) == 2
    assert f"--loop {bad}: expected the columns of `loop --csv`" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_check_all_rehearses_on_a_cpu(tmp_path):
    """benchmarks/gpu_check.sh's all part at tiny sizes (GPU_CHECK_TINY, as a session rehearses it before
    its device call): the profile's data renders beside the measurements, every step exits 0, and the
    targets table comes from the loop's rows and the profile's run."""
    import os
    import re

    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_TINY": "1", "GPU_CHECK_WORK": str(tmp_path / "work"),
           "HANDJOINTS_DATA": str(tmp_path / "data"), "HANDJOINTS_OUTPUTS": str(tmp_path / "outputs")}
    res = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out), "all"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=540)
    log = (out / "gpu_check.log").read_text()
    assert res.returncode == 0, res.stderr[-2000:]
    steps = re.findall(r"\] ([^:\n]+): exit (\d+)", log)
    assert {name for name, _ in steps} >= {"tests", "input", "profile train", "profile predict", "targets"}, steps
    assert all(rc == "0" for _, rc in steps), steps
    assert (tmp_path / "data" / "synthetic-smoke" / "training.h5").exists()  # rendered by the background step
    table = (out / "BENCHMARKS.targets.md").read_text()
    for target in ("loop / model alone, hm_resnet18_64", "paper recipe loop img/s, resnet34",
                   "gpu profile: render, train, predict (s)", "gpu profile, val kaggle_mse (flip TTA)"):
        assert f"| {target}" in table, table
    assert "| loop / model alone, resnet34" in res.stdout  # the summary ends with the table
