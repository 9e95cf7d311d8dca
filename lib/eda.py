"""Figures and tables for the EDA and augmentation-preview notebooks (each saved as PNG too)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lib import augment, data, joints, viz
from lib.data import CROP_SIZE, IMAGE_SIZE


class Explorer:
    """The training file, its crop cache and the test crops of one data directory."""

    def __init__(self, data_dir: str | os.PathLike, out_dir: str | os.PathLike, max_items: int = 5000):
        self.paths = data.find_data(data_dir)
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.cache = data.build_cache(self.paths.training)
        self.test = data.load_test_crops(self.paths.testing)
        with data.TrainingFile(self.paths.training, verbose=False) as tf:
            self.kp320 = tf.kp
            self.order = (tf.channel_order, tf.channel_reason)
            self.train_raw = tf.read(slice(0, min(48, len(tf))))
        with data.TestingFile(self.paths.testing, verbose=False) as te:
            self.test_order = (te.channel_order, te.channel_reason)
            self.test_raw = te.read(slice(0, min(48, len(te))))
        n = len(self.cache)
        self.sample = np.sort(np.random.default_rng(0).choice(n, min(n, max_items), replace=False))
        self.boxes = np.array([data.crop_box(self.kp320[i]) for i in self.sample])

    def _save(self, fig, name: str):
        viz.save_figure(fig, self.out / f"{name}.png")
        return fig

    def counts(self) -> pd.DataFrame:
        ids = self.cache.image_ids
        return pd.DataFrame({
            "value": [len(self.cache), len(np.unique(ids)), int((np.bincount(ids)[np.unique(ids)] == 2).sum()),
                      len(self.test), f"{self.cache.vis.mean():.1%}", f"{IMAGE_SIZE}×{IMAGE_SIZE}",
                      f"{CROP_SIZE}×{CROP_SIZE}"],
        }, index=["training hands", "training images", "images with two usable hands", "test crops",
                  "visible joints", "training image size", "crop size"])

    def sizes(self):
        """Crop box side in the 320 image (= hand size + margin) and the resize factor to 128."""
        side = self.boxes[:, 2]
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
        sns.histplot(side, bins=40, ax=axes[0])
        axes[0].axvline(CROP_SIZE, color="k", ls="--")
        axes[0].set(title=f"crop box side in the {IMAGE_SIZE}×{IMAGE_SIZE} image (px)", xlabel="px")
        sns.histplot(CROP_SIZE / side, bins=40, ax=axes[1], log_scale=True)
        axes[1].set(title=f"resize factor to {CROP_SIZE} ({(side < CROP_SIZE).mean():.0%} upscaled)",
                    xlabel=f"{CROP_SIZE} / side")
        return self._save(fig, "sizes")

    def visibility(self):
        vis = pd.Series(self.cache.vis.mean(axis=0), index=joints.NAMES)
        fig, ax = plt.subplots(figsize=(11, 3))
        vis.plot.bar(ax=ax, color=[np.array(c) / 255 * 0.8 for c in joints.JOINT_COLORS])
        ax.set(title="share of visible joints", ylim=(0, 1))
        return self._save(fig, "visibility")

    def positions(self):
        """Where joints fall in crop space: the square box extends towards +x/+y, so hands sit up-left."""
        kp = self.cache.kp[self.sample]
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        axes[0].hist2d(kp[..., 0].ravel(), kp[..., 1].ravel(), bins=64, range=[[0, CROP_SIZE], [0, CROP_SIZE]],
                       cmap="magma")
        axes[0].set(title="all joints in crop space", aspect="equal")
        axes[0].invert_yaxis()
        for f, name in enumerate(joints.FINGERS):
            tips = kp[:, joints.TIPS[f]]
            axes[1].scatter(tips[:, 0], tips[:, 1], s=1, alpha=0.3, color=np.array(joints.FINGER_COLORS[f]) / 255, label=name)
        axes[1].set(title="fingertips", xlim=(0, CROP_SIZE), ylim=(CROP_SIZE, 0), aspect="equal")
        axes[1].legend(markerscale=8, fontsize=7)
        centre = kp.reshape(len(kp), -1, 2)
        bbox_c = (centre.min(1) + centre.max(1)) / 2
        mid = (CROP_SIZE - 1) / 2  # the crop centre (pixel centres)
        sns.histplot(x=bbox_c[:, 0] - mid, ax=axes[2], label="x", element="step")
        sns.histplot(x=bbox_c[:, 1] - mid, ax=axes[2], label="y", element="step")
        axes[2].set(title="hand box centre minus crop centre (px)")
        axes[2].legend()
        return self._save(fig, "positions")

    def hand_sizes(self):
        kp = self.kp320[self.sample]
        diag = np.linalg.norm(kp.max(1) - kp.min(1), axis=1)
        fig, ax = plt.subplots(figsize=(6, 3))
        sns.histplot(diag, bins=40, ax=ax)
        ax.set(title=f"hand size: keypoint box diagonal in the {IMAGE_SIZE} image (px)")
        return self._save(fig, "hand_sizes")

    def bones(self) -> pd.DataFrame:
        """2D bone lengths in crop pixels, per bone."""
        kp = self.cache.kp[self.sample]
        rows = {f"{joints.NAMES[a]}→{joints.NAMES[b]}": np.linalg.norm(kp[:, b] - kp[:, a], axis=1) for a, b in joints.EDGES}
        df = pd.DataFrame(rows)
        fig, ax = plt.subplots(figsize=(12, 3.5))
        sns.boxplot(data=df, ax=ax, fliersize=0.5, palette=[np.array(joints.FINGER_COLORS[joints.FINGER_OF[b]]) / 255 for _, b in joints.EDGES])
        ax.tick_params(axis="x", rotation=90, labelsize=7)
        ax.set(title="2D bone length in crop pixels")
        self._save(fig, "bones")
        return df.describe().T[["mean", "std", "min", "50%", "max"]]

    def channels(self) -> pd.DataFrame:
        """Mean R, G, B at the training keypoints and in the test crop centres, after the channel decision."""
        train = np.moveaxis(self.train_raw, 1, -1)
        if self.order[0] == "bgr":
            train = train[..., ::-1]
        kp = self.kp320[: len(train)]
        at_kp = np.array([[train[i, int(y), int(x)] for x, y in np.clip(kp[i], 0, IMAGE_SIZE - 1)]
                          for i in range(len(train))]).reshape(-1, 3)
        test = np.moveaxis(self.test_raw, 1, -1)
        if self.test_order[0] == "bgr":
            test = test[..., ::-1]
        q = CROP_SIZE // 4  # the central half of the crop
        centre = test[:, q:3 * q, q:3 * q].reshape(-1, 3)
        df = pd.DataFrame([at_kp.mean(0), centre.mean(0)], columns=["R", "G", "B"],
                          index=["training, at keypoints", "test, crop centre"])
        df["decision"] = [self.order[1], self.test_order[1]]
        return df

    def sample_grid(self, n: int = 24):
        idx = self.sample[:n]
        tiles = [viz.draw_skeleton(self.cache.crop[i], self.cache.kp[i], self.cache.vis[i], scale=1) for i in idx]
        img = viz.grid(tiles, cols=8)
        viz.save_png(self.out / "samples.png", img)
        return img

    def test_preview(self, n: int = 24):
        img = viz.grid(list(self.test[:n]), cols=8, labels=[str(i) for i in range(n)])
        viz.save_png(self.out / "test_preview.png", img)
        return img


def augmentation_side_by_side(cache: data.CropCache, indices, draws: int = 4, out: str | os.PathLike | None = None) -> np.ndarray:
    """Rows: one sample each; columns: the exact crop, `draws` paper draws, `draws` modern draws."""
    pipes = {name: augment.build(name) for name in ("paper", "modern")}
    tiles, labels = [], []
    for i in indices:
        tiles.append(viz.draw_skeleton(cache.crop[i], cache.kp[i], cache.vis[i]))
        labels.append("crop")
        for name, aug in pipes.items():
            for d in range(draws):
                img, p, s = aug(np.asarray(cache.ctx[i]), cache.ctx_kp[i], float(cache.scale[i]), seed=1000 * int(i) + d)
                tiles.append(viz.draw_skeleton(img, data.label_from_pixels(p, s), cache.vis[i]))
                labels.append(name)
    img = viz.grid(tiles, cols=1 + 2 * draws, labels=labels)
    if out:
        viz.save_png(out, img)
    return img


def each_op(cache: data.CropCache, i: int, out: str | os.PathLike | None = None) -> np.ndarray:
    """The sample under each op of the paper pipeline alone."""
    tiles, labels = [viz.draw_skeleton(cache.crop[i], cache.kp[i])], ["crop"]
    for op in augment.PAPER_OPS:
        img, p, s = augment.build("paper", only=op)(np.asarray(cache.ctx[i]), cache.ctx_kp[i], float(cache.scale[i]), seed=7)
        tiles.append(viz.draw_skeleton(img, data.label_from_pixels(p, s)))
        labels.append(op)
    img = viz.grid(tiles, cols=len(tiles), labels=labels)
    if out:
        viz.save_png(out, img)
    return img


def rollback_stats(cache: data.CropCache, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """How often each paper op is applied and rolled back over n draws."""
    aug = augment.build("paper")
    rng = np.random.default_rng(seed)
    for k, i in enumerate(rng.integers(0, len(cache), n)):
        aug(np.asarray(cache.ctx[i]), cache.ctx_kp[i], float(cache.scale[i]), seed=k)
    df = pd.DataFrame(aug.stats).T
    df["applied_share"] = df["applied"] / n
    df["rolled_back_share"] = df["rolled_back"] / n
    return df
