"""The main job: data, then every notebook headless with papermill, then a submission.

    python -m lib.pipeline                          # = make run (profile auto: full on CUDA, else cpu)
    python -m lib.pipeline --profile smoke          # seconds-scale check of the whole chain
    python -m lib.pipeline --only data              # = make data
    python -m lib.pipeline --only 04_resnet34 08_ensemble_submit
    python -m lib.pipeline --skip 03_irv2

Executed notebooks go to outputs/notebooks/, runs to outputs/runs/, the submission to submissions/.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from lib import data, io, paths

REPO = paths.REPO
NOTEBOOK_DIR = REPO / "notebooks"
# synthetic default per profile: (training images, evaluation images), rendered by lib.synth
SYNTH_SIZES = {"smoke": (40, 12), "cpu": (4000, 300), "full": (40000, 2700)}
STAMP = "synthetic.json"  # the sizes the synthetic folder was built with
TRAINING_NOTEBOOKS = ("03_irv2", "04_resnet34", "05_cpm", "06_inception_v3", "07_hm_resnet18")


def notebooks() -> list[str]:
    """The numbered notebooks, in order."""
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def resolve_profile(profile: str) -> str:
    if profile == "auto":
        import torch
        return "full" if torch.cuda.is_available() else "cpu"
    if profile not in SYNTH_SIZES:
        raise ValueError(f"profile: expected one of {sorted(SYNTH_SIZES) + ['auto']}, found {profile!r}")
    return profile


def synthetic_dir(profile: str) -> Path:
    return paths.data_root() / ("synthetic" if profile == "cpu" else f"synthetic-{profile}")


def ensure_data(data_dir: str | os.PathLike = "auto", profile: str = "auto", workers: int | None = None) -> Path:
    """The competition files to use: data_dir, else the real files in data/, else the synthetic default
    for the profile (rendered and built on first use, with a notice)."""
    if str(data_dir) != "auto":
        return data.find_data(data_dir).root
    real = paths.data_root()
    if (real / "training.h5").exists() and (real / "testing.h5").exists():
        print(f"data: the real competition files in {real}")
        return real
    profile = resolve_profile(profile)
    out = synthetic_dir(profile)
    n_train, n_eval = SYNTH_SIZES[profile]
    from lib import synth

    stamp = {"training_images": n_train, "evaluation_images": n_eval, "seeds": [0, 1],
             "renderer": synth.RENDERER_VERSION}
    have = json.loads((out / STAMP).read_text()) if (out / STAMP).exists() else None
    if have == stamp and all((out / f).exists() for f in ("training.h5", "testing.h5", "solution.csv")):
        print(f"data: synthetic default in {out} (no real competition files in {real})")
        return out
    if have is not None and have != stamp:
        print(f"data: {out} holds another synthetic set ({have}); rendering it again as {stamp}", flush=True)
        shutil.rmtree(out / "rhd", ignore_errors=True)

    workers = workers or os.cpu_count() or 1
    print(f"data: no real competition files in {real}; rendering the synthetic default "
          f"({n_train} training + {n_eval} evaluation images, profile {profile}) into {out}", flush=True)
    t = time.perf_counter()
    (out / STAMP).unlink(missing_ok=True)
    for split, n, seed in (("training", n_train, 0), ("evaluation", n_eval, 1)):
        pkl = out / "rhd" / split / f"anno_{split}.pickle"
        if pkl.exists() and len(data.read_rhd_annotations(out / "rhd", split)) == n:
            continue  # this split finished before the run was stopped
        try:  # resumes a killed render of the same size
            synth.render_dataset(out / "rhd", split, n, seed=seed, workers=workers, verbose=True)
        except FileExistsError:  # a finished render of another size
            synth.render_dataset(out / "rhd", split, n, seed=seed, workers=workers, overwrite=True, verbose=True)
    summary = data.build_competition(out / "rhd", out, overwrite=True)
    io.write_json(out / STAMP, stamp)
    print(f"data: {summary['train_hands']} training hands, {summary['test_hands']} test crops "
          f"in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def run_notebook(name: str, parameters: dict, output_dir: Path | None = None) -> Path:
    """Execute notebooks/<name>.ipynb headless into outputs/notebooks/, streaming its output."""
    import papermill as pm

    out = (output_dir or paths.outputs() / "notebooks") / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(out), parameters=parameters,
                        cwd=str(NOTEBOOK_DIR), log_output=True, progress_bar=False, kernel_name="python3")
    return out


def run(profile: str = "auto", only: list[str] | None = None, skip: list[str] | None = None,
        data_dir: str = "auto") -> pd.DataFrame:
    """Data, then the selected notebooks in order; returns the timing table."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("papermill").setLevel(logging.INFO)
    profile = resolve_profile(profile)
    steps = ["data"] + notebooks()
    unknown = (set(only or []) | set(skip or [])) - set(steps)
    if unknown:
        raise ValueError(f"--only/--skip: expected names among {steps}, found {sorted(unknown)}")
    selected = [s for s in steps if (not only or s in only) and s not in (skip or [])]
    timings = []
    resolved = None
    for step in selected:
        t = time.perf_counter()
        print(f"\n=== {step} (profile {profile}) ===", flush=True)
        if step == "data" or resolved is None:
            resolved = ensure_data(data_dir, profile)
        if step != "data":
            run_notebook(step, {"profile": profile, "data_dir": str(resolved)})
        timings.append({"step": step, "seconds": round(time.perf_counter() - t, 1)})
    return pd.DataFrame(timings)


def summary() -> str:
    """The leaderboard and where the files are, after a run."""
    lines = []
    board = paths.outputs() / "leaderboard.csv"
    if board.exists():
        lines += [f"Validation leaderboard ({board}):", pd.read_csv(board).to_markdown(index=False, floatfmt=".3f")]
    lines += [f"submission: {p}" for p in sorted(paths.submissions().glob("*.csv"))]
    lines += [f"executed notebooks: {paths.outputs() / 'notebooks'}/", f"runs: {paths.runs()}/"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="auto", help="full | cpu | smoke | auto (full on CUDA, else cpu)")
    ap.add_argument("--only", nargs="*", help="steps to run: data and notebook names")
    ap.add_argument("--skip", nargs="*", help="steps to leave out")
    ap.add_argument("--data-dir", default="auto")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    try:
        timings = run(args.profile, args.only, args.skip, args.data_dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # papermill's execution error names the failing cell
        if type(e).__name__ == "PapermillExecutionError":
            print(f"error: a notebook failed; its executed copy in {paths.outputs() / 'notebooks'} shows the cell:\n{e}",
                  file=sys.stderr)
            return 1
        raise
    print("\n" + summary())
    print("\n" + timings.to_markdown(index=False))
    print(f"total: {(time.perf_counter() - t) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
