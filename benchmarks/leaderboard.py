"""Accuracy leaderboard at an equal training budget: extra (model, recipe) runs beside `make run`'s.

    .venv/bin/python benchmarks/leaderboard.py                        # every model x both recipes, profile auto
    .venv/bin/python benchmarks/leaderboard.py --runs resnet34:modern cpm:modern --profile cpu
    .venv/bin/python benchmarks/leaderboard.py --runs 'hm_resnet18:modern:{"backbone":"resnet34"}@hm_resnet34'

A run spec is MODEL:RECIPE[:MODEL_KWARGS_JSON][@RUN_NAME]. Each run trains with the profile's
budget (cpu: 3 min of training steps each, so the comparison is at equal wall-clock), predicts
with flip TTA, and is skipped when its predictions already exist (the script resumes). Then the
ensemble and `python -m lib.bench accuracy --out BENCHMARKS.md` tabulate everything in outputs/runs.
Not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import bench, ensemble, paths, pipeline, predict, train  # noqa: E402
from lib.models import list_models  # noqa: E402


def parse(spec: str) -> tuple[str, str, dict, str | None]:
    spec, _, name = spec.partition("@")
    model, recipe, *rest = spec.split(":", 2)
    return model, recipe, json.loads(rest[0]) if rest else {}, name or None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", help="run specs (default: every model with paper and modern)")
    ap.add_argument("--profile", default="auto")
    ap.add_argument("--data-dir", default="auto")
    ap.add_argument("--out", default=None, help="markdown file for the accuracy table (e.g. BENCHMARKS.md)")
    a = ap.parse_args()
    profile = pipeline.resolve_profile(a.profile)
    data_dir = pipeline.ensure_data(a.data_dir, profile)
    specs = a.runs or [f"{m}:{r}" for m in list_models() for r in ("paper", "modern")]
    for spec in specs:
        model, recipe, kw, name = parse(spec)
        run = name or f"{model}_{recipe}_{profile}"
        if (paths.runs() / run / "val_metrics.json").exists():
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
    df = bench.bench_accuracy()
    print(bench.markdown(df))
    if a.out:
        text = "\n".join(bench.header("Accuracy leaderboard at equal training budget", sys.argv[1:],
                                      "cuda" if profile == "full" else "cpu",
                                      f"profile {profile}: every run has the same training budget; validation "
                                      "metrics with flip TTA; test = the hidden solution of the synthetic test set",
                                      prog="python benchmarks/leaderboard.py")) + "\n" + bench.markdown(df) + "\n"
        bench.update_section(a.out, "accuracy", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
