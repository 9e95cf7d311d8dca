"""Every notebook headless with papermill under the smoke profile, and the files each one promises."""
import json

import numpy as np
import pandas as pd
import pytest

from lib import pipeline
from lib.submit import validate_submission
from tests.conftest import module_dir

pytestmark = pytest.mark.slow  # ~1 minute of papermill kernels: `make test-slow` and CI run it


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    with module_dir(tmp_path_factory, "ws") as root, pytest.MonkeyPatch.context() as mp:
        for var, sub in (("HANDJOINTS_DATA", "data"), ("HANDJOINTS_OUTPUTS", "outputs"),
                         ("HANDJOINTS_SUBMISSIONS", "subs")):
            mp.setenv(var, str(root / sub))
        yield root, pipeline.run(profile="smoke")


def test_pipeline_runs_every_notebook(workspace):
    root, timings = workspace
    assert timings["step"].tolist() == ["data"] + pipeline.notebooks()
    assert len(pipeline.notebooks()) == 8
    for name in pipeline.notebooks():
        executed = json.loads((root / "outputs" / "notebooks" / f"{name}.ipynb").read_text())
        errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, name


def test_eda_and_augmentation_figures(workspace):
    root, _ = workspace
    for png in ("sizes", "visibility", "positions", "hand_sizes", "bones", "samples", "test_preview"):
        assert (root / "outputs" / "eda" / f"{png}.png").stat().st_size > 1000, png
    for f in ("side_by_side.png", "each_op.png", "rollback_stats.csv"):
        assert (root / "outputs" / "augmentation" / f).exists(), f


@pytest.mark.parametrize("notebook", pipeline.TRAINING_NOTEBOOKS)
def test_training_notebook_outputs(workspace, notebook):
    root, _ = workspace
    runs = list((root / "outputs" / "runs").glob(f"{notebook[3:]}_*_smoke"))
    assert len(runs) == 1, runs
    run = runs[0]
    for f in ("config.json", "log.csv", "best.pt", "last.pt", "curves.png", "worst.png", "val_pred.npy",
              "test_pred.npy", "val_metrics.json", "per_joint.csv", "submission.csv"):
        assert (run / f).exists(), f
    assert np.isfinite(np.load(run / "test_pred.npy")).all()


def test_ensemble_submission_is_valid(workspace):
    root, _ = workspace
    subs = list((root / "subs").glob("*.csv"))
    assert [p.name for p in subs] == ["ensemble.csv"]
    n_test = len(np.load(next((root / "outputs" / "runs").glob("*/test_pred.npy"))))
    assert validate_submission(subs[0], n_test) == n_test
    board = pd.read_csv(root / "outputs" / "leaderboard.csv")
    assert {"ensemble_fitted", "ensemble_mean", "baseline_mean_pose"} <= set(board["name"])
    # the constant-pose baseline is for reference only: it is never the submission
    sub = np.loadtxt(subs[0], delimiter=",", skiprows=1)[:, 1:]
    assert sub.std(axis=0).max() > 0


def test_a_failing_cell_fails_and_names_the_cell(workspace):
    root, _ = workspace
    with pytest.raises(pipeline.NotebookError, match=r"^04_resnet34: .*model: expected one of .*\(cell In \[\d+\] of "
                                                     r".*failed/04_resnet34\.ipynb\)$"):
        pipeline.run_notebook("04_resnet34", {"profile": "smoke", "data_dir": str(root / "data" / "synthetic-smoke"),
                                              "model": "resnet35"}, root / "failed")


def test_a_notebook_stopped_by_an_expected_error_is_one_line_and_a_bug_keeps_its_traceback(tiny_data, tmp_path,
                                                                                           monkeypatch, capsys):
    """make run on a full disk (or bad input) ends with the notebook's one line, not a page of traceback."""
    import re

    import nbformat

    for name, code in (("91_full", "raise OSError(28, '/x/last.pt: the disk ran out of space')"), ("92_bug", "1 / 0")):
        nb = nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_code_cell("profile = 'smoke'\ndata_dir = ''", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(code)],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", tmp_path)
    monkeypatch.setenv("HANDJOINTS_OUTPUTS", str(tmp_path / "out"))
    assert pipeline.main(["--only", "91_full", "--data-dir", str(tiny_data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    executed = re.escape(str(tmp_path / "out" / "notebooks" / "91_full.ipynb"))
    assert len(err) == 1 and re.fullmatch(rf"error: 91_full: /x/last\.pt: the disk ran out of space "
                                          rf"\(cell In \[\d+\] of {executed}\)", err[0]), err
    assert pipeline.main(["--only", "92_bug", "--data-dir", str(tiny_data)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: a notebook failed") and "ZeroDivisionError" in err and "1 / 0" in err
