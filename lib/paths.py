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


def data_root() -> Path:
    return Path(os.environ.get(DATA_ENV, REPO / "data"))


def outputs() -> Path:
    return Path(os.environ.get("HANDJOINTS_OUTPUTS", REPO / "outputs"))


def runs() -> Path:
    return outputs() / "runs"


def baselines() -> Path:
    """Off-the-shelf predictions scored beside the runs (e.g. benchmarks.realism baseline)."""
    return outputs() / "baselines"


def leaderboard() -> Path:
    """The validation leaderboard of runs, ensembles and baselines (written by lib.ensemble)."""
    return outputs() / "leaderboard.csv"


def submissions() -> Path:
    return Path(os.environ.get("HANDJOINTS_SUBMISSIONS", REPO / "submissions"))
