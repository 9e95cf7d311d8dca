"""Submission CSVs: write, validate, score, and upload to Kaggle.

    python -m lib.submit validate submissions/x.csv [--test data/testing.h5]
    python -m lib.submit score submissions/x.csv data/solution.csv
    python -m lib.submit kaggle submissions/x.csv -m "message" [--dry-run]
    python -m lib.submit download --out data          # the competition files, with credentials
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lib import cli, metrics
from lib.data import DataError, read_keypoints_csv, write_keypoints_csv

COMPETITION = "mp18-hand-joint-recognition"
COMPETITION_TEST_ROWS = 3_611  # the competition's test crops: Kaggle scores nothing else
# seconds the kaggle CLI may take: a submission (one small CSV) in all; the download (~17 GB) without
# progress, i.e. no output and no byte written: longer than the CLI's own 300-s read timeout and its
# retry's wait, so the CLI retries (and resumes) before this stops it
KAGGLE_TIMEOUT_S = {"download": 600, "submit": 120}


class SubmissionError(ValueError):
    """A submission file that Kaggle would reject or score wrongly."""


class KaggleError(cli.UserError, RuntimeError):
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
    pred = read_submission(submission)
    if len(pred) != len(gt):
        raise SubmissionError(f"{submission}: rows: expected as many as the solution {solution} ({len(gt)}), "
                              f"found {len(pred)}")
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


def check_credentials() -> str:
    """Where the credentials come from, after checking that a credentials file is usable (never reading
    out the secret); KaggleError naming the file otherwise."""
    where = kaggle_credentials()
    if where is None:
        raise KaggleError("no Kaggle credentials: set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, "
                          "or put kaggle.json (or access_token) in ~/.kaggle or $KAGGLE_CONFIG_DIR")
    if where in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME/KAGGLE_KEY"):  # environment variables
        return where
    try:
        text = Path(where).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KaggleError(f"{where}: expected a readable credentials file, found {e}") from e
    if os.path.basename(where) == "access_token":
        if not text.strip():
            raise KaggleError(f"{where}: expected an API token, found an empty file")
        return where
    try:
        obj = json.loads(text)
    except ValueError as e:
        where_in = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        raise KaggleError(f'{where}: expected JSON {{"username": ..., "key": ...}}, found invalid JSON: '
                          f"{getattr(e, 'msg', e)}{where_in}; download a new one from kaggle.com/settings/api") from e
    found = f"keys {sorted(obj)}" if isinstance(obj, dict) else f"a JSON {type(obj).__name__}"
    if not (isinstance(obj, dict) and all(isinstance(obj.get(k), str) and obj[k].strip() for k in ("username", "key"))):
        raise KaggleError(f'{where}: expected JSON with non-empty "username" and "key", found {found}')
    return where


def _meaningful_line(text: str) -> str:
    """The line of a tool's output that says what went wrong: the last one naming an error, else the last one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.lower().startswith("warning")] or lines
    words = ("error", "denied", "forbidden", "unauthorized", "not found", "required", "invalid", "failed",
             "must", "401", "403", "404", "429")
    hits = [line for line in lines if any(w in line.lower() for w in words)]
    line = (hits or lines or ["no output"])[-1]
    return line if len(line) <= 300 else line[:297] + "..."


def _kaggle(args: list[str], dry_run: bool, timeout: float = KAGGLE_TIMEOUT_S["submit"],
            watch: Path | None = None) -> list[str]:
    """Run the kaggle CLI in a subprocess (the package itself exits when credentials are missing).
    With `watch` (a download's folder) a progress bar shows the bytes arriving there and `timeout`
    counts only the seconds without progress; else `timeout` is the whole run's. The CLI's own
    output is kept for the error line either way."""
    cmd = ["kaggle", *args]
    if dry_run:
        print(shlex.join(cmd))
        return cmd
    check_credentials()
    exe = shutil.which("kaggle") or (shutil.which("kaggle", path=os.path.dirname(sys.executable)))
    if exe is None:
        raise KaggleError("the kaggle CLI is not installed in this environment (pip install -r requirements.txt)")
    if watch is not None:
        _run_shown(exe, args, cmd, watch, timeout)
        return cmd
    try:
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise KaggleError(f"{shlex.join(cmd)}: no result within {timeout:g} s (network down or Kaggle busy?); "
                          f"try again later") from e
    except OSError as e:
        raise KaggleError(f"{shlex.join(cmd)}: could not start {exe}: {e.strerror or e}") from e
    if r.returncode != 0:
        raise KaggleError(f"{shlex.join(cmd)} failed (exit {r.returncode}): "
                          f"{_meaningful_line((r.stderr or '') + chr(10) + (r.stdout or ''))}")
    sys.stdout.write(r.stdout)
    return cmd


def _folder_bytes(folder: Path) -> int:
    """The bytes of the files directly in folder (a download's, growing)."""
    total = 0
    with os.scandir(folder) as it:
        for e in it:
            try:
                total += e.stat().st_size if e.is_file() else 0
            except OSError:  # renamed or removed meanwhile
                pass
    return total


def _run_shown(exe: str, args: list[str], cmd: list[str], watch: Path, stall_s: float) -> None:
    """Run the CLI with a progress bar of the bytes arriving in `watch` (shown after 2 s, so a quick
    failure stays one line), stopped when neither its output nor those bytes changed for stall_s seconds."""
    p = subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})  # its "Retrying..." lines count as progress
    tail, last = bytearray(), [time.monotonic()]

    def pump() -> None:  # the CLI's output: its end kept for the error line
        for chunk in iter(lambda: p.stdout.read1(65536), b""):
            last[0] = time.monotonic()
            tail.extend(chunk)
            del tail[:-65536]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    start = size = _folder_bytes(watch)
    bar = tqdm(desc=f"download into {watch}", unit="B", unit_scale=True, unit_divisor=1024, delay=2, mininterval=2)
    try:
        while p.poll() is None:
            time.sleep(min(1.0, stall_s / 5))
            now = _folder_bytes(watch)
            if now != size:
                bar.update(max(0, now - size))
                size, last[0] = now, time.monotonic()
            if time.monotonic() - last[0] > stall_s:
                raise KaggleError(f"{shlex.join(cmd)}: no progress for {stall_s:g} s (no output, no bytes written to "
                                  f"{watch}: network down or Kaggle busy?); run it again later: it resumes the "
                                  f"partial file")
    finally:
        bar.close()
        if p.poll() is None:
            p.kill()
        p.wait()
        reader.join(timeout=5)
    if p.returncode != 0:
        raise KaggleError(f"{shlex.join(cmd)} failed (exit {p.returncode}): "
                          f"{_meaningful_line(tail.decode(errors='replace'))}")
    if size == start:  # nothing arrived: what the CLI said last (e.g. that the files are up to date)
        said = [t.strip() for t in tail.decode(errors="replace").replace("\r", "\n").splitlines() if t.strip()]
        print(said[-1] if said else f"{shlex.join(cmd)}: nothing downloaded")


def kaggle_submit(path: str | os.PathLike, message: str, dry_run: bool = False, rows: int | None = None) -> list[str]:
    """Validate a submission (COMPETITION_TEST_ROWS rows unless `rows` says otherwise), then submit it with
    `kaggle competitions submit`; returns the command."""
    n = validate_submission(path, rows)
    if rows is None and n != COMPETITION_TEST_ROWS:
        raise SubmissionError(f"{path}: expected the competition's {COMPETITION_TEST_ROWS:,} test crops, found {n} rows "
                              f"(predictions for the synthetic set? Kaggle scores only the competition's testing.h5: "
                              f"`make download`, then `make run`)")
    return _kaggle(["competitions", "submit", COMPETITION, "-f", str(path), "-m", message], dry_run,
                   KAGGLE_TIMEOUT_S["submit"])


def kaggle_download(out_dir: str | os.PathLike = "data", dry_run: bool = False) -> Path:
    """Download and unpack the competition files into out_dir (training.h5, testing.h5). Only the
    competition's archive is unpacked (and then removed): other zips there (RHD's own) stay as they are."""
    out = Path(out_dir)
    if not dry_run:
        out.mkdir(parents=True, exist_ok=True)
    _kaggle(["competitions", "download", COMPETITION, "-p", str(out)], dry_run, KAGGLE_TIMEOUT_S["download"],
            watch=None if dry_run else out)
    if dry_run:
        return out
    z = out / f"{COMPETITION}.zip"
    if z.exists():
        try:
            with zipfile.ZipFile(z) as f:
                f.extractall(out)
        except zipfile.BadZipFile as e:
            raise KaggleError(f"{z}: expected a zip archive, found {e} (an interrupted download?); "
                              f"delete it and download again") from e
        z.unlink()
    missing = [n for n in ("training.h5", "testing.h5") if not (out / n).is_file()]
    if missing:
        raise KaggleError(f"{out}: expected {' and '.join(missing)} after the download, found "
                          f"{sorted(p.name for p in out.iterdir())[:8] if out.is_dir() else 'no folder'}")
    return out


def main(argv: list[str] | None = None) -> int:
    """The command line; an expected error is one `error: ...` line and exit code 2 (lib.cli)."""
    return cli.run(_main, argv)


def _main(argv: list[str] | None = None) -> int:
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
    if getattr(args, "rows", None) is not None and args.rows < 1:
        raise SubmissionError(f"--rows: expected a positive row count, found {args.rows}")
    if args.cmd == "kaggle":
        kaggle_submit(args.file, args.message, args.dry_run, args.rows)
    elif args.cmd == "download":
        out = kaggle_download(args.out, args.dry_run)
        if not args.dry_run:
            print(f"competition files in {out}")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
