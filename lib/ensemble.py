"""Ensembles of finished runs: weights fitted on validation, applied to test, and a leaderboard.

    python -m lib.ensemble --name ensemble            # every finished run -> submissions/ensemble.csv

Rows named baseline_* are for reference only (never in an ensemble, never the submission): the
training mean pose, and off-the-shelf predictions in outputs/baselines/<name>/ (val_index.npy,
val_pred.npy, test_pred.npy, meta.json; e.g. `python -m benchmarks.realism baseline`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from lib import cli, data, io, metrics, paths
from lib.runs import Run, labels_fingerprint, list_runs
from lib.submit import read_submission, validate_submission, write_submission

LEADERBOARD_COLUMNS = ["kaggle_mse", "epe", "pck@2px", "auc"]
BASELINE_PREFIX = "baseline_"
BASELINE = BASELINE_PREFIX + "mean_pose"


@dataclass
class RunPredictions:
    name: str
    model: str
    recipe: str
    val_index: np.ndarray
    val_pred: np.ndarray
    test_pred: np.ndarray
    data_dir: str
    labels: str | None = None  # the fingerprint of the hands it was trained on (lib.runs.labels_fingerprint)


def _run_arg(run: Run) -> str:
    """How `--run` names this run: its name in the default runs folder, else its folder."""
    return run.name if run.dir.absolute().parent == paths.runs().absolute() else str(run.dir)


def load_runs(runs_dir: str | os.PathLike | None = None) -> list[RunPredictions]:
    """Every run with validation and test predictions (from lib.predict.predict_run)."""
    out = []
    for run in list_runs(runs_dir):
        if not run.has_predictions():
            continue
        stale = run.stale_predictions()
        if stale:
            print(f"ensemble: leaving out {run.name}: its predictions are stale ({stale}); "
                  f"python -m lib.predict --run {_run_arg(run)} makes them again")
            continue
        try:
            cfg = run.config(Run.PREDICTED)
            out.append(RunPredictions(run.name, cfg["model"], cfg["recipe"], *run.predictions(), cfg["data_dir"],
                                      cfg.get("labels")))
        except ValueError as e:  # a damaged file (Run.config names it): this run only
            print(f"ensemble: leaving out {run.name}: {e}")
    return out


def load_baselines(baselines_dir: str | os.PathLike | None = None, files: data.DataPaths | None = None
                   ) -> list[RunPredictions]:
    """Every complete folder of outputs/baselines/ as a board entry named baseline_<folder>; with
    `files`, only those made on these very files (meta.json "data": their fingerprints)."""
    out = []
    for d in sorted(Path(baselines_dir or paths.baselines()).glob("*/")):
        b = Run(d)  # a baseline folder holds a run's prediction files, and meta.json instead of config.json
        if not all(f.exists() for f in (b.val_index_path, b.val_pred_path, b.test_pred_path, d / "meta.json")):
            continue
        try:
            meta = json.loads((d / "meta.json").read_text())
        except ValueError as e:
            print(f"leaderboard: leaving out {BASELINE_PREFIX + d.name}: {d / 'meta.json'}: not readable JSON: {e}")
            continue
        if files is not None and meta.get("data") != data_fingerprints(files):
            print(f"leaderboard: leaving out {BASELINE_PREFIX + d.name}: made on another copy of {files.root} "
                  f"(training.h5 or testing.h5 changed since); make it again")
            continue
        out.append(RunPredictions(BASELINE_PREFIX + d.name, meta.get("model", d.name), "-", *b.predictions(),
                                  meta.get("data_dir", "")))
    return out


def data_fingerprints(files: data.DataPaths) -> dict[str, str]:
    """Identity of a dataset's training and test files, for predictions made on them."""
    return {"training": data.fingerprint(files.training), "testing": data.fingerprint(files.testing)}


def matching_baselines(baselines: list[RunPredictions], ref: RunPredictions) -> list[RunPredictions]:
    """The baselines made on ref's data, validation samples and test set; one line for each one left out."""
    keep = []
    for b in baselines:
        why = (f"other data than {ref.name}" if Path(b.data_dir).resolve() != Path(ref.data_dir).resolve()
               else f"other validation samples than {ref.name}" if not np.array_equal(b.val_index, ref.val_index)
               else f"another test set than {ref.name}" if b.test_pred.shape != ref.test_pred.shape
               else "validation predictions and validation index of different lengths" if len(b.val_pred) != len(b.val_index)
               else None)
        if why:
            print(f"leaderboard: leaving out {b.name}: {why} ({len(b.val_index)} vs {len(ref.val_index)} "
                  f"validation hands, {b.data_dir} vs {ref.data_dir}); make it again on the runs' data")
        else:
            keep.append(b)
    return keep


def _data_facts(data_dir: str) -> tuple[str, int, int] | str:
    """(labels fingerprint, test crops, training hands) of a data folder, or why it cannot be read."""
    try:
        files = data.find_data(data_dir)
        cache = data.build_cache(files.training)
        with data.TestingFile(files.testing, verbose=False) as tf:
            return labels_fingerprint(cache.kp, cache.vis), len(tf), len(cache)
    except FileNotFoundError as e:
        return str(e).split(";")[0]


def _why_not_current(r: RunPredictions, facts: tuple[str, int, int] | str) -> str | None:
    if isinstance(facts, str):
        return facts
    labels, n_test, n_hands = facts
    if r.labels and r.labels != labels:
        return f"trained on other hands than {r.data_dir} holds now (its training.h5 changed since); train it again"
    if len(r.test_pred) != n_test:
        return (f"{len(r.test_pred)} test predictions for the {n_test} crops of {r.data_dir}/testing.h5; "
                f"python -m lib.predict --run {r.name} makes them again")
    if len(r.val_index) and int(r.val_index.max()) >= n_hands:
        return f"its validation index points beyond the {n_hands} hands of {r.data_dir}; train it again"
    return None


def current(runs: list[RunPredictions]) -> list[RunPredictions]:
    """The runs whose data folder still holds the hands they were trained on and a test set of their
    predictions' length; one line for each one left out (e.g. the synthetic set was rendered again)."""
    facts: dict[str, tuple[str, int, int] | str] = {}
    keep = []
    for r in runs:
        if r.data_dir not in facts:
            facts[r.data_dir] = _data_facts(r.data_dir)
        why = _why_not_current(r, facts[r.data_dir])
        if why:
            print(f"ensemble: leaving out {r.name}: {why}")
        else:
            keep.append(r)
    return keep


def compatible(runs: list[RunPredictions]) -> list[RunPredictions]:
    """The largest group of runs sharing data, validation samples and test set (others are left out)."""
    groups: dict[tuple, list[RunPredictions]] = {}
    for r in runs:
        groups.setdefault((r.data_dir, r.val_index.tobytes(), r.test_pred.shape), []).append(r)
    keep = max(groups.values(), key=len) if groups else []
    for r in runs:
        if r not in keep:
            print(f"ensemble: leaving out {r.name}: other data, validation samples or test set than {keep[0].name}")
    return keep


FOLDS = 5  # the fitted ensemble's validation score: out of fold (weights fitted on the other folds' hands)


def fit_weights(val_preds: list[np.ndarray], gt: np.ndarray) -> np.ndarray:
    """Non-negative model weights summing to 1 that minimise the MSE of the combination on these hands
    (a quadratic programme in the models' Gram matrix, solved by SLSQP)."""
    a = np.stack([p.reshape(-1) for p in val_preds], axis=1).astype(np.float64)
    y = gt.reshape(-1).astype(np.float64)
    g, b, k = a.T @ a / len(y), a.T @ y / len(y), len(val_preds)  # MSE = w'Gw - 2b'w + const
    res = minimize(lambda w: w @ g @ w - 2 * b @ w, np.full(k, 1.0 / k), jac=lambda w: 2 * (g @ w - b),
                   method="SLSQP", bounds=[(0.0, 1.0)] * k,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(k)}],
                   options={"ftol": 1e-12, "maxiter": 500})
    w = np.clip(res.x, 0.0, None)
    return w / w.sum() if w.sum() > 0 else np.full(k, 1.0 / k)


def out_of_fold(val_preds: list[np.ndarray], gt: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """The fitted ensemble's validation predictions, each hand combined with weights fitted on the other
    folds' hands, so that its score compares with the single runs' (fitted on all hands it would flatter
    itself). Fewer hands than 2 per fold: the in-sample fit."""
    n = len(gt)
    if n < 2 * folds:
        return combine(val_preds, fit_weights(val_preds, gt))
    order = np.random.default_rng(0).permutation(n)
    out = np.empty(np.shape(val_preds[0]), dtype=np.float64)
    for part in np.array_split(order, folds):
        rest = np.setdiff1d(order, part)
        out[part] = combine([p[part] for p in val_preds], fit_weights([p[rest] for p in val_preds], gt[rest]))
    return out


def combine(preds: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return np.tensordot(np.asarray(weights), np.stack(preds), axes=1)


def leaderboard(runs: list[RunPredictions], gt: np.ndarray, vis: np.ndarray, solution: np.ndarray | None = None,
                mean_pose: np.ndarray | None = None, baselines: list[RunPredictions] = ()
                ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Validation metrics of every run and of the mean and fitted ensembles; also their test predictions.

    `mean_pose` (21, 2), the training set's mean keypoints, adds the row `baseline_mean_pose`: the
    score of predicting the same pose for every crop, the floor any trained model must beat.
    `baselines` (on the runs' validation samples) add a row each; they are in no ensemble and
    their test predictions are not returned.
    """
    rows, tests = [], {}
    if mean_pose is not None:
        n_test = len(runs[0].test_pred) if runs else 0
        const_val = np.broadcast_to(mean_pose, gt.shape)
        const_test = np.broadcast_to(mean_pose, (n_test, *mean_pose.shape))
        rows.append({"name": BASELINE, "model": "training mean pose", "recipe": "-",
                     **_scores(const_val, gt, vis, const_test, solution)})
    for b in baselines:
        rows.append({"name": b.name, "model": b.model, "recipe": "-", **_scores(b.val_pred, gt, vis, b.test_pred, solution)})
    for r in runs:
        rows.append({"name": r.name, "model": r.model, "recipe": r.recipe, **_scores(r.val_pred, gt, vis, r.test_pred, solution)})
        tests[r.name] = r.test_pred
    if len(runs) > 1:
        vals = [r.val_pred for r in runs]
        w = fit_weights(vals, gt)  # on every validation hand: the weights for the test set
        for name, weights in (("ensemble_mean", np.full(len(runs), 1 / len(runs))), ("ensemble_fitted", w)):
            val = out_of_fold(vals, gt) if name == "ensemble_fitted" else combine(vals, weights)
            test = combine([r.test_pred for r in runs], weights)
            desc = ", ".join(f"{r.name}:{x:.2f}" for r, x in zip(runs, weights) if x > 0.005)
            rows.append({"name": name, "model": desc, "recipe": "-", **_scores(val, gt, vis, test, solution)})
            tests[name] = test
    board = pd.DataFrame(rows).sort_values("kaggle_mse").reset_index(drop=True)
    board.index += 1
    return board, tests


def _scores(val, gt, vis, test, solution) -> dict:
    s = metrics.summary(val, gt, vis)
    out = {k: s[k] for k in LEADERBOARD_COLUMNS}
    if solution is not None:
        out["test_kaggle_mse"] = metrics.kaggle_mse(test, solution)
    return out


def ensemble_and_submit(name: str = "ensemble", data_dir: str | os.PathLike | None = None,
                        runs_dir: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                        baselines_dir: str | os.PathLike | None = None) -> tuple[pd.DataFrame, Path]:
    """Leaderboard of the finished runs (on data_dir, if given) plus ensembles and baselines; writes
    the best run or ensemble as submissions/<name>.csv and the table as leaderboard.csv beside the runs
    folder (outputs/leaderboard.csv for outputs/runs)."""
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"--name: expected a file name for submissions/<name>.csv (no folders), found {name!r}")
    runs = load_runs(runs_dir)
    if data_dir is not None:
        runs = [r for r in runs if Path(r.data_dir).resolve() == Path(data_dir).resolve()]
    runs = compatible(current(runs))
    if not runs:
        raise FileNotFoundError(f"no finished runs with predictions{' on ' + str(data_dir) if data_dir else ''} in "
                                f"{runs_dir or paths.runs()}; train one first (a training notebook, or "
                                f"python -m lib.train then python -m lib.predict)")
    files = data.find_data(runs[0].data_dir)
    cache = data.build_cache(files.training)
    gt, vis = cache.kp[runs[0].val_index], cache.vis[runs[0].val_index]
    solution = read_submission(files.solution) if files.solution else None
    train_mask = np.ones(len(cache), bool)
    train_mask[runs[0].val_index] = False
    baselines = matching_baselines(load_baselines(baselines_dir, files), runs[0])
    board, tests = leaderboard(runs, gt, vis, solution, mean_pose=cache.kp[train_mask].mean(0), baselines=baselines)
    with io.atomic_open(paths.leaderboard(runs_dir), "w", newline="") as f:
        board.to_csv(f, index_label="rank")
    best = board[~board["name"].str.startswith(BASELINE_PREFIX)].iloc[0]["name"]
    out = Path(out_dir or paths.submissions()) / f"{name}.csv"
    write_submission(out, tests[best])
    validate_submission(out, len(tests[best]))
    print(f"{out}: {best} (validation kaggle_mse {board.set_index('name').loc[best, 'kaggle_mse']:.3f})")
    return board, out


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.ensemble", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="ensemble", help="the submission file: submissions/NAME.csv (default: ensemble)")
    ap.add_argument("--runs", default=None, help="runs directory (default: outputs/runs)")
    ap.add_argument("--data-dir", default=None, help="only runs trained on this data directory")
    args = ap.parse_args(argv)
    board, _ = ensemble_and_submit(args.name, args.data_dir, args.runs)
    print(board.to_markdown(floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
