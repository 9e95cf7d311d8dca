"""Accuracy: the table of finished runs, and the leaderboard runner that trains extra (model, recipe)
runs at an equal budget beside `make run`'s before tabulating.

A leaderboard run spec is MODEL:RECIPE[:MODEL_KWARGS_JSON][@RUN_NAME], e.g.

    python -m benchmarks leaderboard                                   # every model x both recipes, profile auto
    python -m benchmarks leaderboard --runs resnet34:modern cpm:modern --profile cpu
    python -m benchmarks leaderboard --runs 'hm_resnet18:modern:{"backbone":"resnet34"}@hm_resnet34'

Each run trains with the profile's budget (cpu: 2.5 min of training steps each, so the comparison
is at equal wall-clock), predicts with flip TTA, and is skipped when its metrics already exist
(the runner resumes). Then the ensemble and the accuracy table cover everything in outputs/runs.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd

from lib import paths
from lib.config import RECIPES
from lib.runs import Run, list_runs


def bench_accuracy(runs_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The finished runs (val metrics, training time, epochs, test MSE when the solution is known),
    plus the ensembles and baselines of outputs/leaderboard.csv."""
    rows = []
    for run in list_runs(runs_dir):
        if not run.metrics_path.exists():
            continue
        m, cfg, log = run.metrics(), run.config(), run.history()
        rows.append({"run": run.name, "model": cfg["model"], "recipe": cfg["recipe"],
                     "train min": log["elapsed_s"].iloc[-1] / 60 if len(log) else None,
                     "epochs": (log["step"].iloc[-1] * cfg.get("batch_size", 0) / max(cfg.get("train_size", 1), 1))
                     if len(log) and "train_size" in cfg else None,
                     "train img/s": log["img_s"].mean() if len(log) else None,
                     "kaggle_mse": m["kaggle_mse"], "epe": m["epe"], "pck@2px": m["pck@2px"], "auc": m["auc"],
                     "test kaggle_mse": m.get("test_kaggle_mse")})
    df = pd.DataFrame(rows)
    board = paths.leaderboard(runs_dir)  # the ensembles of these runs (beside their folder)
    if board.exists():
        lb = pd.read_csv(board)
        for _, r in lb[lb["name"].str.startswith("ensemble") | lb["name"].str.startswith("baseline_")].iterrows():
            n_runs = str(r["model"]).count(":")
            model = f"{n_runs} runs" if n_runs else r["model"]
            df = pd.concat([df, pd.DataFrame([{"run": r["name"], "model": model, "recipe": "-",
                                               "kaggle_mse": r["kaggle_mse"], "epe": r["epe"],
                                               "pck@2px": r["pck@2px"], "auc": r["auc"],
                                               "test kaggle_mse": r.get("test_kaggle_mse")}])],
                           ignore_index=True)
    return df.sort_values("kaggle_mse").reset_index(drop=True) if len(df) else df


def parse_spec(spec: str) -> tuple[str, str, dict, str | None]:
    """MODEL:RECIPE[:MODEL_KWARGS_JSON][@RUN_NAME] -> (model, recipe, model_kwargs, run name or None)."""
    spec, _, name = spec.partition("@")
    model, sep, rest = spec.partition(":")
    recipe, _, kw = rest.partition(":")
    if not sep or not model or not recipe:
        raise ValueError(f"run spec: expected MODEL:RECIPE[:MODEL_KWARGS_JSON][@RUN_NAME], found {spec!r}")
    try:
        kwargs = json.loads(kw) if kw else {}
    except ValueError as e:
        kwargs = e
    if not isinstance(kwargs, dict):
        raise ValueError(f"run spec {spec!r}: MODEL_KWARGS_JSON: expected a JSON object, found {kw!r}")
    return model, recipe, kwargs, name or None


def check_specs(specs: list[str]) -> list[tuple[str, str, dict, str | None]]:
    """parse_spec for each, and known model and recipe names (ValueError naming the spec otherwise)."""
    from lib.models import list_models

    parsed = [parse_spec(s) for s in specs]
    for spec, (model, recipe, _, _) in zip(specs, parsed):
        if model not in list_models():
            raise ValueError(f"run spec {spec!r}: unknown model {model!r}; valid names: {', '.join(list_models())}")
        if recipe not in RECIPES:
            raise ValueError(f"run spec {spec!r}: unknown recipe {recipe!r}; valid names: {', '.join(RECIPES)}")
    return parsed


def run_leaderboard(specs: list[str] | None = None, profile: str = "auto", data_dir: str = "auto") -> tuple[str, Path]:
    """Train, predict (flip TTA) and ensemble the runs of specs (default: every model x both recipes)
    that have no metrics yet; returns (the resolved profile, the data directory)."""
    from lib import ensemble, predict, train
    from lib.config import ensure_data, resolve_profile
    from lib.models import list_models

    specs = specs or [f"{m}:{r}" for m in list_models() for r in RECIPES]
    parsed = check_specs(specs)  # a bad spec fails before any data or training
    profile = resolve_profile(profile)
    data_dir = ensure_data(data_dir, profile)
    for model, recipe, kw, name in parsed:
        run = name or f"{model}_{recipe}_{profile}"
        if Run(paths.runs() / run).metrics_path.exists():
            print(f"{run}: done already", flush=True)
            continue
        t = time.perf_counter()
        run_dir = train.fit(model=model, recipe=recipe, profile=profile, data_dir=str(data_dir), run=run,
                            model_kwargs=kw)
        t_train = time.perf_counter() - t
        res = predict.predict_run(run_dir)
        print(f"{run}: kaggle_mse {res['kaggle_mse']:.2f} (train {t_train / 60:.1f} min, "
              f"predict {(time.perf_counter() - t - t_train) / 60:.1f} min)", flush=True)
    ensemble.ensemble_and_submit("ensemble_all", data_dir)
    return profile, Path(data_dir)
