"""Issue 12's targets against one gpu_check.sh run (python -m benchmarks targets): a row per target with
its goal, what the run measured and whether that meets it, so a GPU session's figures are read, not
copied by hand. Inputs: the rows of `benchmarks loop --csv` (several calls may share one file), the
gpu profile's run directory, and phase seconds the script timed.

    python -m benchmarks targets --loop OUT/loop.csv --run WORK/runs/gpu_profile --seconds profile=461,all=540
"""
from __future__ import annotations

import os

import pandas as pd

from benchmarks.loop import report_total
from lib.config import RECIPES, REPORT_EPOCHS

RATIO_GOAL = 0.8                 # loop / model alone at the large batch, every model
SMALL_BATCH_GOAL = {"resnet34": 2500, "cpm": 2500, "inception_v3": 2500, "irv2": 1000}  # paper recipe, img/s
IRV2_ALONE_GOAL = 4000           # IRv2's model-alone train img/s at the large batch
REPORT_MINUTES_GOAL = 60         # the four report models at report epochs, in all
SECONDS_GOAL = {"profile": 600, "all": 480}  # the gpu profile; every measurement of gpu_check.sh
FALLING = 3                      # the curve's last FALLING + 1 validations give its fall per epoch at the end
CONVERGED = 0.01                 # converged: that fall per epoch is under 1 % of the last kaggle_mse


def _verdict(measured: float | None, goal: float, at_least: bool) -> str:
    if measured is None or pd.isna(measured):
        return "not measured"
    return "yes" if (measured >= goal if at_least else measured <= goal) else "no"


def _row(target: str, goal: str, measured: float | None, fmt: str, met: str, detail: str = "") -> dict:
    shown = "" if measured is None or pd.isna(measured) else format(measured, fmt)
    return {"target": target, "goal": goal, "measured": shown, "met": met, "how": detail}


def _variant(row: pd.Series) -> str:
    parts = [f"batch {row['batch']}", str(row.get("amp", ""))]
    if row.get("cuda graph"):
        parts.append("CUDA graph")
    if row.get("compile"):
        parts.append("compiled")
    return ", ".join(p for p in parts if p)


def _best(rows: pd.DataFrame, column: str) -> tuple[float | None, pd.Series | None]:
    """The highest `column` among rows and its row (None, None for no rows with a value)."""
    rows = rows.dropna(subset=[column])
    if not len(rows):
        return None, None
    best = rows.loc[rows[column].idxmax()]
    return best[column], best


def loop_targets(loop: pd.DataFrame, models: list[str]) -> list[dict]:
    """The loop's targets: loop / model at the large batch (the largest of the `modern` rows) for each of
    `models`, the `paper` rows' img/s at its batch per report model, IRv2 alone, the report models at
    report epochs; a row for each, "not measured" where the rows have none."""
    rows = []
    modern = loop[loop["recipe"] == "modern"]
    big = int(modern["batch"].max()) if len(modern) else None
    at_big = modern[modern["batch"] == big]
    for model in dict.fromkeys(list(models) + at_big["model"].tolist()):
        group = at_big[at_big["model"] == model]
        ratio, best = _best(group, "loop / model")
        how = "" if best is None else \
            f"{best['loop img/s']:,.0f} against {best['model-only img/s']:,.0f} img/s; {_variant(best)}"
        rows.append(_row(f"loop / model alone, {model}", f">= {RATIO_GOAL}", ratio, ".2f",
                         _verdict(ratio, RATIO_GOAL, True), how))
    irv2 = at_big[at_big["model"] == "irv2"]["model-only img/s"]
    alone = irv2.max() if len(irv2) else None
    rows.append(_row("IRv2 alone, train img/s", f">= {IRV2_ALONE_GOAL:,}", alone, ",.0f",
                     _verdict(alone, IRV2_ALONE_GOAL, True), "" if alone is None else f"eager, batch {big}"))
    paper = loop[(loop["recipe"] == "paper") & (loop["batch"] == RECIPES["paper"]["batch_size"])]
    for model, goal in SMALL_BATCH_GOAL.items():
        rate, best = _best(paper[paper["model"] == model], "loop img/s")
        rows.append(_row(f"paper recipe loop img/s, {model}", f">= {goal:,}", rate, ",.0f",
                         _verdict(rate, goal, True), "" if best is None else _variant(best)))
    minutes = paper.get("report epochs (min)", pd.Series(dtype=float))
    fastest = minutes.groupby(paper["model"]).min().dropna()
    total = fastest.sum() if set(fastest.index) == set(REPORT_EPOCHS) else None
    rows.append(_row("the four report models at report epochs (min)", f"< {REPORT_MINUTES_GOAL}", total, ",.0f",
                     _verdict(total, REPORT_MINUTES_GOAL - 1e-9, False),
                     report_total(paper) or f"rows for {sorted(fastest.index)} of {sorted(REPORT_EPOCHS)}"))
    return rows


def profile_targets(run_dir: str | os.PathLike | None, seconds: dict[str, float]) -> list[dict]:
    """The gpu profile's seconds, val and test kaggle_mse and whether its curve still fell at the end,
    and the whole script's seconds."""
    from lib.runs import Run

    rows = []
    for name, target in (("profile", "gpu profile: render, train, predict (s)"), ("all", "gpu_check.sh all (s)")):
        value = seconds.get(name)
        rows.append(_row(target, f"<= {SECONDS_GOAL[name]}", value, ",.0f", _verdict(value, SECONDS_GOAL[name], False),
                         "" if value is not None or name == "all" else
                         "only a profile that rendered its data and trained and predicted here counts"))
    run = Run(run_dir) if run_dir is not None else None
    scores = run.metrics() if run is not None and run.metrics_path.exists() else {}
    for key, label in (("kaggle_mse", "val"), ("test_kaggle_mse", "test")):
        rows.append(_row(f"gpu profile, {label} kaggle_mse (flip TTA)", "lower is better", scores.get(key), ".1f",
                         "" if key in scores else "not measured"))
    curve = run.curve() if run is not None and run.curve_path.exists() else pd.DataFrame()
    fall, how = None, f"fewer than {FALLING + 1} validations"
    if len(curve) > FALLING:
        end = curve.tail(FALLING + 1)
        epochs = (end["images"].iloc[-1] - end["images"].iloc[0]) / max(run.config().get("train_size", 0), 1)
        last = end["kaggle_mse"].iloc[-1]
        fall = (end["kaggle_mse"].iloc[0] - last) / max(epochs, 1e-9) / last  # a share of the last score
        how = (f"{end['kaggle_mse'].iloc[0]:.1f} -> {last:.1f} over its last {epochs:.1f} epochs ({len(curve)} "
               f"validations, from {curve['kaggle_mse'].iloc[0]:.1f}){'; rising' if fall < 0 else ''}; a "
               "schedule annealed to its floor flattens the end whatever the budget")
    rows.append(_row("gpu profile converged: fall per epoch at the end (% of val kaggle_mse)",
                     f"< {CONVERGED:.0%}", None if fall is None else 100 * fall, ".2f",
                     _verdict(None if fall is None else fall, CONVERGED, False), how if run is not None else ""))
    return rows


LOOP_COLUMNS = ["model", "recipe", "batch", "loop img/s", "model-only img/s", "loop / model"]


def targets(loop: pd.DataFrame | None, run_dir: str | os.PathLike | None = None,
            seconds: dict[str, float] | None = None, models: list[str] = ()) -> pd.DataFrame:
    """A row per target of issue 12: target, goal, measured, met (yes / no / not measured), how."""
    loop = loop if loop is not None else pd.DataFrame(columns=LOOP_COLUMNS)
    return pd.DataFrame(loop_targets(loop, models) + profile_targets(run_dir, seconds or {}),
                        columns=["target", "goal", "measured", "met", "how"])


def parse_seconds(text: str | None) -> dict[str, float]:
    """--seconds profile=461,all=540 -> {"profile": 461.0, "all": 540.0}; ValueError naming the option."""
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            out[name.strip()] = float("nan")
        if name.strip() not in SECONDS_GOAL or not out[name.strip()] >= 0:
            raise ValueError(f"--seconds: expected NAME=SECONDS with NAME among {sorted(SECONDS_GOAL)} and "
                             f"SECONDS >= 0, found {item!r}")
    return out
