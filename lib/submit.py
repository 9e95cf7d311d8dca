"""Submission CSVs: write, validate, score, and upload to Kaggle.

    python -m lib.submit validate submissions/x.csv [--test data/testing.h5]
    python -m lib.submit score submissions/x.csv data/solution.csv
    python -m lib.submit kaggle submissions/x.csv -m "message" [--dry-run]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lib import metrics
from lib.data import COLUMNS, write_keypoints_csv
from lib.joints import NUM_JOINTS

COMPETITION = "mp18-hand-joint-recognition"


class SubmissionError(ValueError):
    """A submission file that Kaggle would reject or score wrongly."""


def write_submission(path: str | os.PathLike, kp: np.ndarray) -> Path:
    """Write (N,21,2) crop-pixel keypoints as a submission CSV (atomically); returns the path."""
    try:
        return write_keypoints_csv(path, kp)
    except ValueError as e:
        raise SubmissionError(str(e)) from e


def read_submission(path: str | os.PathLike, n_rows: int | None = None) -> np.ndarray:
    """Read and validate a submission CSV; returns (N,21,2). n_rows: the test set size if known."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such submission file")
    try:
        df = pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise SubmissionError(f"{path}: not a readable CSV: {e}") from e
    if list(df.columns) != COLUMNS:
        extra = [c for c in df.columns if c not in COLUMNS][:3]
        missing = [c for c in COLUMNS if c not in df.columns][:3]
        raise SubmissionError(f"{path}: header: expected {COLUMNS[0]},{COLUMNS[1]},...,{COLUMNS[-1]} "
                              f"({len(COLUMNS)} columns), found {len(df.columns)} columns"
                              f"{'; unexpected ' + str(extra) if extra else ''}"
                              f"{'; missing ' + str(missing) if missing else ''}")
    if n_rows is not None and len(df) != n_rows:
        raise SubmissionError(f"{path}: rows: expected {n_rows} (one per test crop), found {len(df)}")
    ids = pd.to_numeric(df["Id"], errors="coerce")
    if not np.array_equal(ids.to_numpy(), np.arange(len(df))):
        raise SubmissionError(f"{path}: Id: expected 0..{len(df) - 1} in order, found {df['Id'].head(3).tolist()}...")
    values = df[COLUMNS[1:]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise SubmissionError(f"{path}: row {r} column '{COLUMNS[1 + c]}': expected a finite number, "
                              f"found {df.iloc[r, 1 + c]!r} ({bad.sum()} bad cells)")
    return values.reshape(len(df), NUM_JOINTS, 2)


def validate_submission(path: str | os.PathLike, n_rows: int | None = None) -> int:
    """Raise SubmissionError unless the file is a valid submission; returns its row count."""
    return len(read_submission(path, n_rows))


def score(submission: str | os.PathLike, solution: str | os.PathLike) -> dict[str, float]:
    """Score a submission against a solution file (the ground truth in submission format)."""
    gt = read_submission(solution)
    pred = read_submission(submission, len(gt))
    return {k: metrics.summary(pred, gt)[k] for k in ("kaggle_mse", "epe", "pck@2px")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.submit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check a submission file")
    v.add_argument("file")
    v.add_argument("--rows", type=int, help="expected rows (default: from --test if given)")
    v.add_argument("--test", help="testing.h5, to take the expected row count from")
    s = sub.add_parser("score", help="score a submission against a solution.csv")
    s.add_argument("file")
    s.add_argument("solution")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "validate":
            rows = args.rows
            if rows is None and args.test:
                from lib.data import TestingFile
                with TestingFile(args.test, verbose=False) as tf:
                    rows = len(tf)
            n = validate_submission(args.file, rows)
            print(f"{args.file}: valid, {n} rows")
        elif args.cmd == "score":
            for k, val in score(args.file, args.solution).items():
                print(f"{k:>10}: {val:.4f}")
    except (SubmissionError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
