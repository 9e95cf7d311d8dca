"""Keypoint metrics in crop pixels: kaggle_mse, EPE, PCK/AUC, accuracy within 2 px, per joint.

All functions take pred and gt as (N,21,2) arrays (numpy or anything np.asarray accepts) and an
optional (N,21) visibility mask.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from lib.joints import NAMES, NUM_JOINTS

PCK_THRESHOLDS_PX = 30.0 * np.arange(20) / 20  # MMPose keypoint_auc(norm_factor=30, num_thresholds=20)


def _prep(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and gt: expected equal shapes (N, {NUM_JOINTS}, 2), "
                         f"found {pred.shape} and {gt.shape}")
    return pred, gt


def kaggle_mse(pred, gt) -> float:
    """The competition score: mean squared error over all 42 coordinates (crop pixels)."""
    pred, gt = _prep(pred, gt)
    return float(np.mean((pred - gt) ** 2))


def distances(pred, gt) -> np.ndarray:
    """Euclidean error per joint, (N, 21)."""
    pred, gt = _prep(pred, gt)
    return np.linalg.norm(pred - gt, axis=-1)


def epe(pred, gt, vis=None) -> float:
    """Mean end-point (Euclidean) error; over visible joints only when vis is given."""
    d = distances(pred, gt)
    if vis is None:
        return float(d.mean())
    m = np.asarray(vis, bool)
    return float(d[m].mean()) if m.any() else float("nan")


def pck(pred, gt, threshold_px: float, vis=None) -> float:
    """MMPose-style PCK: per joint the share of samples with error < threshold, averaged over joints."""
    d = distances(pred, gt)
    m = np.ones_like(d, bool) if vis is None else np.asarray(vis, bool)
    per_joint = [(d[m[:, j], j] < threshold_px).mean() for j in range(d.shape[1]) if m[:, j].any()]
    return float(np.mean(per_joint)) if per_joint else float("nan")


def pck_curve(pred, gt, vis=None, thresholds=PCK_THRESHOLDS_PX) -> np.ndarray:
    """PCK at each threshold (default: MMPose's 20 thresholds over 0-30 px)."""
    return np.array([pck(pred, gt, t, vis) for t in thresholds])


def auc(pred, gt, vis=None) -> float:
    """Area under the PCK curve as MMPose's keypoint_auc computes it (norm 30 px, 20 thresholds)."""
    return float(pck_curve(pred, gt, vis).mean())


def acc_2px(pred, gt) -> float:
    """The report's accuracy: share of joints within 2 px Euclidean distance."""
    return float((distances(pred, gt) <= 2.0).mean())


def acc_coord_sq2(pred, gt) -> float:
    """The 2018 course code's variant: share of the 42 coordinates whose squared error is <= 2."""
    pred, gt = _prep(pred, gt)
    return float((((pred - gt) ** 2) <= 2.0).mean())


def summary(pred, gt, vis=None) -> dict[str, float]:
    """Every metric of this module, as logged per epoch and shown in leaderboards."""
    out = {
        "kaggle_mse": kaggle_mse(pred, gt),
        "epe": epe(pred, gt),
        "pck@2px": pck(pred, gt, 2.0),
        "auc": auc(pred, gt),
        "acc_2px": acc_2px(pred, gt),
        "acc_coord_sq2": acc_coord_sq2(pred, gt),
    }
    if vis is not None:
        out["epe_visible"] = epe(pred, gt, vis)
    return out


def per_joint(pred, gt, vis=None) -> pd.DataFrame:
    """One row per joint: mse, EPE, PCK@2px (and EPE on visible joints, visible share)."""
    pred, gt = _prep(pred, gt)
    d = distances(pred, gt)
    table = pd.DataFrame(
        {
            "mse": ((pred - gt) ** 2).mean(axis=(0, 2)),
            "epe": d.mean(axis=0),
            "pck@2px": (d < 2.0).mean(axis=0),
        },
        index=pd.Index(NAMES, name="joint"),
    )
    if vis is not None:
        m = np.asarray(vis, bool)
        table["epe_visible"] = [d[m[:, j], j].mean() if m[:, j].any() else np.nan for j in range(d.shape[1])]
        table["visible"] = m.mean(axis=0)
    return table


def box_scores(pred: np.ndarray, gt: np.ndarray, labelled: np.ndarray | None = None,
          alpha: float = 0.2) -> dict[str, float]:
    """PCK@alpha (box-normalised), EPE and kaggle MSE of (N,21,2) predictions in crop pixels,
    over all joints, or over the `labelled` (N,21) ones (photos with unannotated joints); pck_se: the
    PCK's standard error over hands (a hand's joints are not independent readings, so hands are the unit)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[1:] != (NUM_JOINTS, 2):
        raise ValueError(f"pred and gt: expected equal shapes (N, 21, 2), found {pred.shape} and {gt.shape}")
    m = np.ones(gt.shape[:2], bool) if labelled is None else np.asarray(labelled, bool)
    if m.shape != gt.shape[:2]:
        raise ValueError(f"labelled: expected shape {gt.shape[:2]}, found {m.shape}")
    if not m.any():
        return {"n": int(len(gt)), "pck": float("nan"), "pck_se": float("nan"), "epe": float("nan"),
                "mse": float("nan")}
    d = np.linalg.norm(pred - gt, axis=-1)
    box = np.where(m[..., None], gt, np.nan)
    with warnings.catch_warnings():  # hands without a labelled joint: NaN threshold, never used
        warnings.simplefilter("ignore", RuntimeWarning)
        thr = alpha * np.nanmax(np.nanmax(box, axis=1) - np.nanmin(box, axis=1), axis=1)[:, None]
    hit, w = ((d < thr) & m).sum(axis=1), m.sum(axis=1)  # per hand: joints within the threshold, labelled
    pck = hit.sum() / w.sum()
    se = np.sqrt(np.sum((hit - pck * w) ** 2)) / w.sum()  # of a ratio of sums over hands (cluster-robust)
    return {"n": int(len(gt)), "pck": float(pck), "pck_se": float(se), "epe": float(d[m].mean()),
            "mse": float(np.mean(((pred - gt) ** 2)[m]))}
