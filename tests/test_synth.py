"""Tests of the procedural RHD-style renderer (lib.synth): determinism, geometry, visibility,
file format, bad input and interrupted runs. CPU only, small N."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import lib.synth.dataset as ds
from lib.joints import EDGES
from lib.synth import (JOINT_LIMITS, bone_length_limits, decode_depth, encode_depth,
                       forward_kinematics, pose_from_degrees, project, render_dataset, render_image,
                       render_scene, sample_pose, sample_scene, sample_shape, single_hand_scene)
from lib.synth.hand import rot_y
from lib.synth.scene import DEPTH_MAX, PERSON_ID, VIS_RADIUS, as_rng, related_ids, visibility

REPO = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    return [render_image(np.random.SeedSequence([7, i])) for i in range(12)]


# ---------------------------------------------------------------- determinism
def test_render_image_is_deterministic() -> None:
    a, b = render_image(11), render_image(11)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert not np.array_equal(render_image(12)["color"], a["color"])


def test_dataset_bytes_identical_for_1_and_2_workers(tmp_path: Path) -> None:
    one = render_dataset(tmp_path / "one", "training", 6, seed=3, workers=1)
    two = render_dataset(tmp_path / "two", "training", 6, seed=3, workers=2)
    f1, f2 = _files(one), _files(two)
    assert sorted(f1) == sorted(["anno_training.pickle"] + [f"{d}/{i:05d}.png" for d in ("color", "mask", "depth")
                                                             for i in range(6)])
    assert f1 == f2
    # another split with the same seed draws other images
    ev = render_dataset(tmp_path / "one", "evaluation", 2, seed=3)
    assert (ev / "color/00000.png").read_bytes() != f1["color/00000.png"]


# ---------------------------------------------------------------- format
def test_files_match_the_rhd_layout(tmp_path: Path) -> None:
    split = render_dataset(tmp_path, "evaluation", 3, seed=5)
    with open(split / "anno_evaluation.pickle", "rb") as f:
        anno = pickle.load(f)
    assert sorted(anno) == [0, 1, 2]
    for i, rec in anno.items():
        assert set(rec) == {"uv_vis", "xyz", "K"}
        assert rec["uv_vis"].shape == (42, 3) and rec["xyz"].shape == (42, 3) and rec["K"].shape == (3, 3)
        ref = render_image(ds.image_seed(5, "evaluation", i))
        color = cv2.imread(str(split / f"color/{i:05d}.png"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(split / f"mask/{i:05d}.png"), cv2.IMREAD_UNCHANGED)
        depth = cv2.imread(str(split / f"depth/{i:05d}.png"), cv2.IMREAD_UNCHANGED)
        assert color.shape == (320, 320, 3) and color.dtype == np.uint8
        assert mask.shape == (320, 320) and mask.dtype == np.uint8
        assert np.array_equal(color[:, :, ::-1], ref["color"])
        assert np.array_equal(mask, ref["mask"])
        # RHD depth: metres = (R * 256 + G) / 2**16 * 5
        rgb = depth[:, :, ::-1].astype(np.float64)
        metres = (rgb[..., 0] * 256 + rgb[..., 1]) / 2 ** 16 * 5
        assert np.allclose(metres, ref["depth"], atol=1e-6)
        assert np.array_equal(rec["uv_vis"], ref["uv_vis"]) and np.array_equal(rec["xyz"], ref["xyz"])
        K = rec["K"]
        assert 280 <= K[0, 0] <= 300 and K[0, 0] == K[1, 1] and K[0, 2] == 160 and K[1, 2] == 160


def test_depth_encoding_round_trip(samples: list[dict]) -> None:
    d = np.array([[0.0, 0.3, 1.234567], [4.99, np.inf, 7.0]])
    back = decode_depth(encode_depth(d))
    assert np.allclose(back[0], [0.0, 0.3, 1.234567], atol=5 / 2 ** 16)
    assert back[1, 1] == pytest.approx(DEPTH_MAX) and back[1, 2] == pytest.approx(DEPTH_MAX)
    for s in samples[:3]:
        assert np.array_equal(decode_depth(encode_depth(s["depth"])), s["depth"])
        hand = s["mask"] >= 2
        assert (s["depth"][hand] < DEPTH_MAX).all() and (s["depth"][s["mask"] == 0] == np.float32(DEPTH_MAX)).all()


# ---------------------------------------------------------------- geometry
def test_uv_is_the_projection_of_xyz(samples: list[dict]) -> None:
    for s in samples:
        uv = project(s["xyz"].astype(np.float64), s["K"].astype(np.float64))
        assert np.abs(uv - s["uv_vis"][:, :2]).max() < 0.01


def test_bone_lengths_and_joint_angles_within_limits() -> None:
    rng = np.random.default_rng(0)
    limits = bone_length_limits()
    lo, hi = JOINT_LIMITS[..., 0], JOINT_LIMITS[..., 1]
    for _ in range(400):
        shape, pose = sample_shape(rng), sample_pose(rng)
        assert (pose.angles >= lo - 1e-12).all() and (pose.angles <= hi + 1e-12).all(), pose.kind
        J = forward_kinematics(shape, pose).joints
        for f in range(5):  # PIP and DIP (thumb: MCP and IP) are hinges: bone angle == |flexion|
            tip, dip, pip, base = (J[1 + 4 * f + k] for k in range(4))
            for (a, b, c), ang in (((base, pip, dip), pose.angles[f, 2]), ((pip, dip, tip), pose.angles[f, 3])):
                u, v = b - a, c - b
                cos = u @ v / np.linalg.norm(u) / np.linalg.norm(v)
                assert np.arccos(np.clip(cos, -1, 1)) == pytest.approx(abs(ang), abs=1e-6)
    # the same limits hold for the hands placed in camera space (both sides, incl. the mirrored left)
    for i in range(150):
        xyz = sample_scene(as_rng(i)).xyz
        for h in range(2):
            P = xyz[21 * h:21 * h + 21]
            lengths = np.array([np.linalg.norm(P[b] - P[a]) for a, b in EDGES])
            assert (lengths >= limits[:, 0] - 1e-9).all() and (lengths <= limits[:, 1] + 1e-9).all()


def test_left_hand_is_the_mirrored_right_hand() -> None:
    pose = sample_pose(np.random.default_rng(4))
    scene = single_hand_scene(pose, np.eye(3), distance=0.5)
    L, R = scene.hands["left"], scene.hands["right"]
    a = (L.xyz - L.t) * np.array([-1, 1, 1])
    assert np.allclose(a, R.xyz - R.t)


def test_hand_sizes_and_placement_are_rhd_like() -> None:
    sizes, inside = [], 0
    for i in range(300):
        scene = sample_scene(as_rng(1000 + i))
        full = False
        for hand in scene.hands.values():
            uv = project(hand.xyz, scene.K)
            in_img = ((uv >= 0) & (uv <= 319)).all(axis=1)
            if hand.present:
                sizes.append(np.ptp(uv, axis=0).max())
                full |= bool(in_img.all())
            else:
                assert not in_img.any()
        inside += full
    sizes = np.array(sizes)
    assert sizes.min() > 15 and sizes.max() < 160  # RHD's characters are seen whole: small hands
    assert 45 < np.median(sizes) < 75 and (sizes < 128).mean() > 0.95
    assert inside / 300 > 0.8


def test_two_hands_mostly_apart() -> None:
    """A person's two hands overlap in the picture now and then (OVERLAP_P), not by chance placement."""
    pairs = overlapping = 0
    for i in range(400):
        scene = sample_scene(as_rng(2000 + i))
        boxes = [project(h.xyz, scene.K) for h in scene.hands.values() if h.present]
        if len(boxes) < 2:
            continue
        lo, hi = [b.min(axis=0) for b in boxes], [b.max(axis=0) for b in boxes]
        pairs += 1
        overlapping += bool((np.minimum(hi[0], hi[1]) > np.maximum(lo[0], lo[1])).all())
    assert pairs > 150 and overlapping / pairs < 0.22   # 0.15 measured; 0.32 with placement by chance


# ---------------------------------------------------------------- visibility
def test_palm_hides_a_curled_fingertip() -> None:
    # index finger curled into the palm, other fingers straight
    pose = pose_from_degrees([0, -10, 5, 5], [[90, 0, 100, 70], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    back = render_scene(single_hand_scene(pose, np.eye(3), distance=0.35), np.random.default_rng(0))
    vis = back["uv_vis"][21:, 2]  # right hand; R = I shows the back of the hand
    assert vis[5] == 0 and vis[6] == 0  # index tip and DIP hidden by the palm
    assert vis[[0, 9, 13, 17]].all()  # wrist and the straight fingers' tips are seen
    assert not back["uv_vis"][:21, 2].any()  # the left hand is off-screen
    assert (back["uv_vis"][:21, 0] < 0).all()
    palm = render_scene(single_hand_scene(pose, rot_y(np.pi), distance=0.35), np.random.default_rng(0))
    vis = palm["uv_vis"][21:, 2]  # seen from the palm side the curled finger is in front: its PIP
    assert vis[7] == 1 and vis[8] == 1  # shows, and its MCP, behind it, is hidden by its own finger only


def test_visibility_follows_rhds_segmentation_rule() -> None:
    # K = identity and z = 1: joint k projects onto pixel (u, v); a 20x20 mask, right-hand ids (+16)
    mask = np.zeros((20, 20), np.uint8)
    mask[:, 10:] = 33            # right palm
    mask[0:6, 0:6] = 5 + 16      # right index, tip segment
    mask[14:20, 0:6] = 8 + 16    # right middle, tip segment
    mask[8:12, 0:10] = PERSON_ID  # forearm beside the palm
    xyz = np.full((42, 3), [-50.0, -50.0, 1.0])   # off-image: hidden
    at = {21 + 5: (2, 2),    # index tip on its own finger: seen
          21 + 9: (2, 2),    # middle tip on the index: hidden by another finger
          21 + 13: (15, 10), # ring tip on the palm: hidden
          21 + 17: (7, 3),   # little tip on background next to the index: no related pixel, hidden
          21 + 8: (10, 15),  # index MCP on the palm: seen (the palm is related to a finger's base)
          21 + 0: (9, 10),   # wrist between palm and forearm: seen
          5: (2, 2)}         # the LEFT index tip on the right index: hidden
    for k, (u, v) in at.items():
        xyz[k] = (u, v, 1.0)
    vis = visibility(xyz, np.eye(3), mask)
    assert {k for k in range(42) if vis[k]} == {21 + 5, 21 + 8, 21 + 0}
    assert related_ids(21 + 8) == {21, 22, 23, 33} and related_ids(0) == {17}


def test_visible_joints_lie_on_their_own_hand(samples: list[dict]) -> None:
    n_in, n_vis = 0, 0
    for s in samples:
        uv, vis = s["uv_vis"][:, :2], s["uv_vis"][:, 2]
        assert set(np.unique(vis)) <= {0.0, 1.0}
        assert set(np.unique(s["mask"])) <= set(range(34))
        ij = np.floor(uv + 0.5).astype(int)
        inside = ((ij >= 0) & (ij < 320)).all(axis=1)
        assert not vis[~inside].any()
        r = VIS_RADIUS
        for k in np.nonzero(vis)[0]:  # a related class in the joint's neighbourhood
            x, y = ij[k]
            assert np.isin(s["mask"][max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1], list(related_ids(k))).any()
        n_in += inside.sum()
        n_vis += vis.sum()
    # occlusion by other fingers, the palm, the other hand and objects is common, but most joints are seen
    assert 0.5 < n_vis / n_in < 0.95


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_invalid_counts_are_refused(tmp_path: Path, n) -> None:
    with pytest.raises(ValueError, match="n_images"):
        render_dataset(tmp_path, "training", n, seed=0)
    assert not (tmp_path / "training").exists()


def test_invalid_split_and_workers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        render_dataset(tmp_path, "test", 2, seed=0)
    with pytest.raises(ValueError, match="workers"):
        render_dataset(tmp_path, "training", 2, seed=0, workers=0)


def _unwritable(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o500)
        return d / "out"
    if Path("/sys").is_dir():  # root may write anywhere else; sysfs refuses new entries
        return Path("/sys/synth_test_output")
    pytest.skip("no unwritable location available to root")


def test_unwritable_output_directory(tmp_path: Path) -> None:
    out = _unwritable(tmp_path)
    with pytest.raises(PermissionError, match=str(out)):
        render_dataset(out, "training", 2, seed=0)


def test_existing_output_is_refused_unless_overwrite(tmp_path: Path) -> None:
    split = render_dataset(tmp_path, "training", 2, seed=0)
    first = _files(split)
    with pytest.raises(FileExistsError, match="anno_training.pickle.*overwrite"):
        render_dataset(tmp_path, "training", 2, seed=0)
    assert _files(split) == first
    render_dataset(tmp_path, "training", 1, seed=1, overwrite=True)
    assert sorted(_files(split)) == ["anno_training.pickle", "color/00000.png", "depth/00000.png", "mask/00000.png"]
    # unknown files in the image folders are not overwritten silently either
    other = tmp_path / "x"
    (other / "training" / "color").mkdir(parents=True)
    (other / "training" / "color" / "00000.png").write_bytes(b"not ours")
    with pytest.raises(FileExistsError, match="unknown run"):
        render_dataset(other, "training", 1, seed=0)


def test_cli_reports_bad_input(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "lib.synth", "--out", str(tmp_path), "--split", "training",
                        "--images", "0", "--seed", "0"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "n_images must be an integer >= 1" in r.stderr


# ---------------------------------------------------------------- interrupted runs
def test_interrupted_run_resumes_to_identical_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean = _files(render_dataset(tmp_path / "clean", "training", 5, seed=9))
    real_write = ds.write_sample

    def dying_write(split_dir, index, sample):
        if index == 3:
            raise KeyboardInterrupt  # as if the run were killed while writing image 3
        real_write(split_dir, index, sample)

    monkeypatch.setattr(ds, "write_sample", dying_write)
    with pytest.raises(KeyboardInterrupt):
        render_dataset(tmp_path / "run", "training", 5, seed=9)
    monkeypatch.undo()
    split = tmp_path / "run" / "training"
    assert not (split / "anno_training.pickle").exists()  # no half-written annotation
    assert (split / ds.MANIFEST).exists()
    assert sorted(p.name for p in (split / "color").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    # a killed process can leave a temporary file and a broken image behind
    (split / "color" / ".00003.png.abc.tmp.png").write_bytes(b"partial")
    (split / "depth" / "00001.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(FileExistsError, match="other arguments"):
        render_dataset(tmp_path / "run", "training", 6, seed=9)
    render_dataset(tmp_path / "run", "training", 5, seed=9)  # same arguments: resume
    assert _files(split) == clean
    assert not (split / ds.MANIFEST).exists()


# ---------------------------------------------------------------- contact sheet
def test_contact_sheet(tmp_path: Path) -> None:
    from lib.synth import contact_sheet
    out = contact_sheet(tmp_path / "sheet.png", seed=1)
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] == 4 * 320 + 128 and img.shape[1] in (4 * 320, 5 * 320)
    row = img[4 * 320:]  # the network's view: 128 px competition crops, not the grey fill
    assert (row[:, :128] != 40).any() and (row[:, 128:256] != 40).any()


def test_contact_sheet_inside_the_repo_never_shows_real_frames(tmp_path: Path, monkeypatch, capsys) -> None:
    """The real RHD frames are research-only: a sheet written where it could be committed leaves them out."""
    from lib.synth import sheet
    repo = tmp_path / "repo"
    assert sheet.committable(repo / "docs" / "s.jpg", repo) and sheet.committable(repo / "s.png", repo)
    assert not sheet.committable(repo / "outputs" / "s.png", repo) and not sheet.committable(tmp_path / "s.png", repo)
    monkeypatch.setattr(sheet, "REPO", repo)
    monkeypatch.setattr(sheet, "real_frames", lambda: pytest.fail("real frames were read for a committable sheet"))
    (repo / "docs").mkdir(parents=True)
    img = cv2.imread(str(sheet.contact_sheet(repo / "docs" / "sheet.png", seed=1, n=4)))
    assert img.shape[1] == 4 * 320 and "left out" in capsys.readouterr().out


# ---------------------------------------------------------------- renderer v2: one smooth skin, skin detail
def test_sdf_of_primitives_is_zero_on_their_surface() -> None:
    from lib.synth.hand import Prim
    from lib.synth.render import _sdf_grad
    cone = Prim("cone", np.zeros(3), np.array([0.0, 0.05, 0.0]), 0.010, 0.008)
    pts = np.array([[0.010, 0.0, 0.0], [0.0, -0.010, 0.0], [0.0, 0.058, 0.0], [0.0, 0.03, 0.008]])
    d, g = _sdf_grad(cone, pts)
    assert np.abs(d[:3]).max() < 1e-9 and d[3] < 0                 # sphere caps exact; a point inside
    assert np.allclose(np.linalg.norm(g, axis=1), 1.0)
    assert np.allclose(g[:3], [[1, 0, 0], [0, -1, 0], [0, 1, 0]])
    ell = Prim("ell", np.zeros(3), np.diag([0.02, 0.01, 0.005]))
    d, g = _sdf_grad(ell, np.array([[0.02, 0, 0], [0, 0.012, 0], [0, 0, 0.004]]))
    assert np.allclose(d, [0.0, 0.002, -0.001], atol=1e-9) and np.allclose(g, np.eye(3))


def _normals(blend: bool) -> tuple[np.ndarray, np.ndarray]:
    """Normals along a line across the seam of two round cones meeting at 90 degrees."""
    from lib.synth.hand import Prim
    from lib.synth.render import Canvas, Surface
    from lib.synth.scene import camera_matrix
    cv = Canvas(camera_matrix(290.0, 96), 96, 96)
    a = Prim("cone", np.array([-0.05, 0.0, 0.3]), np.array([0.0, 0.0, 0.3]), 0.012, 0.012)
    b = Prim("cone", np.array([0.0, 0.0, 0.3]), np.array([0.0, 0.05, 0.3]), 0.012, 0.012)
    with np.errstate(invalid="ignore", divide="ignore"):
        for p in (a, b):
            cv.round_cone(p.a, p.b, p.ra, p.rb, Surface(2, "skin", np.ones(3), owner=1))
    if blend:
        cv.blend_normals([a, b], owner=1, k=0.004)
    return cv.normal, cv.label


def test_blended_normals_are_unit_and_smooth_across_seams() -> None:
    hard, label = _normals(False)
    soft, _ = _normals(True)
    m = label > 0
    assert np.allclose(np.linalg.norm(soft[m], axis=1), 1.0, atol=1e-5)
    # the largest normal change between neighbouring skin pixels: a crease without blending, none with it
    def max_step(n: np.ndarray) -> float:
        both = m[:, 1:] & m[:, :-1]
        return float(np.linalg.norm(n[:, 1:] - n[:, :-1], axis=2)[both].max())
    assert max_step(soft) < 0.6 * max_step(hard)


def test_skin_detail_palm_lines_only_on_the_palm_side() -> None:
    from lib.synth import skin
    from lib.synth.hand import HandShape
    model = forward_kinematics(HandShape(), pose_from_degrees([0, 0, 0, 0], [[0, 0, 0, 0]] * 4))
    line = skin.PALM_LINES[0][1]                      # a point on the "heart" line
    q = np.array([[line[0], line[1], 0.012], [line[0], line[1], -0.012]])
    n = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])  # palmar side, back of the hand
    f = skin.detail(model, q, n, np.array([0, 0]), seed=3, strength=1.0)
    plain = skin.detail(model, q, n, np.array([0, 0]), seed=3, strength=0.0)
    assert np.allclose(plain, 1.0)
    assert f[0] < 0.85 and abs(f[1] - 1.0) < 0.12   # a dark line on the palm; mottling only on the back
    assert np.array_equal(f, skin.detail(model, q, n, np.array([0, 0]), seed=3))  # deterministic


def test_a_synthetic_set_that_cannot_fit_is_refused_before_rendering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                      ) -> None:
    """ensure_data weighs the profile's set against the free disk before rendering it: one line naming
    the folder, the set, the need, the free space and HANDJOINTS_DATA as a way out, nothing rendered;
    one byte more and it renders; the images of a stopped render count as written."""
    import shutil

    from lib import cli, config, io

    monkeypatch.setenv("HANDJOINTS_DATA", str(tmp_path))
    monkeypatch.setitem(config.PROFILES["smoke"], "synthetic", (3, 2))
    need = 3 * config.DISK_PER_IMAGE["training"] + 2 * config.DISK_PER_IMAGE["evaluation"]

    def free(n: int) -> None:
        monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 40, (1 << 40) - n, n))

    free(need + io.FULL_BELOW - 1)
    with pytest.raises(OSError) as e:
        config.ensure_data("auto", "smoke", workers=1)
    line = cli.format_error(e.value)
    out = config.synthetic_dir("smoke")
    assert line.startswith(f"{out}: the smoke profile's synthetic set (3 training + 2 evaluation images) needs "
                           f"{need / 2**20:.1f} MB and 32 MB to spare, and its disk has "), line
    assert line.endswith("or set HANDJOINTS_DATA to a folder on a larger disk") and "\n" not in line
    assert not list(tmp_path.rglob("*.png"))
    free(need + io.FULL_BELOW)
    assert config.ensure_data("auto", "smoke", workers=1) == out
    (out / config.STAMP).unlink()  # as if stopped after rendering: the images are on the disk already
    free(need + io.FULL_BELOW - 1)
    assert config.ensure_data("auto", "smoke", workers=1) == out


def test_data_of_another_renderer_version_is_rendered_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    import json

    from lib import config
    monkeypatch.setenv("HANDJOINTS_DATA", str(tmp_path))
    monkeypatch.setitem(config.PROFILES["smoke"], "synthetic", (3, 2))
    out = config.ensure_data("auto", "smoke", workers=1)
    stamp = json.loads((out / config.STAMP).read_text())
    assert stamp["renderer"] == ds.RENDERER_VERSION
    first = (out / "training.h5").stat().st_mtime_ns
    assert config.ensure_data("auto", "smoke", workers=1) == out           # same version: kept
    assert (out / "training.h5").stat().st_mtime_ns == first
    (out / config.STAMP).write_text(json.dumps({**stamp, "renderer": ds.RENDERER_VERSION - 1}))
    capsys.readouterr()
    config.ensure_data("auto", "smoke", workers=1)
    assert "another synthetic set" in capsys.readouterr().out
    assert (out / "training.h5").stat().st_mtime_ns != first
    assert json.loads((out / config.STAMP).read_text())["renderer"] == ds.RENDERER_VERSION


def test_tendon_relief_only_on_the_back_of_the_hand() -> None:
    from lib.synth import skin
    from lib.synth.hand import HandShape
    model = forward_kinematics(HandShape(), pose_from_degrees([0, 0, 0, 0], [[0, 0, 0, 0]] * 4))
    a = model.joints[8, :2]                                 # index MCP; its tendon runs towards the wrist
    b = np.array([0.0, 0.012]) + (a - np.array([0.0, 0.012])) * 0.5
    u = (b - a) / np.linalg.norm(b - a)
    beside = a + 0.3 * (b - a) + 0.002 * np.array([u[1], -u[0]])   # 2 mm to the side of the tendon line
    q = np.array([[*beside, -0.012], [*beside, 0.012], [*beside, -0.012]])
    n = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    dn = skin.relief(model, q, n, np.array([0, 0, 3]))       # back of the palm, palm side, a finger
    assert np.linalg.norm(dn[0]) > 0.05 and dn[0, 2] == 0   # tilted sideways, away from the ridge
    assert not dn[1:].any()
