"""Real hands for sim-to-real checks: the team's reference samples beside the repo (../shared/reference).

    from lib import reference
    for hands in reference.real_hands():        # [] (with a notice) when the folder is absent
        hands.name, hands.crops, hands.kp, hands.labelled

They are research-only samples (RHD frames; FreiHAND, OneHand10K and Panoptic photos, via MMPose's
test data): read them where they are, never copy them (or pictures made from them) into the repo.
Each hand is cut with the competition crop from its annotated keypoints (photos: zero-padded to a
square first), the keypoints in our joint order (RHD: wrist, then each finger tip -> MCP).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lib.data import competition_crop, read_image, read_keypoints_csv
from lib.joints import FROM_BASE_TIP, NUM_JOINTS
from lib.paths import REPO

SHARED = REPO.parent / "shared" / "reference"
SUBMISSION_EXAMPLE = "kaggle_submission_example.csv"
SUBMISSION_EXAMPLE_MSE = 47.97  # that submission's public score: its error per coordinate is about sqrt(48) px


@dataclass
class HandSet:
    name: str
    crops: np.ndarray     # (N,128,128,3) uint8 RGB
    kp: np.ndarray        # (N,21,2) crop pixels
    labelled: np.ndarray | None = None  # (N,21) bool; None = all joints annotated


def square_crop(image: np.ndarray, kp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The competition crop of a hand in an image of any size (zero-padded to a square first)."""
    h, w = image.shape[:2]
    s = max(h, w)
    sq = np.zeros((s, s, 3), np.uint8)
    sq[:h, :w] = image
    return competition_crop(sq, kp)


def rhd_frames(reference: Path = SHARED) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The real RHD frames: (file name, 320x320 RGB image, (21, 3) keypoints [u, v, visible]); [] when absent."""
    js = reference / "rhd_samples" / "test_rhd.json"
    if not js.is_file():
        return []
    meta = json.loads(js.read_text())
    names = {im["id"]: im["file_name"] for im in meta["images"]}
    return [(names[ann["image_id"]], read_image(js.parent / names[ann["image_id"]]),
             np.array(ann["keypoints"], np.float64).reshape(NUM_JOINTS, 3)) for ann in meta["annotations"]]


def rhd_hands(reference: Path = SHARED) -> HandSet | None:
    """The real RHD frames in ../shared/reference as competition crops (None when absent)."""
    frames = rhd_frames(reference)
    if not frames:
        return None
    crops, kps = zip(*(competition_crop(img, kp[:, :2]) for _, img, kp in frames))
    return HandSet("real RHD frames", np.stack(crops), np.stack(kps))


def photo_hands(reference: Path = SHARED) -> HandSet | None:
    """Real photographs (FreiHAND, OneHand10K, Panoptic) in ../shared/reference, duplicates dropped."""
    folder = reference / "real_hands"
    if not folder.is_dir():
        return None
    crops, kps, lab, seen = [], [], [], set()
    for js in sorted(folder.glob("*/*.json")):
        meta = json.loads(js.read_text())
        names = {im["id"]: im["file_name"] for im in meta["images"]}
        for ann in meta["annotations"]:
            kp = np.array(ann["keypoints"], np.float64).reshape(NUM_JOINTS, 3)[FROM_BASE_TIP]
            img = cv2.imread(str(js.parent / names[ann["image_id"]]), cv2.IMREAD_COLOR)
            if img is None or hash(img.tobytes()) in seen:  # Panoptic frames are stored twice
                continue
            seen.add(hash(img.tobytes()))
            ok = ~(kp[:, :2] == 0).all(axis=1)  # OneHand10K: missing joints are (0, 0)
            pts = np.where(ok[:, None], kp[:, :2], kp[ok, :2].mean(axis=0))
            c, k = square_crop(np.ascontiguousarray(img[..., ::-1]), pts)
            crops.append(c)
            kps.append(k)
            lab.append(ok)
    if not crops:
        return None
    return HandSet("real photos", np.stack(crops), np.stack(kps), np.stack(lab))


def rhd_test_predictions(reference: Path = SHARED) -> np.ndarray | None:
    """(3611, 21, 2) crop-pixel keypoints of RHD's 3,611 competition test hands as a 2nd-place model
    of 2018 predicted them (kaggle MSE 48), from kaggle_submission_example.csv; None when absent.
    The only view of the real test distribution (hand size, view, pose) there is offline."""
    path = reference / SUBMISSION_EXAMPLE
    if not path.is_file():
        return None
    return read_keypoints_csv(path)


def real_hands(reference: Path = SHARED) -> list[HandSet]:
    """The real RHD frames and the real photos that are present; a notice when none is."""
    found = [h for h in (rhd_hands(reference), photo_hands(reference)) if h is not None]
    if not found:
        print(f"reference: no real hands in {reference} (only in the team's workspace); skipping the sim-to-real check")
    return found
