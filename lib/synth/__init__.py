"""Procedural renderer of RHD-style ("Rendered Hand Pose") hand images: the embedded dataset.

    render_dataset(out_dir, split, n_images, seed, workers=1, overwrite=False) -> Path
    render_image(seed_or_rng) -> dict(color, mask, depth, uv_vis, xyz, K)
    contact_sheet(out_png, seed=0) -> Path
CLI: python -m lib.synth --help
"""
from __future__ import annotations

from .dataset import SPLITS, image_seed, load_annotations, render_dataset  # noqa: F401
from .hand import (JOINT_LIMITS, HandShape, Pose, bone_length_limits, forward_kinematics,  # noqa: F401
                   pose_from_degrees, sample_pose, sample_shape)
from .scene import (DEPTH_MAX, LEFT_IDS, RENDERER_VERSION, RIGHT_IDS, decode_depth, encode_depth, project,  # noqa: F401
                    render_image, render_scene, render_single_hand, sample_scene, single_hand_scene, visibility)
from .sheet import contact_sheet  # noqa: F401

__all__ = ["render_dataset", "render_image", "render_single_hand", "contact_sheet", "render_scene", "sample_scene",
           "single_hand_scene", "sample_pose", "sample_shape", "forward_kinematics", "pose_from_degrees",
           "JOINT_LIMITS", "bone_length_limits", "visibility", "project", "encode_depth", "decode_depth",
           "load_annotations", "image_seed", "SPLITS", "HandShape", "Pose",
           "LEFT_IDS", "RIGHT_IDS", "DEPTH_MAX", "RENDERER_VERSION"]
