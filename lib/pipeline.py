"""The main job: data, then every notebook headless with papermill, then a submission.

    python -m lib.pipeline                          # = make run (profile auto: full on CUDA, else cpu)
    python -m lib.pipeline --profile smoke          # seconds-scale check of the whole chain
    python -m lib.pipeline --profile gpu            # a short GPU rental: 40k images, the modern model only
    python -m lib.pipeline --only data              # = make data
    python -m lib.pipeline --only 04_resnet34 08_ensemble_submit
    python -m lib.pipeline --skip 03_irv2

Executed notebooks go to outputs/notebooks/, runs to outputs/runs/, the submission to submissions/.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

import pandas as pd

from lib import cli, paths
from lib.config import PROFILES, TrainConfig, ensure_data, resolve_profile

REPO = paths.REPO
NOTEBOOK_DIR = REPO / "notebooks"
TRAINING_NOTEBOOKS = ("03_irv2", "04_resnet34", "05_cpm", "06_inception_v3", "07_hm_resnet18")


def notebooks() -> list[str]:
    """The numbered notebooks, in order."""
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


class NotebookError(cli.UserError, RuntimeError):
    """A notebook stopped on an expected error (bad input, a full disk, ...): its one line, the notebook's name
    and where its executed copy is."""


def _expected_error_names() -> set[str]:
    """The class names of the errors lib.cli prints as one line (builtins and the project's), as papermill
    reports a notebook's error by its class name only."""
    from lib import data, runs, submit  # noqa: F401  (the project's error classes)

    def walk(c: type) -> list[type]:
        return [c] + [s for sub in c.__subclasses__() for s in walk(sub)]

    return {c.__name__ for base in cli.EXPECTED for c in walk(base)
            if c.__module__ == "builtins" or c.__module__.split(".")[0] in ("lib", "benchmarks")}


def run_notebook(name: str, parameters: dict, output_dir: Path | None = None) -> Path:
    """Execute notebooks/<name>.ipynb headless into outputs/notebooks/, streaming its output. A cell that
    stops on an expected error raises NotebookError with its one line; a bug keeps papermill's traceback."""
    import papermill as pm

    out = (output_dir or paths.outputs() / "notebooks") / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"), str(out), parameters=parameters,
                            cwd=str(NOTEBOOK_DIR), log_output=True, progress_bar=False, kernel_name="python3")
    except pm.PapermillExecutionError as e:
        if e.ename in _expected_error_names():
            line = re.sub(r"^\[Errno \d+\] ", "", "; ".join(s.strip() for s in str(e.evalue).splitlines() if s.strip()))
            raise NotebookError(f"{name}: {line} (cell In [{e.exec_count}] of {out})") from e
        raise
    return out


def select_steps(profile: str, only: list[str] | None = None, skip: list[str] | None = None) -> list[str]:
    """The steps a run takes: data and the notebooks, less --skip, only --only; a profile that names
    its training notebooks (gpu: the modern model's) leaves out the others unless --only names them."""
    steps = ["data"] + notebooks()
    unknown = (set(only or []) | set(skip or [])) - set(steps)
    if unknown:
        raise ValueError(f"--only/--skip: expected names among {steps}, found {sorted(unknown)}")
    selected = [s for s in steps if (not only or s in only) and s not in (skip or [])]
    keep = PROFILES[resolve_profile(profile)].get("notebooks")
    if keep and not only:
        selected = [s for s in selected if s not in TRAINING_NOTEBOOKS or s in keep]
    if not selected:
        raise ValueError(f"--only/--skip: expected at least one step left to run, found none (only {only}, skip {skip})")
    return selected


def set_aside_stale_runs(data_dir: Path, runs_dir: Path | None = None) -> None:
    """Runs trained on data_dir before its hands changed (e.g. a new renderer re-rendered the synthetic
    default) would stop their resumed notebook with an error: they are kept under outputs/runs/stale/
    and trained again, with one line each."""
    from lib import data
    from lib.runs import labels_fingerprint, set_aside_stale
    cache = data.build_cache(data.find_data(data_dir).training)  # the cache the training notebooks read
    for run, dest in set_aside_stale(data_dir, labels_fingerprint(cache.kp, cache.vis), runs_dir):
        print(f"{run.name}: trained on other hands than {data_dir} holds now; kept as {dest}, trained again",
              flush=True)


def run(profile: str = "auto", only: list[str] | None = None, skip: list[str] | None = None,
        data_dir: str = "auto") -> pd.DataFrame:
    """Data, then the selected notebooks in order; returns the timing table."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("papermill").setLevel(logging.INFO)
    profile = resolve_profile(profile)
    selected = select_steps(profile, only, skip)
    paths.absolute_envs()  # the notebooks run in notebooks/: relative folders would point elsewhere there
    timings = []
    resolved = None
    for step in selected:
        t = time.perf_counter()
        print(f"\n=== {step} (profile {profile}) ===", flush=True)
        if step == "data" or resolved is None:
            resolved = ensure_data(data_dir, profile).absolute()
            if any(s in TRAINING_NOTEBOOKS for s in selected):
                set_aside_stale_runs(resolved)
        if step != "data":
            run_notebook(step, {"profile": profile, "data_dir": str(resolved)})
        timings.append({"step": step, "seconds": round(time.perf_counter() - t, 1)})
    return pd.DataFrame(timings)


def summary() -> str:
    """The leaderboard and where the files are, after a run."""
    lines = []
    board = paths.leaderboard()
    if board.exists():
        lines += [f"Validation leaderboard ({board}):", pd.read_csv(board).to_markdown(index=False, floatfmt=".3f")]
    lines += [f"submission: {p}" for p in sorted(paths.submissions().glob("*.csv"))]
    lines += [f"executed notebooks: {paths.outputs() / 'notebooks'}/", f"runs: {paths.runs()}/"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="auto", help="full | gpu | cpu | smoke | auto (full on CUDA, else cpu)")
    ap.add_argument("--only", nargs="+", help="steps to run: data and notebook names")
    ap.add_argument("--skip", nargs="+", help="steps to leave out")
    ap.add_argument("--data-dir", default="auto", help=TrainConfig.field_help()["data_dir"])
    args = ap.parse_args(argv)
    t = time.perf_counter()
    try:
        timings = run(args.profile, args.only, args.skip, args.data_dir)
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
