"""Learning curves: validation kaggle_mse against training images seen and training seconds, per run.

    python -m benchmarks curves [--runs NAME ...] [--png docs/learning_curves.png] [--reach 700] [--out BENCHMARKS.md]

    from benchmarks.curves import load_curves, curve_table, reach, plot_curves
    df = load_curves(["hm_resnet18_modern_cpu", "cpm_paper_cpu"])  # one row per validation of each run
    curve_table(df, at="images")        # kaggle_mse of every run at equal images seen (+ final, best)
    curve_table(df, at="elapsed_s")     # ... at equal training seconds (validation time excluded)
    reach(df, 700.0, at="elapsed_s")    # training seconds each run needed to first reach kaggle_mse 700
    plot_curves(df, "/tmp/curves.png", baseline=860.0, baseline_label="mean pose")
    curve_sections(df, reach_mse=700.0)  # both tables with readable column names (the CLI's section)

Each run's points are its validations (lib.runs.Run.curve: every --eval-every steps and at epoch ends;
runs from before curve.csv read their per-epoch log.csv, images = step x batch size). Values between
two validations are interpolated linearly on the x axis; before a run's first validation and after
its last one there is no value (NaN, blank in the tables).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from lib.runs import Run, list_runs

AXES = {"images": "training images seen", "elapsed_s": "training seconds"}
# round clock steps for the default grid of training seconds
SECOND_STEPS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)


def run_curve(run: Run, label: str | None = None) -> pd.DataFrame:
    """One run's learning curve with run, model and recipe columns, sorted by step (ValueError naming
    the run when it is not a run directory or has no validation yet)."""
    label = label or run.name
    if not run.dir.is_dir():
        raise ValueError(f"run {label!r}: no such run directory {run.dir}")
    if not run.config_path.exists():
        raise ValueError(f"run {label!r}: {run.dir} is not a run directory (no {run.config_path.name})")
    cfg, c = run.config(), run.curve()
    if c.empty:
        raise ValueError(f"run {label!r}: no learning curve yet in {run.dir} (neither {run.curve_path.name} "
                         f"nor {run.log_path.name}: no validation has finished)")
    if "images" not in c or c["images"].isna().all():
        if "step" not in c or not cfg.get("batch_size"):
            raise ValueError(f"run {label!r}: its curve has no images column, and no step and batch_size to "
                             "count them from")
        c["images"] = c["step"] * cfg["batch_size"]
    missing = [k for k in ("images", "elapsed_s", "kaggle_mse") if k not in c]
    if missing:
        raise ValueError(f"run {label!r}: its learning curve lacks the column(s) {', '.join(missing)}")
    c = c.dropna(subset=["images", "elapsed_s", "kaggle_mse"])
    if c.empty:
        raise ValueError(f"run {label!r}: no validation in its learning curve has a kaggle_mse")
    c = c.sort_values("step" if "step" in c else "images", kind="stable").reset_index(drop=True)
    front = pd.DataFrame({"run": run.name, "model": cfg.get("model"), "recipe": cfg.get("recipe")}, index=c.index)
    return pd.concat([front, c], axis=1)


def load_curves(runs: list[str] | None = None, runs_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The learning curves of the named runs (names under runs_dir, default outputs/runs, or directories)
    as one long table: run, model, recipe, step, images, elapsed_s, kaggle_mse, epe, ... One row per
    validation. None: every run of runs_dir that has a curve (empty table when there is none)."""
    if runs is None:
        parts = [run_curve(run) for run in list_runs(runs_dir) if not run.curve().empty]
    else:
        parts = [run_curve(Run.find(name, runs_dir), str(name)) for name in dict.fromkeys(runs)]
    if not parts:
        return pd.DataFrame(columns=["run", "model", "recipe", "step", "images", "elapsed_s", "kaggle_mse"])
    return pd.concat(parts, ignore_index=True)


def _xy(g: pd.DataFrame, at: str) -> tuple[np.ndarray, np.ndarray]:
    """A run's (x, kaggle_mse) in order of x."""
    x, y = g[at].to_numpy(float), g["kaggle_mse"].to_numpy(float)
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def interpolate(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> np.ndarray:
    """y linearly interpolated at points; NaN outside [x[0], x[-1]] (x ascending)."""
    points = np.asarray(points, float)
    if not len(x):
        return np.full(points.shape, np.nan)
    out = np.interp(points, x, y)
    out[(points < x[0]) | (points > x[-1])] = np.nan
    return out


def default_points(df: pd.DataFrame, at: str = "images", n: int = 6) -> np.ndarray:
    """Round x values. images: the largest n of 100, 200, 500, 1000, ... within the range of all runs
    together (a slow model's row is blank beyond its end). elapsed_s: at most about n multiples of a
    clock step (10, 15, 30, 60 s, ...) up to the end of the shortest run (equal budgets end together)."""
    g = df.groupby("run")[at]
    if not len(g) or not g.max().max() > 0:
        return np.array([])
    if at == "images":  # runs differ in speed by 10x: the last n of 1-2-5-10-... that some run reached
        lo, hi = max(float(g.min().min()), 1.0), float(g.max().max())
        grid = np.array([m * 10.0 ** e for e in range(int(math.log10(hi)) + 1) for m in (1, 2, 5)])
        return grid[(grid >= lo) & (grid <= hi)][-n:]
    hi = float(g.max().min())  # an equal budget: multiples of a clock step up to the end of the shortest run
    step = next((s for s in SECOND_STEPS if s >= hi / n), SECOND_STEPS[-1])
    return step * np.arange(1, int(hi // step + 1e-9) + 1)


def reach(df: pd.DataFrame, threshold: float, at: str = "images") -> pd.Series:
    """Per run, the x (images or training seconds) at which kaggle_mse first reaches threshold or below,
    interpolated linearly between the validation before and the one that reached it (its first
    validation's x when that one already did); NaN when the run never did."""
    _check_at(at)
    out = {}
    for name, g in df.groupby("run", sort=False):
        x, y = _xy(g, at)
        hit = np.flatnonzero(y <= threshold)
        if not len(hit):
            out[name] = np.nan
        elif hit[0] == 0:
            out[name] = x[0]
        else:
            i = hit[0]
            out[name] = x[i - 1] + (y[i - 1] - threshold) / (y[i - 1] - y[i]) * (x[i] - x[i - 1])
    return pd.Series(out, name=f"reach {threshold:g}", dtype=float)


def curve_table(df: pd.DataFrame, at: str = "images", points: list[float] | np.ndarray | None = None,
                reach_mse: float | None = None) -> pd.DataFrame:
    """kaggle_mse of every run at common x values: one row per run, a column per point (its x value;
    NaN before the run's first validation or after its last), then the x the run ended at ("end"),
    its last kaggle_mse ("final"), its lowest ("best") and with reach_mse the x where it first
    reached that kaggle_mse ("reach MSE"). Rows in order of final kaggle_mse."""
    _check_at(at)
    points = default_points(df, at) if points is None else np.asarray(points, float)
    rows = []
    for name, g in df.groupby("run", sort=False):
        x, y = _xy(g, at)
        last = g.iloc[-1]  # the last validation (rows are in step order)
        row = {"run": name, **dict(zip(_labels(points), interpolate(x, y, points))),
               "end": float(x[-1]), "final": float(last["kaggle_mse"]), "best": float(y.min())}
        rows.append(row)
    table = pd.DataFrame(rows)
    if reach_mse is not None and len(table):
        table[f"reach {reach_mse:g}"] = table["run"].map(reach(df, reach_mse, at))
    return table.sort_values("final", kind="stable").reset_index(drop=True) if len(table) else table


def readable(table: pd.DataFrame, at: str = "images") -> pd.DataFrame:
    """curve_table's columns named for a reader: 1,000 (images) or 30 s, and the unit of end / reach."""
    unit = "images" if at == "images" else "s"
    names = {c: (f"{c:,}" if at == "images" else f"{c:g} s") for c in table.columns if not isinstance(c, str)}
    counts = [c for c in table.columns if c == "end" or str(c).startswith("reach ")]
    names.update({c: f"{c} ({unit})" for c in counts})
    if at == "images":  # whole images, not 1.152e+04
        table = table.assign(**{c: table[c].round().astype("Int64") for c in counts})
    return table.rename(columns=names)


def curve_sections(df: pd.DataFrame, reach_mse: float | None = None) -> list[tuple[str, pd.DataFrame]]:
    """The two tables of the benchmark section: at equal images seen, at equal training seconds."""
    return [(f"kaggle_mse at equal {AXES[at]}", readable(curve_table(df, at, reach_mse=reach_mse), at))
            for at in AXES]


def _labels(points: np.ndarray) -> list[int | float]:
    """Column names of grid points: integers where they are whole."""
    return [int(p) if float(p).is_integer() else float(p) for p in points]


def _check_at(at: str) -> None:
    if at not in AXES:
        raise ValueError(f"at: expected one of {', '.join(AXES)}, found {at!r}")


def plot_curves(df: pd.DataFrame, path: str | os.PathLike, baseline: float | None = None,
                baseline_label: str = "baseline", title: str = "Learning curves (validation kaggle_mse)") -> Path:
    """One PNG, two panels: kaggle_mse against training images seen and against training minutes, a
    line per run (a marker per validation), log y, and an optional dashed line at a baseline kaggle_mse."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from lib.viz import save_figure

    if df.empty:
        raise ValueError("plot_curves: no learning curve to draw")
    fig = Figure(figsize=(13, 4.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    runs = list(df.groupby("run", sort=False)["kaggle_mse"].last().sort_values(kind="stable").index)  # best first
    colors = [f"C{i % 10}" for i in range(len(runs))]
    styles = ["-", "--", "-.", ":"]
    for k, (name, color) in enumerate(zip(runs, colors)):
        g = df[df["run"] == name]
        style = dict(color=color, ls=styles[(k // 10) % len(styles)], marker="o", ms=3.5, lw=1.6, label=name,
                     markevery=max(1, len(g) // 40))  # a marker per validation, at most ~40 per line
        axes[0].plot(*_xy(g, "images"), **style)
        x, y = _xy(g, "elapsed_s")
        axes[1].plot(x / 60, y, **style)
    ys = df["kaggle_mse"].to_numpy(float)
    lo, hi = np.nanmin(ys), np.nanmax(ys)
    if baseline is not None:
        lo, hi = min(lo, baseline), max(hi, baseline)
        for ax in axes:
            ax.axhline(baseline, color="0.35", ls="--", lw=1.2, label=f"{baseline_label} ({baseline:g})")
    thousands = FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v >= 1000 else f"{v:g}")
    for ax, xlabel, sub in ((axes[0], "training images seen", "against images seen"),
                            (axes[1], "training minutes (validation excluded)", "against training time")):
        ax.set_yscale("log")
        ax.set(xlabel=xlabel, title=sub)
        ax.set_xlim(left=0)
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", axis="y", alpha=0.15)
    axes[0].xaxis.set_major_formatter(thousands)
    axes[0].set_ylabel("validation kaggle_mse (px², log)")
    axes[0].set_ylim(lo / 1.08, hi * 1.08)
    decades = math.log10(hi / lo)
    subs = ((1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0) if decades < 1.2  # labels enough for a narrow range
            else (1.0, 2.0, 5.0) if decades < 3 else (1.0,))
    axes[0].yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    axes[0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axes[0].yaxis.set_minor_formatter(NullFormatter())
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize=9,
               title="run (best final first)", title_fontsize=9, alignment="left")
    fig.suptitle(title, fontsize=13)
    save_figure(fig, path)
    return Path(path)
