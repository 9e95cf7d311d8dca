import contextlib
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

pytest_plugins = ["pytester"]  # tests of the suite itself (test_architecture.py)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "reference"


# the most disk the suite's temporary files take at once, measured (2026-11-27): the quick tier 0.6 GB,
# the slow tier 2.0 GB; checked when a whole tier runs (at least DISK_CHECK_FROM tests), not for a few
DISK_NEED_GB = {"quick": 1.0, "slow": 2.5}
DISK_CHECK_FROM = 50


def pytest_collection_finish(session):
    """Stop at once, in one line, where the temporary folder's disk cannot hold the tests' files,
    instead of "No space left on device" inside some test minutes later (as CI once did)."""
    items = session.items
    if len(items) < DISK_CHECK_FROM:
        return
    need = DISK_NEED_GB["slow" if any(i.get_closest_marker("slow") for i in items) else "quick"]
    base = Path(session.config.option.basetemp or os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir())
    where = base
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free / 2**30
    if free < need:
        pytest.exit(f"{base}: these {len(items)} tests need {need} GB free for their temporary files and its disk "
                    f"has {free:.1f} GB; free some space, or give a folder on a larger disk with --basetemp",
                    returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu need a CUDA GPU: skipped without one."""
    if not torch.cuda.is_available():
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (marked gpu)"))


@pytest.fixture(autouse=True)
def _no_gpu_unless_marked(request, monkeypatch):
    """Every test not marked gpu sees a machine without a GPU, as on CI: on a GPU box "auto" would
    otherwise train on CUDA (bf16, cudnn.benchmark, a CUDA graph), where the CPU suite's exact checks
    (resume equality, golden losses) do not hold. In this process and in its children (papermill
    kernels, CLIs, torchrun)."""
    if request.node.get_closest_marker("gpu") is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def shared_reference() -> Path:
    """The real reference samples beside the repo; tests using them skip in a user's clone."""
    if not SHARED.is_dir():
        pytest.skip("../shared/reference is absent (only present in the team's workspace)")
    return SHARED


def skin_image(rng, kp, bgr=False):
    """A noisy background with skin-coloured (red > blue) discs at the keypoints."""
    img = rng.integers(0, 256, (320, 320, 3), dtype=np.uint8)
    for x, y in kp:
        cv2.circle(img, (int(x), int(y)), 5, (205, 150, 120), -1)
    return img


def fake_rhd(root, n_train=5, n_eval=4, seed=0):
    """A tiny RHD-layout directory: some hands inside, some partly outside the image."""
    rng = np.random.default_rng(seed)
    for split, n in (("training", n_train), ("evaluation", n_eval)):
        (root / split / "color").mkdir(parents=True)
        anno = {}
        for i in range(n):
            uv = np.zeros((42, 3))
            for h in (0, 1):
                c = rng.uniform(60, 260, 2)
                uv[21 * h : 21 * h + 21, :2] = c + rng.uniform(-40, 40, (21, 2))
                uv[21 * h : 21 * h + 21, 2] = rng.integers(0, 2, 21)
            if i % 3 == 1:
                uv[21:, 0] += 300  # right hand leaves the image
            img = skin_image(rng, np.concatenate([uv[:21, :2], uv[21:, :2]]))
            cv2.imwrite(str(root / split / "color" / f"{i:05d}.png"), img[..., ::-1])
            anno[i] = {"uv_vis": uv, "xyz": rng.normal(size=(42, 3)), "K": np.eye(3)}
        with open(root / split / f"anno_{split}.pickle", "wb") as f:
            pickle.dump(anno, f)
    return root


@contextlib.contextmanager
def module_dir(tmp_path_factory, name: str):
    """A directory for a module-scoped fixture, deleted when the module's tests are done: with
    pytest.ini's retention policy the disk then holds one module's runs at a time, not the session's."""
    path = tmp_path_factory.mktemp(name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Competition files built from a tiny fake RHD directory (noise images, skin discs at joints)."""
    from lib import data

    root = tmp_path_factory.mktemp("tiny")
    fake_rhd(root / "rhd", n_train=40, n_eval=6, seed=1)
    data.build_competition(root / "rhd", root / "comp")
    return root / "comp"
