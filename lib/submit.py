"""Submission CSVs: write, validate, score, and upload to Kaggle.

    python -m lib.submit validate submissions/x.csv [--test data/testing.h5]
    python -m lib.submit score submissions/x.csv data/solution.csv
    python -m lib.submit kaggle submissions/x.csv -m "message" [--dry-run]
    python -m lib.submit download --out data          # the competition files, with credentials
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from lib import metrics
from lib.data import DataError, read_keypoints_csv, write_keypoints_csv

COMPETITION = "mp18-hand-joint-recognition"


class SubmissionError(ValueError):
    """A submission file that Kaggle would reject or score wrongly."""


class KaggleError(RuntimeError):
    """The kaggle CLI can't be used (no credentials, not installed) or it failed."""


def write_submission(path: str | os.PathLike, kp: np.ndarray) -> Path:
    """Write (N,21,2) crop-pixel keypoints as a submission CSV (atomically); returns the path."""
    try:
        return write_keypoints_csv(path, kp)
    except ValueError as e:
        raise SubmissionError(str(e)) from e


def read_submission(path: str | os.PathLike, n_rows: int | None = None) -> np.ndarray:
    """Read and validate a submission CSV (lib.data.read_keypoints_csv); returns (N,21,2).
    n_rows: the test set size if known."""
    try:
        return read_keypoints_csv(path, n_rows)
    except DataError as e:
        raise SubmissionError(str(e)) from e


def validate_submission(path: str | os.PathLike, n_rows: int | None = None) -> int:
    """Raise SubmissionError unless the file is a valid submission; returns its row count."""
    return len(read_submission(path, n_rows))


def score(submission: str | os.PathLike, solution: str | os.PathLike) -> dict[str, float]:
    """Score a submission against a solution file (the ground truth in submission format)."""
    gt = read_submission(solution)
    pred = read_submission(submission, len(gt))
    return {k: metrics.summary(pred, gt)[k] for k in ("kaggle_mse", "epe", "pck@2px")}


# --------------------------------------------------------------------------- Kaggle


def kaggle_credentials() -> str | None:
    """Where Kaggle credentials would come from (never the secret itself), or None."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    dirs = [os.environ.get("KAGGLE_CONFIG_DIR"), os.path.expanduser("~/.kaggle"),
            os.path.join(os.environ.get("XDG_CONFIG_HOME", os.path.expanduser("~/.config")), "kaggle")]
    for d in filter(None, dirs):
        for f in ("kaggle.json", "access_token"):
            if os.path.isfile(os.path.join(d, f)):
                return os.path.join(d, f)
    return None


def _kaggle(args: list[str], dry_run: bool) -> list[str]:
    """Run the kaggle CLI (imported lazily: the package itself exits when credentials are missing)."""
    cmd = ["kaggle", *args]
    if dry_run:
        print(shlex.join(cmd))
        return cmd
    if kaggle_credentials() is None:
        raise KaggleError("no Kaggle credentials: set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, "
                          "or put kaggle.json (or access_token) in ~/.kaggle or $KAGGLE_CONFIG_DIR")
    exe = shutil.which("kaggle") or (shutil.which("kaggle", path=os.path.dirname(sys.executable)))
    if exe is None:
        raise KaggleError("the kaggle CLI is not installed in this environment (pip install -r requirements.txt)")
    r = subprocess.run([exe, *args], capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    if r.returncode != 0:
        raise KaggleError(f"{shlex.join(cmd)} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}")
    return cmd


def kaggle_submit(path: str | os.PathLike, message: str, dry_run: bool = False, rows: int | None = None) -> list[str]:
    """Validate a submission, then submit it with `kaggle competitions submit`; returns the command."""
    validate_submission(path, rows)
    return _kaggle(["competitions", "submit", COMPETITION, "-f", str(path), "-m", message], dry_run)


def kaggle_download(out_dir: str | os.PathLike = "data", dry_run: bool = False) -> Path:
    """Download and unpack the competition files into out_dir (training.h5, testing.h5)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _kaggle(["competitions", "download", COMPETITION, "-p", str(out)], dry_run)
    for z in ([] if dry_run else sorted(out.glob("*.zip"))):
        with zipfile.ZipFile(z) as f:
            f.extractall(out)
        z.unlink()
    return out


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
    k = sub.add_parser("kaggle", help="validate, then kaggle competitions submit")
    k.add_argument("file")
    k.add_argument("-m", "--message", required=True)
    k.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    k.add_argument("--rows", type=int)
    d = sub.add_parser("download", help="kaggle competitions download, unpacked into --out")
    d.add_argument("--out", default="data")
    d.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "kaggle":
            kaggle_submit(args.file, args.message, args.dry_run, args.rows)
        elif args.cmd == "download":
            print(f"competition files in {kaggle_download(args.out, args.dry_run)}")
        elif args.cmd == "validate":
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
    except (SubmissionError, KaggleError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
