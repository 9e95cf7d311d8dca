"""Realism meter: how well a real-photo hand model (MediaPipe Hands) reads our synthetic hands,
side by side with real hands; and the same model as a leaderboard baseline.

    python -m benchmarks.realism fetch                     # once: the model file and its runtime
    python -m benchmarks.realism [--images 400] [--seed 0] [--setting upright as-is best-rot]
    python -m benchmarks.realism --out BENCHMARKS.md        # also replace the realism section there
    python -m benchmarks.realism baseline [--data-dir DIR]  # predictions -> outputs/baselines/mediapipe_*/
    python -m benchmarks.realism scene [--images 2000]      # hand size, view and pose: synthetic vs RHD's test hands
    python -m benchmarks.realism --rhd DIR                  # also real RHD crops, when you have the dataset

The judge is MediaPipe's hand landmark network (`hand_landmark_full.tflite`, shipped inside the
`mediapipe==0.10.21` wheel on PyPI), run offline with `ai-edge-litert`. Neither is part of the
main requirements: `fetch` installs `requirements-realism.txt` and unpacks the model file from
the wheel into data/models/. It was trained on real photographs only, so the better it reads a
hand, the more photo-like that hand is.

Each hand is cut with the competition crop (lib.data.competition_crop; real photos: the same
square keypoint box), then shown to the network as MediaPipe's own pipeline would after its palm
detector: rotated so that the wrist -> middle-MCP line points up ("upright", from the ground
truth) and centred in a square 224 px view that is ROI_SCALE times the crop. Settings that need
no ground truth: "as-is" (the crop, unrotated) and "best-rot" (8 rotations, the one with the
highest hand-presence score). Predictions are mapped back to 128 px crop pixels and scored:
PCK@0.2 (threshold 0.2 x the longer side of the keypoint box), EPE and kaggle MSE, over all 21
joints as the competition scores them.

`scene` needs no model: it compares the keypoint geometry of the synthetic test crops (hand size in
the crop, palm foreshortening, finger extension) with RHD's 3,611 real test hands as a 2nd-place 2018
model predicted them (../shared/reference). Those predictions carry that model's error (kaggle MSE
48, about 7 px per coordinate), so the synthetic keypoints are also shown with that much Gaussian
noise added: the ratios should match that column (the box's size and its distance to the crop edge,
the exact one: predictions shrink inwards). Its `gap` is the mean distance of the 10/25/50/75/90 %
quantiles, in units of the real spread (q90 - q10).

`baseline` writes the judge's predictions on the validation crops (the runs' validation samples)
and the test crops of a dataset, per setting, for lib.ensemble to show as baseline_mediapipe_*
rows of outputs/leaderboard.csv; "upright" reads the ground truth, so it is labelled as such.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import platform
import shlex
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from lib import cli
from lib.data import CROP_SIZE, usable_hand_crops
from lib.joints import BASES, FINGERS, FROM_BASE_TIP, NUM_JOINTS, TIPS
from lib.metrics import box_scores
from lib.reference import (SHARED, SUBMISSION_EXAMPLE, SUBMISSION_EXAMPLE_MSE, HandSet, photo_hands, rhd_hands,
                           rhd_test_predictions)
from lib.paths import REPO, baselines, data_root

MEDIAPIPE_WHEEL = "mediapipe==0.10.21"
MODEL_MEMBER = "mediapipe/modules/hand_landmark/hand_landmark_full.tflite"
MODEL_SHA256 = "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3"
REQUIREMENTS = REPO / "requirements-realism.txt"
INPUT = 224          # the landmark network's input side
ROI_SCALE = 1.3      # the network sees this many crop sides (measured best for real RHD frames and photos: 1.2-1.4)
MIDDLE_MCP = 12      # our joint order: wrist 0, middle finger tip..mcp 9..12
SETTINGS = ("upright", "as-is", "best-rot")
# baseline folder (outputs/baselines/<folder>, board row baseline_<folder>) and its model column
BASELINES = {"as-is": ("mediapipe_as-is", "MediaPipe Hands landmark net, crop as-is"),
             "best-rot": ("mediapipe_best-rot", "MediaPipe Hands landmark net, best of 8 rotations by its hand presence"),
             "upright": ("mediapipe_upright-gt", "MediaPipe Hands landmark net, rotated upright FROM GROUND TRUTH (not fair)")}


def model_path() -> Path:
    return data_root() / "models" / Path(MODEL_MEMBER).name


HOW_TO_GET = (f"get it with `python -m benchmarks.realism fetch` (pip installs {REQUIREMENTS.name} and "
              f"unpacks {Path(MODEL_MEMBER).name} from the {MEDIAPIPE_WHEEL} wheel on PyPI)")


class MeterUnavailable(cli.UserError, RuntimeError):
    """The judge model or its runtime is missing or unreadable (the message says how to fix it)."""


# ---------------------------------------------------------------- scoring (no model needed)
def upright_angle(kp: np.ndarray) -> float:
    """Rotation (radians, image coordinates) that turns the wrist -> middle-MCP line to point up."""
    v = np.asarray(kp[MIDDLE_MCP], np.float64) - np.asarray(kp[0], np.float64)
    return float(np.arctan2(v[0], -v[1]))  # 0 when the MCP is straight above the wrist


def view_transform(angle: float, side: float = CROP_SIZE, roi_scale: float | None = None,
                   out: int = INPUT) -> np.ndarray:
    """2x3 affine from crop pixels to the network's view: the crop rotated by -angle about its
    centre, roi_scale crop sides filling `out` pixels."""
    c = (side - 1) / 2.0
    s = out / ((roi_scale or ROI_SCALE) * side)
    ca, sa = np.cos(-angle), np.sin(-angle)
    A = s * np.array([[ca, -sa], [sa, ca]])
    t = np.array([(out - 1) / 2.0, (out - 1) / 2.0]) - A @ np.array([c, c])
    return np.concatenate([A, t[:, None]], axis=1)


def apply_affine(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, np.float64) @ M[:, :2].T + M[:, 2]


def invert_affine(M: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(M, np.float64))


# ---------------------------------------------------------------- the judge
class Judge:
    """MediaPipe's hand landmark network on the CPU: 224x224 RGB in, 21 points (our order) out."""

    def __init__(self, path: Path | None = None) -> None:
        path = Path(path) if path else model_path()
        if not path.is_file():
            raise MeterUnavailable(f"{path}: model file not found; {HOW_TO_GET}")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise MeterUnavailable(f"{path}: its runtime ai-edge-litert is not installed; {HOW_TO_GET}") from None
        if hashlib.sha256(path.read_bytes()).hexdigest() != MODEL_SHA256:
            raise MeterUnavailable(f"{path}: corrupt or not the {Path(MODEL_MEMBER).name} of {MEDIAPIPE_WHEEL} "
                                   f"(sha256 differs); delete it and {HOW_TO_GET}")
        try:
            self.it = Interpreter(model_path=str(path), num_threads=1)
            self.it.allocate_tensors()
        except Exception as e:  # noqa: BLE001 - any load failure means an unusable file or runtime
            raise MeterUnavailable(f"{path}: not loadable ({str(e).splitlines()[0][:120]}); "
                                   f"delete it and {HOW_TO_GET}") from None
        self.inp = self.it.get_input_details()[0]["index"]
        by_name = {d["name"]: d["index"] for d in self.it.get_output_details()}
        self.landmarks, self.presence = by_name["Identity"], by_name["Identity_1"]

    def __call__(self, view: np.ndarray) -> tuple[np.ndarray, float]:
        """(21,2) points in view pixels (our joint order) and the hand-presence score 0..1."""
        x = (np.asarray(view, np.float32) / 255.0)[None]
        self.it.set_tensor(self.inp, np.ascontiguousarray(x))
        self.it.invoke()
        lm = self.it.get_tensor(self.landmarks).reshape(NUM_JOINTS, 3)[:, :2].astype(np.float64)
        pres = float(self.it.get_tensor(self.presence).reshape(-1)[0])
        if pres < 0 or pres > 1:  # a logit
            pres = float(1 / (1 + np.exp(-pres)))
        return lm[FROM_BASE_TIP], pres


def predict_crop(judge: Judge, crop: np.ndarray, angle: float | None) -> tuple[np.ndarray, float]:
    """Judge one 128 crop; angle None tries 8 rotations and keeps the most confident one."""
    angles = [angle] if angle is not None else list(np.arange(8) * np.pi / 4)
    best = None
    for a in angles:
        M = view_transform(a, crop.shape[0])
        view = cv2.warpAffine(np.asarray(crop), M, (INPUT, INPUT), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        lm, pres = judge(view)
        if best is None or pres > best[1]:
            best = (apply_affine(invert_affine(M), lm), pres)
    return best


def judge_crops(judge: Judge, crops: np.ndarray, gt: np.ndarray | None, setting: str,
                progress: str | None = None) -> np.ndarray:
    """(N,21,2) predictions in crop pixels under a setting ('upright' needs gt)."""
    from tqdm import tqdm
    out = np.zeros((len(crops), NUM_JOINTS, 2))
    quiet = progress is None or not sys.stderr.isatty()  # no bars of \r lines in logs
    for i in tqdm(range(len(crops)), desc=progress, unit="crop", leave=False, disable=quiet):
        a = upright_angle(gt[i]) if setting == "upright" else 0.0 if setting == "as-is" else None
        out[i] = predict_crop(judge, crops[i], a)[0]
    return out


# ---------------------------------------------------------------- the hands
def synthetic_hands(n_images: int, seed: int = 0, single: bool = False) -> HandSet:
    """Competition crops of every usable hand in n evaluation-split renders (as lib.data builds the test set);
    single: one hand alone per image instead (lib.synth.render_single_hand: its appearance only)."""
    from lib.synth import image_seed, render_image, render_single_hand
    crops, kps = [], []
    for i in range(n_images):
        s = (render_single_hand if single else render_image)(image_seed(seed, "evaluation", i))
        for c, k in usable_hand_crops(s["color"], s["uv_vis"]):
            crops.append(c)
            kps.append(k)
    name = f"synthetic, single hands alone (seed {seed})" if single else f"synthetic (seed {seed}, {n_images} images)"
    return HandSet(name, np.stack(crops), np.stack(kps))


def rhd_split_hands(rhd_dir: str | Path, n_images: int, split: str = "evaluation") -> HandSet:
    """Competition crops of every usable hand in the first n images (by id) of an RHD-layout split: the
    real RHD evaluation split, for users who have the dataset, or any rendered one (lib.synth)."""
    from lib.data import read_rhd_annotations, split_crops
    anno = read_rhd_annotations(rhd_dir, split)
    ids = sorted(anno)[:n_images]
    crops, kps = split_crops(rhd_dir, split, anno, ids)
    if not crops:
        raise ValueError(f"{Path(rhd_dir) / split}: no usable hand (all 21 keypoints inside the image) "
                         f"in its first {len(ids)} images")
    return HandSet(f"RHD-layout {split} split in {rhd_dir} ({len(ids)} images)",
                   np.stack(crops), np.stack(kps))


# ---------------------------------------------------------------- provenance, fetch
def versions() -> str:
    import importlib.metadata as md
    out = [f"python {platform.python_version()}", f"numpy {np.__version__}", f"opencv {cv2.__version__}"]
    try:
        out.append(f"ai-edge-litert {md.version('ai-edge-litert')}")
    except md.PackageNotFoundError:
        pass
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return ", ".join(out + [f"model {Path(MODEL_MEMBER).name} from {MEDIAPIPE_WHEEL}"]
                     + ([f"repo {rev}"] if rev else []))


def provenance(argv: list[str]) -> dict[str, str]:
    """The command, date and versions of this measurement."""
    return {"command": shlex.join(["python", "-m", "benchmarks.realism", *argv]),
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "versions": versions()}


def table(rows: list[tuple[str, str, dict]]) -> str:
    lines = ["| hands | setting | n | PCK@0.2 (box) | ± (standard error over hands) | EPE (px, 128 crop) | kaggle MSE |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, setting, m in rows:
        lines.append(f"| {name} | {setting} | {m['n']} | {m['pck']:.3f} | {m['pck_se']:.3f} | {m['epe']:.1f} "
                     f"| {m['mse']:.0f} |")
    return "\n".join(lines)


def fetch() -> Path:
    """Install the runtime and unpack the model file from the MediaPipe wheel (PyPI) into data/models/."""
    dest = model_path()
    print(f"pip install -r {REQUIREMENTS}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True, timeout=900)
    if dest.is_file() and hashlib.sha256(dest.read_bytes()).hexdigest() == MODEL_SHA256:
        print(f"{dest}: already there")
        return dest
    with tempfile.TemporaryDirectory(prefix="mediapipe_wheel_") as tmp:
        print(f"pip download --no-deps {MEDIAPIPE_WHEEL} (about 36 MB; only the model file is kept)")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", tmp, MEDIAPIPE_WHEEL], check=True, timeout=900)
        wheel = next(Path(tmp).glob("mediapipe-*.whl"))
        from lib.io import atomic_open
        with zipfile.ZipFile(wheel) as z, atomic_open(dest, "wb") as f:
            f.write(z.read(MODEL_MEMBER))
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.1f} MB)")
    return dest


# ---------------------------------------------------------------- the meter
def measure(images: int, seed: int, settings: tuple[str, ...], judge: Judge | None = None,
            reference: Path = SHARED, rhd_dir: str | Path | None = None) -> list[tuple[str, str, dict]]:
    """(hands, setting, scores) for the synthetic renders and the real hands that are present; rhd_dir:
    also the first `images` images of that RHD-layout evaluation split (the real dataset, when you have it)."""
    judge = judge or Judge()
    rows = []
    rhd = rhd_split_hands(rhd_dir, images) if rhd_dir is not None else None  # first: a bad folder fails fast
    sets = (synthetic_hands(images, seed), synthetic_hands(max(images // 2, 1), seed, single=True), rhd,
            rhd_hands(reference), photo_hands(reference))
    for hs in sets:
        if hs is None:
            continue
        for st in settings:
            rows.append((hs.name, st, box_scores(judge_crops(judge, hs.crops, hs.kp, st), hs.kp, hs.labelled)))
    return rows


# ---------------------------------------------------------------- scene statistics
QUANTILES = (10, 25, 50, 75, 90)
EXACT_ROWS = ("box side (px)", "box to crop edge (px)")  # scene_table: compared without the noise
SPREAD_ROW = "finger extension spread (std, index..little)"  # do a hand's fingers open and close together?


def hand_statistics(kp: np.ndarray) -> dict[str, np.ndarray]:
    """Per hand, from (N,21,2) crop keypoints: the keypoint box's longer side, its shorter side per
    longer (how elongated the hand looks), its distance to the nearest crop edge (px; 0 for a hand at
    the image border), the palm's length (wrist -> middle MCP, px) and its share of the box, each
    finger's tip-to-base distance per palm length, and how much those of index..little differ within
    the hand (their standard deviation)."""
    kp = np.asarray(kp, np.float64)
    extent = np.ptp(kp, axis=1)
    box = extent.max(axis=1)
    palm = np.linalg.norm(kp[:, MIDDLE_MCP] - kp[:, 0], axis=1)
    edge = np.minimum(kp.min(axis=1), CROP_SIZE - kp.max(axis=1)).min(axis=1)
    aspect = extent.min(axis=1) / np.maximum(box, 1e-9)
    out = {"box side (px)": box, "box aspect (short / long side)": aspect, "box to crop edge (px)": edge,
           "palm length (px)": palm, "palm / box": palm / np.maximum(box, 1e-9)}
    for name, tip, base in zip(FINGERS, TIPS, BASES):
        out[f"{name} extension / palm"] = np.linalg.norm(kp[:, tip] - kp[:, base], axis=1) / np.maximum(palm, 1.0)
    out[SPREAD_ROW] = np.std([out[f"{name} extension / palm"] for name in FINGERS[1:]], axis=0)
    return out


def quantile_gap(real: np.ndarray, synth: np.ndarray) -> float:
    """Mean |difference| of the QUANTILES of two samples, in units of the real one's q90 - q10."""
    qa, qb = np.percentile(real, QUANTILES), np.percentile(synth, QUANTILES)
    return float(np.abs(qa - qb).mean() / max(qa[-1] - qa[0], 1e-9))


def synthetic_keypoints(n_images: int, seed: int = 0) -> np.ndarray:
    """(N,21,2) crop keypoints of the usable hands of n evaluation-split scenes, as the test set's crops
    would hold them; the scenes are only sampled, not rendered (fast)."""
    from lib.data import IMAGE_SIZE, competition_crop, usable_hand
    from lib.synth import image_seed
    from lib.synth.scene import SIDES, as_rng, project, sample_scene
    blank = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)  # only the keypoints of the crop are used
    out = []
    for i in range(n_images):
        scene = sample_scene(as_rng(image_seed(seed, "evaluation", i)))
        for side in SIDES:  # left then right, as usable_hand_crops
            uv = project(scene.hands[side].xyz, scene.K)
            if scene.hands[side].present and usable_hand(uv):
                out.append(competition_crop(blank, uv)[1])
    return np.stack(out) if out else np.zeros((0, NUM_JOINTS, 2), np.float32)


def scene_table(real: np.ndarray | None, synth: np.ndarray, seed: int = 0) -> str:
    """Markdown: per statistic the real q10/q50/q90, the synthetic ones exact and with the real
    predictions' error added (N(0, sqrt(48)) px per coordinate), and the gap. The gap of the box's
    side and edge distance is to the exact column (a regression model's predictions shrink inwards,
    not outwards as noise would widen them), of the rest to the noisy one."""
    noisy = synth + np.random.default_rng(seed).normal(0.0, np.sqrt(SUBMISSION_EXAMPLE_MSE), synth.shape)
    S, N = hand_statistics(synth), hand_statistics(noisy)
    R = hand_statistics(real) if real is not None else None

    def q(x: np.ndarray) -> str:
        return "/".join(f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}" for v in np.percentile(x, (10, 50, 90)))

    lines = [f"| statistic (q10/q50/q90) | RHD test, 2018 predictions (n {0 if R is None else len(real)}) | "
             f"synthetic (n {len(synth)}) | synthetic + their error | gap |", "| --- | --- | --- | --- | ---: |"]
    for key in S:
        versus = S if key in EXACT_ROWS else N
        real_q, gap = ("—", "—") if R is None else (q(R[key]), f"{quantile_gap(R[key], versus[key]):.3f}")
        lines.append(f"| {key} | {real_q} | {q(S[key])} | {q(N[key])} | {gap} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the leaderboard baseline
def runs_val_index(files, cache, profile: str | None, runs_dir: Path | None = None) -> tuple[np.ndarray, str]:
    """The validation samples of the finished runs on these files (the most common), else the profile's."""
    from lib.config import TrainConfig
    from lib.ensemble import load_runs
    from lib.train import split_indices
    same = [r for r in load_runs(runs_dir) if Path(r.data_dir).resolve() == files.root.resolve()]
    if same and profile is None:
        key, _ = Counter(r.val_index.tobytes() for r in same).most_common(1)[0]
        names = [r.name for r in same if r.val_index.tobytes() == key]
        return next(r.val_index for r in same if r.val_index.tobytes() == key), f"those of {', '.join(names)}"
    cfg = TrainConfig(profile=profile or "auto", data_dir=str(files.root)).resolved()
    return split_indices(files, cache, cfg)[1], f"the {cfg.profile} profile's"


def make_baseline(data_dir: str = "auto", settings: tuple[str, ...] = ("as-is", "best-rot", "upright"),
                  profile: str | None = None, judge: Judge | None = None, out_dir: Path | None = None,
                  argv: list[str] | None = None) -> list[Path]:
    """The judge's validation and test predictions per setting in out_dir/<folder>/ (see BASELINES)."""
    from lib import data, io, metrics
    from lib.config import ensure_data
    from lib.ensemble import data_fingerprints
    from lib.runs import Run
    from lib.submit import read_submission
    judge = judge or Judge()
    files = data.find_data(ensure_data(data_dir, profile or "auto", render=False))
    cache = data.build_cache(files.training)
    val_idx, source = runs_val_index(files, cache, profile)
    val_crops, gt, vis = np.stack([cache.crop[i] for i in val_idx]), cache.kp[val_idx], cache.vis[val_idx]
    test_crops = data.load_test_crops(files.testing)
    solution = read_submission(files.solution, len(test_crops)) if files.solution else None
    print(f"baseline: {files.root}: {len(val_idx)} validation hands ({source}), {len(test_crops)} test crops")
    written = []
    for st in settings:
        folder, model = BASELINES[st]
        d = Path(out_dir or baselines()) / folder
        (d / "meta.json").unlink(missing_ok=True)  # incomplete until the new meta.json is written
        val_pred = judge_crops(judge, val_crops, gt, st, progress=f"{st} validation")
        if st == "upright" and solution is None:  # needs the test set's ground truth
            test_pred = np.full((len(test_crops), NUM_JOINTS, 2), np.nan)
        else:
            test_pred = judge_crops(judge, test_crops, solution, st, progress=f"{st} test")
        s = {k: v for k, v in metrics.summary(val_pred, gt, vis).items() if k in ("kaggle_mse", "epe", "pck@2px")}
        if solution is not None:
            s["test_kaggle_mse"] = metrics.kaggle_mse(test_pred, solution)
        folder = Run(d)  # the prediction files of a run; meta.json stands for its config
        folder.save_val_index(val_idx)
        folder.save_predictions(val_pred.astype(np.float32), test_pred.astype(np.float32))
        io.write_json(d / "meta.json", {"model": model, "setting": st, "data_dir": str(files.root.resolve()),
                                        "data": data_fingerprints(files),
                                        "validation": source, "val_size": len(val_idx), "test_size": len(test_crops),
                                        "test_pred": "NaN: needs solution.csv" if np.isnan(test_pred).all() else "ok",
                                        "roi_scale": ROI_SCALE, **s, **provenance(argv or ["baseline"])})
        print(f"{d}: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items()), flush=True)
        written.append(d)
    return written


def scene(images: int, seed: int, out: Path | None, argv: list[str], reference: Path = SHARED) -> int:
    """The scene command: synthetic keypoint geometry beside RHD's real test hands."""
    real = rhd_test_predictions(reference)
    if real is None:
        print(f"reference: no {reference / SUBMISSION_EXAMPLE} (only in the team's workspace); "
              "showing the synthetic side alone")
    p = provenance(argv)
    text = "\n".join(["### Scene statistics: synthetic test crops beside RHD's real test hands", "",
                      f"- command: `{p['command']}`", f"- date: {p['date']}", f"- versions: {p['versions']}",
                      "", scene_table(real, synthetic_keypoints(images, seed), seed)]) + "\n"
    print(text)
    if out:
        from benchmarks.report import update_section
        update_section(out, "scene", text)
        print(f"{out}: section scene updated")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line; an expected error is one `error: ...` line and exit code 2 (lib.cli)."""
    return cli.run(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks.realism", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", default="measure", choices=["measure", "fetch", "baseline", "scene"])
    ap.add_argument("--images", type=int, default=400, help="measure, scene: synthetic evaluation images (default 400)")
    ap.add_argument("--seed", type=int, default=0, help="measure: renderer seed")
    ap.add_argument("--setting", nargs="+", choices=SETTINGS,
                    help="default: upright (measure); as-is best-rot upright (baseline)")
    ap.add_argument("--out", type=Path, help="measure: also write the section into this markdown file (e.g. BENCHMARKS.md)")
    ap.add_argument("--rhd", type=Path, metavar="DIR",
                    help="measure: also the first --images images of the RHD evaluation split in DIR (the real "
                         "dataset's RHD_published_v2, or any RHD-layout folder)")
    ap.add_argument("--data-dir", default="auto", help="baseline: the dataset (default: as training picks it)")
    ap.add_argument("--profile", default=None, choices=["full", "cpu", "smoke", "auto"],
                    help="baseline: validation samples of this profile (default: those of the finished runs, else auto)")
    a = ap.parse_args(argv)
    if a.command == "fetch":
        try:
            fetch()
        except (subprocess.SubprocessError, OSError, KeyError, StopIteration, zipfile.BadZipFile) as e:
            print(f"error: fetching the realism meter failed: {e}", file=sys.stderr)
            return 2
        return 0
    if a.images < 1:
        raise ValueError(f"--images: expected a positive count, found {a.images}")
    from benchmarks.report import check_out
    check_out(a.out)
    if a.command == "scene":
        return scene(a.images, a.seed, a.out, argv)
    judge = Judge()
    if a.command == "baseline":
        make_baseline(a.data_dir, tuple(a.setting or BASELINES), a.profile, judge, argv=argv)
        return 0
    rows = measure(a.images, a.seed, tuple(a.setting or ["upright"]), judge, rhd_dir=a.rhd)
    p = provenance(argv)
    text = "\n".join(["### Realism meter: MediaPipe Hands on synthetic and real hands", "",
                      f"- command: `{p['command']}`", f"- date: {p['date']}", f"- versions: {p['versions']}",
                      "", table(rows)]) + "\n"
    print(text)
    if a.out:
        from benchmarks.report import update_section
        update_section(a.out, "realism", text)
        print(f"{a.out}: section realism updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
