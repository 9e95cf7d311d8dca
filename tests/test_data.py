"""The data layer: the exact competition crop, file formats, readers' errors, split, cache."""
import json

import cv2
import h5py
import numpy as np
import pytest

from lib import data
from lib.data import DataError, competition_crop, crop_box
from tests.conftest import fake_rhd, skin_image


def box_kp(x0, x1, y0, y1):
    """21 keypoints spanning exactly [x0, x1] × [y0, y1]."""
    kp = np.zeros((21, 2), np.float32)
    kp[:, 0] = np.linspace(x0, x1, 21)
    kp[:, 1] = np.linspace(y0, y1, 21)[::-1]
    return kp


# --------------------------------------------------------------------------- the crop, every branch


def test_crop_box_margin_and_extend_shorter_side_towards_plus():
    # x: ceil(100.2)=101, floor(150.7)=150 -> 93..158 (w 65); y: 51..70 -> 43..78 (h 35) -> y_max = 43+65
    assert crop_box(box_kp(100.2, 150.7, 50.5, 70.1)) == (93, 43, 65)


def test_crop_box_extends_x_when_x_is_shorter():
    assert crop_box(box_kp(10.0, 20.0, 10.0, 60.0)) == (2, 2, 66)


def test_crop_box_no_margin_at_left_and_top_border():
    # x_min 3 - 8 < 0 keeps 3; y_min 5 keeps 5; x_max 50+8, y_max 40+8
    assert crop_box(box_kp(3.0, 50.0, 5.0, 40.0)) == (3, 5, 55)


def test_crop_box_max_equal_to_size_is_clamped_and_no_margin_at_far_border():
    # x_max = floor(320) = 320 -> 319; 319 + 8 >= 320: no margin; x_min 250 - 8 = 242 -> w 77
    x0, y0, side = crop_box(box_kp(250.0, 320.0, 100.0, 120.0))
    assert (x0, side) == (242, 77) and y0 == 92


def test_crop_box_flush_against_far_border_when_extension_leaves_image():
    # x: 2..108 (w 106); y: 292..318 (h 26); 292 + 106 > 319 -> y_min = 318 - (106 - (320-318-1)) = 213
    assert crop_box(box_kp(10.0, 100.0, 300.0, 310.0)) == (2, 213, 106)


def test_crop_box_flush_x_at_far_border():
    # y: 2..108 (h 106); x: 292..318 -> x_min = 213, x_max = 319
    assert crop_box(box_kp(300.0, 310.0, 10.0, 100.0)) == (213, 2, 106)


@pytest.mark.parametrize("bad", [(-1.2, 50.0), (10.0, 321.0)])
def test_crop_rejects_hands_outside(bad):
    kp = box_kp(10, 50, 10, 50)
    kp[3] = bad
    with pytest.raises(ValueError, match="outside"):
        crop_box(kp)


def test_crop_accepts_course_rule_edges():
    kp = box_kp(10, 50, 10, 50)
    kp[0] = (-0.5, 320.5)  # ceil(-0.5) = 0 and floor(320.5) = 320 are inside by the course's rule
    crop_box(kp)


def test_competition_crop_pixels_and_keypoints():
    img = np.random.default_rng(0).integers(0, 255, (320, 320, 3), dtype=np.uint8)
    kp = box_kp(100.2, 150.7, 50.5, 70.1)
    crop, out = competition_crop(img, kp)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8 and out.dtype == np.float32
    expected = cv2.resize(img[43:108, 93:158], (128, 128), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crop, expected)
    np.testing.assert_allclose(out, (kp - (93, 43)) * 128 / 65, rtol=1e-6)


def test_competition_crop_clamps_the_one_joint_beyond_the_width():
    img = np.zeros((320, 320, 3), np.uint8)
    kp = box_kp(250.0, 320.0, 100.0, 120.0)  # joint 20 at x = 320, crop ends at 319 exclusive
    _, out = competition_crop(img, kp)
    assert out[20, 0] == pytest.approx(128.0)  # (320 - 242) > 77 -> set to 77 -> scaled to 128
    assert out[19, 0] < 128


def test_context_crop_centre_matches_competition_crop():
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 255, (320, 320, 3), dtype=np.uint8), (0, 0), 3)
    for kp in (box_kp(100.2, 150.7, 50.5, 70.1), box_kp(10, 100, 300, 310), box_kp(60, 260, 40, 240)):
        crop, label = competition_crop(img, kp)
        ctx, p, s = data.context_crop(img, kp)
        centre = ctx[32:160, 32:160].astype(int)
        assert np.abs(centre - crop.astype(int)).max() <= 1
        keep = label.max(axis=1) < 127.9  # the clamped joint aside
        np.testing.assert_allclose(data.label_from_pixels(p - 32, s)[keep], label[keep], atol=1e-3)


# --------------------------------------------------------------------------- files


@pytest.fixture
def built(tmp_path):
    rhd = fake_rhd(tmp_path / "rhd")
    out = tmp_path / "comp"
    summary = data.build_competition(rhd, out)
    return rhd, out, summary


def test_build_round_trip(built):
    rhd, out, summary = built
    anno = data.read_rhd_annotations(rhd, "training")
    expected = [(i, h) for i in sorted(anno) for h in (0, 1) if data.hand_inside(anno[i]["uv_vis"][21 * h : 21 * h + 21, :2])]
    assert summary["train_hands"] == len(expected) == 8  # 5 images, 2 with the right hand outside
    with h5py.File(out / "training.h5") as f:
        assert f["train/img"].dtype == np.uint8 and f["train/img"].shape == (8, 3, 320, 320)
        assert f["train/kp_2D"].dtype == np.float32 and f["train/vis_2D"].shape == (8, 21, 1)
    with data.TrainingFile(out / "training.h5") as tf:
        assert tf.channel_order == "bgr"  # written as the course's OpenCV scripts did, detected back
        for k, (i, h) in enumerate(expected):
            np.testing.assert_array_equal(tf.images(k), data.read_rhd_image(rhd, "training", i))
            np.testing.assert_allclose(tf.kp[k], anno[i]["uv_vis"][21 * h : 21 * h + 21, :2], rtol=1e-6)
        ids = tf.image_ids()
        assert ids.tolist() == [0, 0, 2, 3, 3, 5, 5, 7]  # image 1 and 4 have one usable hand
    test_anno = data.read_rhd_annotations(rhd, "evaluation")
    crops = data.load_test_crops(out / "testing.h5")
    with h5py.File(out / "testing.h5") as f:
        assert f["test/img"].dtype == np.float32 and f["test/img"].shape[1:] == (3, 128, 128)
    sol = data.read_keypoints_csv(out / "solution.csv", len(crops))
    k = 0
    for i in sorted(test_anno):  # left then right hand per image
        for h in (0, 1):
            uv = test_anno[i]["uv_vis"][21 * h : 21 * h + 21, :2]
            if data.hand_inside(uv):
                c, lab = competition_crop(data.read_rhd_image(rhd, "evaluation", i), uv)
                np.testing.assert_array_equal(crops[k], c)
                np.testing.assert_allclose(sol[k], lab, atol=1e-5)
                k += 1
    assert k == len(crops) == summary["test_hands"]


def test_keypoints_csv_round_trip_and_refusals(tmp_path):
    kp = np.random.default_rng(0).uniform(0, 128, (3, 21, 2))
    data.write_keypoints_csv(tmp_path / "kp.csv", kp)
    np.testing.assert_allclose(data.read_keypoints_csv(tmp_path / "kp.csv", 3), kp, atol=1e-6)
    with pytest.raises(DataError, match="kp.csv: rows: expected 4"):
        data.read_keypoints_csv(tmp_path / "kp.csv", 4)
    (tmp_path / "bad.csv").write_text("Id,x\n0,1\n")
    with pytest.raises(DataError, match="bad.csv: header"):
        data.read_keypoints_csv(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError):
        data.read_keypoints_csv(tmp_path / "missing.csv")


def test_build_refuses_existing_output(built):
    rhd, out, _ = built
    with pytest.raises(FileExistsError, match="overwrite"):
        data.build_competition(rhd, out)


def test_channel_order_explicit_and_detected(tmp_path):
    rng = np.random.default_rng(3)
    kp = np.stack([box_kp(80, 200, 60, 220)] * 3)
    imgs = [skin_image(rng, k) for k in kp]
    data.write_training(tmp_path / "rgb.h5", imgs, kp, np.ones((3, 21)), channel_order="rgb")
    with data.TrainingFile(tmp_path / "rgb.h5") as tf:
        assert tf.channel_order == "rgb" and "red > blue" in tf.channel_reason
        np.testing.assert_array_equal(tf.images(0), imgs[0])
    with data.TrainingFile(tmp_path / "rgb.h5", channel_order="bgr") as tf:
        np.testing.assert_array_equal(tf.images(0), imgs[0][..., ::-1])


# --------------------------------------------------------------------------- bad input


def write_h5(path, **arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def good_train(n=2):
    kp = np.stack([box_kp(50, 150, 60, 160)] * n)
    return {"train/img": np.zeros((n, 3, 320, 320), np.uint8), "train/kp_2D": kp,
            "train/vis_2D": np.ones((n, 21, 1), np.uint8)}


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("train/kp_2D"), "train/kp_2D: expected a dataset"),
        (lambda d: d.update({"train/img": np.zeros((2, 3, 300, 300), np.uint8)}), r"train/img: expected shape \(N, 3, 320, 320\)"),
        (lambda d: d.update({"train/img": np.zeros((2, 3, 320, 320), np.float32)}), "train/img: expected dtype uint8"),
        (lambda d: d["train/kp_2D"].__setitem__((1, 4, 0), np.nan), "train/kp_2D: expected finite keypoints.*entries \\[1\\]"),
        (lambda d: d["train/kp_2D"].__setitem__((0, 4, 0), 400.0), "train/kp_2D: expected keypoints inside"),
        (lambda d: d.update({"train/vis_2D": np.ones((3, 21, 1), np.uint8)}), "train/vis_2D: expected 2 entries"),
    ],
)
def test_training_file_errors_name_file_key_expected_found(tmp_path, mutate, match):
    arrays = good_train()
    mutate(arrays)
    path = tmp_path / "training.h5"
    write_h5(path, **arrays)
    with pytest.raises(DataError, match=match) as e:
        data.TrainingFile(path, "rgb")
    assert str(path) in str(e.value) and "found" in str(e.value)


def test_truncated_and_missing_files(tmp_path):
    path = tmp_path / "training.h5"
    write_h5(path, **good_train())
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DataError, match="truncated or corrupt"):
        data.TrainingFile(path)
    with pytest.raises(FileNotFoundError, match="kaggle competitions download mp18-hand-joint-recognition"):
        data.TrainingFile(tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError, match="make data"):
        data.find_data(tmp_path / "empty")


def test_testing_file_value_range(tmp_path):
    path = tmp_path / "testing.h5"
    write_h5(path, **{"test/img": np.full((2, 3, 128, 128), 0.5, np.float32)})
    with pytest.raises(DataError, match="test/img: expected pixel values in 0..255"):
        data.TestingFile(path)


def test_rhd_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="anno_training.pickle"):
        data.read_rhd_annotations(tmp_path, "training")
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "anno_training.pickle").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="corrupt"):
        data.read_rhd_annotations(tmp_path, "training")


def test_interrupted_write_leaves_nothing(tmp_path):
    def images():
        yield np.zeros((320, 320, 3), np.uint8)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        data.write_training(tmp_path / "training.h5", images(), np.zeros((2, 21, 2)), np.zeros((2, 21)))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- split and cache


def test_split_never_leaks_an_image(tmp_path):
    ids = np.repeat(np.arange(500), np.random.default_rng(0).integers(1, 3, 500))
    val = data.make_split(ids, 0.2, seed=7)
    assert not set(ids[val]) & set(ids[~val])
    assert 0.15 < len(np.unique(ids[val])) / 500 < 0.25
    np.testing.assert_array_equal(val, data.make_split(ids, 0.2, seed=7))
    saved = data.load_or_make_split(tmp_path, ids, "src", 0.2, seed=7)
    np.testing.assert_array_equal(saved, val)
    assert json.loads((tmp_path / "split.json").read_text())["seed"] == 7
    np.testing.assert_array_equal(data.load_or_make_split(tmp_path, ids, "src", 0.2, seed=7), val)  # reused
    other = data.load_or_make_split(tmp_path, ids, "src", 0.5, seed=1)  # other parameters: a new split
    assert 0.4 < len(np.unique(ids[other])) / 500 < 0.6


def test_cache_built_by_processes_equals_one_process(built, tmp_path, monkeypatch):
    """build_cache splits a big file over processes (a share each); the cache is byte for byte the
    one a single process builds, image ids included."""
    _, out, _ = built
    one = data.build_cache(out / "training.h5", tmp_path / "one")
    monkeypatch.setattr(data, "CACHE_HANDS_PER_PROCESS", 3)  # 8 hands: 2 processes on 2 cores
    many = data.build_cache(out / "training.h5", tmp_path / "many")
    for name in ("crop.u8", "ctx.u8"):
        assert (one.dir / name).read_bytes() == (many.dir / name).read_bytes()
    for name in ("kp", "ctx_kp", "scale", "vis", "image_ids"):
        np.testing.assert_array_equal(getattr(one, name), getattr(many, name))


def test_cache_build_reuse_and_rebuild(built, tmp_path):
    _, out, _ = built
    cache = data.build_cache(out / "training.h5", tmp_path / "cache")
    assert len(cache) == 8 and cache.info["channel_order"] == "bgr"
    with data.TrainingFile(out / "training.h5") as tf:
        crop, kp = competition_crop(tf.images(3), tf.kp[3])
    np.testing.assert_array_equal(cache.crop[3], crop)
    np.testing.assert_allclose(cache.kp[3], kp)
    assert data.build_cache(out / "training.h5", tmp_path / "cache").dir == cache.dir  # reused
    import os
    os.utime(out / "training.h5", ns=(1, 1))  # the source changed
    assert data.build_cache(out / "training.h5", tmp_path / "cache").dir != cache.dir
    ds = data.HandDataset(cache, np.arange(8))
    item = ds[3]
    assert item["image"].shape == (3, 128, 128) and item["kp"].shape == (21, 2)


# --------------------------------------------------------------------------- real RHD frames


def test_crop_lands_on_the_hand_in_real_rhd_frames(shared_reference, tmp_path):
    meta = json.loads((shared_reference / "rhd_samples" / "test_rhd.json").read_text())
    for img_meta, ann in zip(meta["images"], meta["annotations"]):
        img = cv2.imread(str(shared_reference / "rhd_samples" / img_meta["file_name"]))[..., ::-1]
        kp = np.asarray(ann["keypoints"], np.float32)[:, :2]
        crop, out = competition_crop(img, kp)
        # every keypoint in the crop; the tight box + margin touches or nearly touches the borders
        assert (out >= 0).all() and (out <= 128).all()
        assert out.min() < 16 and out.max() > 112
        # the hand is there: skin (red > blue) dominates at the keypoints
        order, _ = data.detect_channel_order(np.moveaxis(img, -1, 0)[None], kp[None])
        assert order == "rgb"
        from lib.viz import draw_skeleton, save_png
        save_png(tmp_path / f"{img_meta['file_name']}", draw_skeleton(crop, out, scale=2))
