"""A run: one directory of outputs/runs/ and every file in it, named once.

    from lib.runs import Run, list_runs
    run = Run.find("resnet34_paper_cpu")        # a name under outputs/runs, or a directory
    run.config()["model"], run.history().tail(), run.metrics()["kaggle_mse"]
    val_index, val_pred, test_pred = run.predictions()

Layout (train writes the first five, predict the rest, viz the pictures):

    config.json      the resolved TrainConfig (+ world_size, torch, train_size, val_size)
    log.csv          one row per epoch: losses and every metric of lib.metrics
    curve.csv        the learning curve: every validation (epoch ends, and every --eval-every steps)
    last.pt          the full checkpoint (model, EMA, optimizer, scaler, RNG, loop state)
    best.pt          the same without optimizer and scaler, at the best validation kaggle_mse
    val_index.npy    the validation samples (crop-cache indices)
    val_pred.npy     validation predictions (N, 21, 2), test_pred.npy: test predictions
    val_metrics.json the validation scores of val_pred (+ test score when the solution is known)
    per_joint.csv    per-joint validation errors
    submission.csv   test_pred as a Kaggle submission
    curves.png, worst.png
    .lock            held (flock) by the process training or predicting in the run, with its pid

Every write is atomic (lib.io). A fresh start of a run name removes every file of the old run;
predictions count only while val_metrics.json names the best.pt they were made with. Runs of a
data directory whose hands have since changed (a new render, other files) are kept whole under
outputs/runs/stale/ by `set_aside_stale` (make run does this before training again).

A checkpoint is a dict with "model", "ema" (None without EMA),
"config" and, in last.pt, "optimizer", "scaler", "torch_rng", "state"; `checkpoint_weights` is the
one rule for which weights a trained model uses: the EMA weights when the run kept them (those
are the ones validation scored), else the raw ones.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from lib import io, paths
from lib.cli import UserError

CHECKPOINTS = ("last", "best")
LOCK = ".lock"


class RunInUse(UserError, RuntimeError):
    """Another process is training or predicting in this run directory."""


def labels_fingerprint(kp: np.ndarray, vis: np.ndarray) -> str:
    """Identity of the labelled hands a run trains and validates on (order included): another
    training.h5, even of the same size, gives another fingerprint; a copy of the same one does not."""
    h = hashlib.sha1(np.ascontiguousarray(kp, np.float32).tobytes())
    h.update(np.ascontiguousarray(vis).astype(np.uint8).tobytes())
    return f"{len(kp)}:{h.hexdigest()[:16]}"


def read_checkpoint(path: str | os.PathLike, model_name: str | None = None) -> dict:
    """A checkpoint of lib.train, loaded safely (weights_only); a corrupt file or another model's is refused."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means a bad file
        raise ValueError(f"{path}: not a readable checkpoint (corrupt or not ours): {e}") from e
    if not is_checkpoint(state):
        raise ValueError(f"{path}: not a checkpoint of lib.train (expected keys 'model' and 'config')")
    found = state["config"].get("model")
    if model_name is not None and found != model_name:
        raise ValueError(f"{path}: a checkpoint of model {found!r}, expected {model_name!r}")
    return state


def is_checkpoint(obj: object) -> bool:
    """Whether a loaded object is a training checkpoint (not a bare state dict)."""
    return isinstance(obj, dict) and isinstance(obj.get("model"), dict) and isinstance(obj.get("config"), dict)


def checkpoint_weights(state: dict) -> dict[str, torch.Tensor]:
    """The weights a trained model uses: EMA when the run kept it (validation scored those), else raw."""
    return state["ema"] if state.get("ema") is not None else state["model"]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not readable JSON (truncated or edited?): {e}") from e


def _read_npy(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return np.load(path)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy array (truncated?): {e}") from e


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (ValueError, pd.errors.ParserError) as e:
        raise ValueError(f"{path}: not a readable CSV (truncated?): {e}") from e


def _write_csv(path: Path, rows: list[dict]) -> None:
    with io.atomic_open(path, "w", newline="") as f:
        pd.DataFrame(rows).to_csv(f, index=False)


class Run:
    """One run directory: its files, config, history, checkpoints, predictions and metrics."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.name = self.dir.name

    @classmethod
    def find(cls, name_or_dir: str | os.PathLike, runs_dir: str | os.PathLike | None = None) -> "Run":
        """A run by directory, or by name under runs_dir (default outputs/runs)."""
        p = Path(name_or_dir)
        return cls(p if p.is_dir() else Path(runs_dir or paths.runs()) / str(name_or_dir))

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    def __fspath__(self) -> str:
        return str(self.dir)

    # ---------------------------------------------------------------- files
    def file(self, name: str) -> Path:
        return self.dir / name

    config_path = property(lambda self: self.dir / "config.json")
    log_path = property(lambda self: self.dir / "log.csv")
    curve_path = property(lambda self: self.dir / "curve.csv")
    val_index_path = property(lambda self: self.dir / "val_index.npy")
    val_pred_path = property(lambda self: self.dir / "val_pred.npy")
    test_pred_path = property(lambda self: self.dir / "test_pred.npy")
    metrics_path = property(lambda self: self.dir / "val_metrics.json")
    per_joint_path = property(lambda self: self.dir / "per_joint.csv")
    submission_path = property(lambda self: self.dir / "submission.csv")
    curves_path = property(lambda self: self.dir / "curves.png")
    worst_path = property(lambda self: self.dir / "worst.png")

    def checkpoint_path(self, which: str = "best") -> Path:
        if which not in CHECKPOINTS:
            raise ValueError(f"checkpoint: expected one of {CHECKPOINTS}, found {which!r}")
        return self.dir / f"{which}.pt"

    # ---------------------------------------------------------------- config and history
    PREDICTED = ("model", "recipe", "data_dir")  # the settings predict, export and the ensemble read

    def config(self, need: tuple[str, ...] = ()) -> dict:
        """config.json (lib.train's TrainConfig); ValueError naming the file when it is not a JSON
        object or lacks a key of `need` (e.g. Run.PREDICTED)."""
        if not self.config_path.exists():
            raise FileNotFoundError(f"{self.config_path}: no such file; is {self.dir} a run directory?")
        cfg = _read_json(self.config_path)
        if not isinstance(cfg, dict) or any(k not in cfg for k in need):
            found = f"the keys {sorted(cfg)[:8]}" if isinstance(cfg, dict) else f"a JSON {type(cfg).__name__}"
            raise ValueError(f"{self.config_path}: expected a run's settings"
                             f"{' with the keys ' + str(list(need)) if need else ' (a JSON object)'}, found {found} "
                             f"(edited or damaged?)")
        return cfg

    def write_config(self, config: dict) -> None:
        io.write_json(self.config_path, config)

    def history(self) -> pd.DataFrame:
        """The per-epoch log (empty before the first epoch ends)."""
        if not self.log_path.exists():
            return pd.DataFrame()
        return _read_csv(self.log_path)

    def write_history(self, rows: list[dict]) -> None:
        _write_csv(self.log_path, rows)

    def curve(self) -> pd.DataFrame:
        """The learning curve: one row per validation (step, images, elapsed_s = training seconds,
        kaggle_mse, epe, pck@2px, train_loss since the previous row, lr); runs from before curve.csv
        existed give their per-epoch log."""
        if not self.curve_path.exists():
            return self.history()
        return _read_csv(self.curve_path)

    def write_curve(self, rows: list[dict]) -> None:
        _write_csv(self.curve_path, rows)

    def artefacts(self) -> list[Path]:
        """Every file a run writes (whether it exists or not), the lock aside."""
        return [*(self.checkpoint_path(w) for w in CHECKPOINTS), self.config_path, self.log_path, self.curve_path,
                self.val_index_path, self.val_pred_path, self.test_pred_path, self.metrics_path,
                self.per_joint_path, self.submission_path, self.curves_path, self.worst_path]

    def clear(self) -> None:
        """Forget a previous run of this name (a fresh start): every file it wrote, and leftovers of
        writes a kill interrupted."""
        for p in self.artefacts():
            p.unlink(missing_ok=True)
        io.sweep_temporaries(self.dir)

    @contextlib.contextmanager
    def lock(self, purpose: str) -> Iterator[None]:
        """Hold the run for this process (training, predicting); a second process is refused with
        RunInUse. The OS releases the lock when its holder dies, so a killed run's lock is taken over."""
        self.dir.mkdir(parents=True, exist_ok=True)
        f = open(self.dir / LOCK, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunInUse(f"{self.dir}: in use by {holder}; wait for it to end, or choose another run name "
                           f"(--run)") from None
        try:
            f.seek(0)
            previous = f.read().strip()
            if previous:
                print(f"{self.dir}: taking over from {previous}, which ended without releasing the run", flush=True)
            io.sweep_temporaries(self.dir)  # half-written files of a killed holder
            f.seek(0)
            f.truncate()
            since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            f.write(f"process {os.getpid()} on {socket.gethostname()} ({purpose} since {since})")
            f.flush()
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self, which: str, state: dict) -> None:
        # into a file object this code closes (and fsyncs): torch.save's own file stays open after a failed
        # write until the garbage collector runs, holding the disk space of the deleted temporary file
        with io.atomic_open(self.checkpoint_path(which), "wb") as f:
            torch.save(state, f)

    def load_checkpoint(self, which: str = "best", model_name: str | None = None) -> dict:
        return read_checkpoint(self.checkpoint_path(which), model_name)

    def has_checkpoint(self, which: str = "last") -> bool:
        return self.checkpoint_path(which).exists()

    def checkpoint_stamp(self, which: str = "best") -> str | None:
        """Which version of a checkpoint file this is (size and modification time), None when absent."""
        try:
            st = self.checkpoint_path(which).stat()
        except FileNotFoundError:
            return None
        return f"{st.st_size}:{st.st_mtime_ns}"

    # ---------------------------------------------------------------- predictions and metrics
    def val_index(self) -> np.ndarray:
        return _read_npy(self.val_index_path)

    def save_val_index(self, index: np.ndarray) -> None:
        io.save_npy(self.val_index_path, index)

    def has_predictions(self) -> bool:
        return all(p.exists() for p in (self.val_index_path, self.val_pred_path, self.test_pred_path,
                                        self.config_path))

    def stale_predictions(self) -> str | None:
        """Why the saved predictions cannot be used (None: they are current): missing, or made with
        another best.pt than the one in the run now."""
        if not self.has_predictions() or not self.metrics_path.exists():
            return "no predictions"
        try:
            made_with = self.metrics().get("checkpoint")
        except ValueError:
            return f"{self.metrics_path} is not readable JSON"
        now = self.checkpoint_stamp("best")
        if now is None:
            return f"no {self.checkpoint_path('best').name} (the predictions belong to a run that is gone)"
        if made_with != now:
            return f"made with another {self.checkpoint_path('best').name} than the one there now"
        return None

    def predictions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(validation index, validation predictions, test predictions)."""
        return self.val_index(), _read_npy(self.val_pred_path), _read_npy(self.test_pred_path)

    def save_predictions(self, val_pred: np.ndarray, test_pred: np.ndarray) -> None:
        io.save_npy(self.val_pred_path, val_pred)
        io.save_npy(self.test_pred_path, test_pred)

    def metrics(self) -> dict:
        return _read_json(self.metrics_path)

    def write_metrics(self, result: dict, per_joint: pd.DataFrame | None = None) -> None:
        io.write_json(self.metrics_path, result)
        if per_joint is not None:
            with io.atomic_open(self.per_joint_path, "w") as f:
                per_joint.to_csv(f)


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[Run]:
    """Every run directory (one with a config.json) under runs_dir (default outputs/runs), by name."""
    root = Path(runs_dir or paths.runs())
    return [Run(d) for d in sorted(root.glob("*/")) if (d / "config.json").exists()]


STALE = "stale"  # outputs/runs/stale/: runs of data that has changed since, kept whole


def set_aside_stale(data_dir: str | os.PathLike, labels: str,
                    runs_dir: str | os.PathLike | None = None) -> list[tuple[Run, Path]]:
    """Move every run trained on data_dir while it held other hands (its config's labels fingerprint
    is not `labels`) to <runs_dir>/stale/<name>-<its labels>/, whole: no file is lost, and a run of
    that name starts afresh on the data of now. A run in use by another process stays where it is.
    Returns (run, new directory) per run moved."""
    root = Path(data_dir).resolve()
    moved = []
    for run in list_runs(runs_dir):
        try:
            cfg = run.config()
        except (OSError, ValueError):
            continue  # unreadable: left to the trainer, which names the file
        was = cfg.get("labels")
        if not was or was == labels or Path(str(cfg.get("data_dir", ""))).resolve() != root:
            continue
        base = f"{run.name}-{str(was).replace(':', '-')}"
        dest, k = run.dir.parent / STALE / base, 1
        while dest.exists():  # the same run of the same old hands set aside before
            k += 1
            dest = dest.with_name(f"{base}-{k}")
        try:
            with run.lock("being set aside as stale"):
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(run.dir, dest)
        except RunInUse:
            continue
        moved.append((run, dest))
    return moved
