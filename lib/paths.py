"""Where the repo reads and writes; environment variables move them (tests use temporary dirs).

HANDJOINTS_DATA         data root (default: data/): real competition files, synthetic sets, caches
HANDJOINTS_OUTPUTS      outputs root (default: outputs/): runs/, baselines/, notebooks/, eda/, leaderboard.csv
HANDJOINTS_SUBMISSIONS  submission CSVs (default: submissions/)
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_ENV = "HANDJOINTS_DATA"
ENVS = (DATA_ENV, "HANDJOINTS_OUTPUTS", "HANDJOINTS_SUBMISSIONS")


def _env_dir(name: str, default: Path) -> Path:
    """A folder from the environment, relative ones taken from the current directory."""
    return Path(os.environ.get(name) or default).absolute()


def absolute_envs() -> None:
    """Make relative HANDJOINTS_* folders absolute in os.environ, so that child processes started in
    another directory (the notebooks run in notebooks/) read and write the same folders."""
    for name in ENVS:
        if os.environ.get(name):
            os.environ[name] = str(Path(os.environ[name]).absolute())


def data_root() -> Path:
    return _env_dir(DATA_ENV, REPO / "data")


def outputs() -> Path:
    return _env_dir("HANDJOINTS_OUTPUTS", REPO / "outputs")


def runs() -> Path:
    return outputs() / "runs"


def baselines() -> Path:
    """Off-the-shelf predictions scored beside the runs (e.g. benchmarks.realism baseline)."""
    return outputs() / "baselines"


def leaderboard(runs_dir: str | os.PathLike | None = None) -> Path:
    """The validation leaderboard of runs, ensembles and baselines (written by lib.ensemble): beside
    the runs folder it ranks (outputs/ for outputs/runs)."""
    return (Path(runs_dir).absolute().parent if runs_dir is not None else outputs()) / "leaderboard.csv"


def submissions() -> Path:
    return _env_dir("HANDJOINTS_SUBMISSIONS", REPO / "submissions")
