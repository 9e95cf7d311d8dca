"""Write a synthetic split in the exact RHD layout, deterministically and atomically.

    DIR/<split>/color/%05d.png   320x320 RGB
    DIR/<split>/mask/%05d.png    uint8 RHD label ids
    DIR/<split>/depth/%05d.png   16-bit depth in R (high byte) and G (low byte), metres = v / 2**16 * 5
    DIR/<split>/anno_<split>.pickle   {id: {'uv_vis': (42,3), 'xyz': (42,3), 'K': (3,3)}} float32

Image i is drawn from SeedSequence([seed, split id, i]) alone, so the bytes of every file do
not depend on the number of workers. Every file is written atomically (lib.io): a file is
either absent or complete, and the annotation pickle is written last.

Interrupted runs *resume*: a hidden manifest (.synth_run.json) records the arguments while a
run is unfinished. Rerunning with the same arguments (overwrite=False) keeps every image whose
three PNGs exist and decode, recomputes its annotation from the seed and the saved mask
(exactly what the renderer used), renders the missing ones and then writes the pickle and
removes the manifest. Different arguments, a finished split (pickle present) or unknown files
are refused with FileExistsError unless overwrite=True, which deletes color/, mask/, depth/,
the pickle and the manifest of that split first.
"""
from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing as mp
import os
import pickle
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import process as mp_process
from pathlib import Path

import cv2
import numpy as np

from lib.io import atomic_open, atomic_path, sweep_temporaries, write_json
from lib.joints import NUM_JOINTS

from .scene import (IMAGE_SIZE, RENDERER_VERSION, as_rng, encode_depth, project, render_scene, sample_scene,
                    visibility)

SPLITS = ("training", "evaluation")
SPLIT_IDS = {"training": 0, "evaluation": 1}
MANIFEST = ".synth_run.json"
FORMAT_VERSION = 1
SUBDIRS = ("color", "mask", "depth")
COLOR_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
             cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
PLAIN_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1]
PICKLE_PROTOCOL = 4


def image_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The seed of image `index` of a split: independent of workers and of the other images."""
    return np.random.SeedSequence([int(seed), SPLIT_IDS[split], int(index)])


def _f32(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    # a fresh array with numpy's canonical float32 dtype object: arrays that came back from a
    # worker carry unpickled dtype objects, which would change the pickle's memo and bytes
    out = np.empty(shape, np.float32)
    out[...] = a
    return out


def annotation_entry(uv_vis: np.ndarray, xyz: np.ndarray, K: np.ndarray) -> dict[str, np.ndarray]:
    """One RHD annotation record (fresh float32 arrays, fixed key order)."""
    rows = 2 * NUM_JOINTS  # left hand, then right hand
    return {"uv_vis": _f32(uv_vis, (rows, 3)), "xyz": _f32(xyz, (rows, 3)), "K": _f32(K, (3, 3))}


# ---------------------------------------------------------------- one image
def _png_bytes(img: np.ndarray, params: list[int], path: Path) -> bytes:
    ok, buf = cv2.imencode(".png", img, params)
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    return buf.tobytes()


def _write_png(path: Path, img: np.ndarray, params: list[int]) -> None:
    # atomic rename without fsync (atomic_path): per-image fsyncs would dominate the run time;
    # the pickle, written last, goes through atomic_open (with fsync)
    data = _png_bytes(img, params, path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _paths(split_dir: Path, index: int) -> tuple[Path, Path, Path]:
    name = f"{index:05d}.png"
    return tuple(split_dir / sub / name for sub in SUBDIRS)  # type: ignore[return-value]


def write_sample(split_dir: Path, index: int, sample: dict[str, np.ndarray]) -> None:
    """Write one rendered sample's three PNGs (colour, mask, depth; each atomically)."""
    color, mask, depth = _paths(split_dir, index)
    _write_png(color, cv2.cvtColor(sample["color"], cv2.COLOR_RGB2BGR), COLOR_PNG)
    _write_png(mask, sample["mask"], PLAIN_PNG)
    _write_png(depth, cv2.cvtColor(encode_depth(sample["depth"]), cv2.COLOR_RGB2BGR), PLAIN_PNG)


def _recompute(split_dir: Path, split: str, seed: int, index: int) -> dict[str, np.ndarray] | None:
    """Annotation of an already written image, from its seed and saved mask (None: redo it; its
    three PNGs must exist and decode)."""
    color_p, mask_p, depth_p = _paths(split_dir, index)
    if not (color_p.is_file() and mask_p.is_file() and depth_p.is_file()):
        return None
    color = cv2.imread(str(color_p), cv2.IMREAD_COLOR)
    mask = cv2.imread(str(mask_p), cv2.IMREAD_UNCHANGED)
    depth = cv2.imread(str(depth_p), cv2.IMREAD_COLOR)
    shape = (IMAGE_SIZE, IMAGE_SIZE)
    if (color is None or mask is None or depth is None or color.shape[:2] != shape
            or mask.shape != shape or depth.shape[:2] != shape):
        return None
    scene = sample_scene(as_rng(image_seed(seed, split, index)))
    xyz = scene.xyz
    vis = visibility(xyz, scene.K, mask)
    uv = project(xyz, scene.K)
    return annotation_entry(np.concatenate([uv, vis[:, None]], axis=1), xyz, scene.K)


def _job(args: tuple[str, str, int, int, bool]) -> tuple[int, dict[str, np.ndarray], bool]:
    """Render and write one image (or, when resuming, reuse it). Returns (index, annotation, reused)."""
    split_dir, split, seed, index, resume = args
    split_dir = Path(split_dir)
    if resume:
        ann = _recompute(split_dir, split, seed, index)
        if ann is not None:
            return index, ann, True
    rng = as_rng(image_seed(seed, split, index))
    sample = render_scene(sample_scene(rng), rng)
    write_sample(split_dir, index, sample)
    return index, annotation_entry(sample["uv_vis"], sample["xyz"], sample["K"]), False


def _init_worker() -> None:
    """A render process's start: one thread each for OpenCV, torch, BLAS and OpenMP, as a DataLoader
    worker's (N processes on N cores; the H100 box's 16 cores rendered only ~10 img/s per process
    against ~30 on this repo's CPU box)."""
    from lib.data import worker_init

    from . import backgrounds
    worker_init()
    backgrounds.photos()


# ---------------------------------------------------------------- checks
def _validate(split: str, n_images: int, seed: int, workers: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    for name, v, lo in (("n_images", n_images, 1), ("workers", workers, 1), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


def _check_writable(split_dir: Path) -> None:
    """Create split_dir; PermissionError naming the path when that or writing inside is impossible."""
    p = split_dir
    while not p.exists() and p != p.parent:
        p = p.parent
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"cannot create output directory {split_dir}: {p} is a file, expected a directory")
    try:
        split_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=split_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermissionError(e.errno, f"output directory {split_dir} is not writable ({e.strerror}); "
                                  f"expected a directory where files can be created", str(split_dir)) from e
        # e.g. /proc/x: the parent exists but refuses new entries (ENOENT), a full disk, a name too long
        raise OSError(e.errno, f"output directory {split_dir} cannot be created ({e.strerror or e}); "
                      f"expected a directory where files can be created", str(split_dir)) from e


def _manifest(split: str, n_images: int, seed: int) -> dict:
    return {"format": FORMAT_VERSION, "renderer": RENDERER_VERSION, "split": split, "n_images": int(n_images),
            "seed": int(seed)}


def _has_files(split_dir: Path) -> bool:
    return any(any((split_dir / sub).iterdir()) for sub in SUBDIRS if (split_dir / sub).is_dir())


def _clear(split_dir: Path, split: str) -> None:
    for sub in SUBDIRS:
        shutil.rmtree(split_dir / sub, ignore_errors=True)
    for name in (f"anno_{split}.pickle", MANIFEST):
        with contextlib.suppress(FileNotFoundError):
            (split_dir / name).unlink()


def _remove_temporaries(split_dir: Path) -> None:
    """Delete temporary files a killed run may have left (never complete outputs)."""
    for d in (*(split_dir / sub for sub in SUBDIRS), split_dir):
        sweep_temporaries(d)


def _prepare(split_dir: Path, split: str, n_images: int, seed: int, overwrite: bool) -> bool:
    """Decide between a fresh start and a resume; returns True when resuming."""
    pkl = split_dir / f"anno_{split}.pickle"
    man = split_dir / MANIFEST
    want = _manifest(split, n_images, seed)
    if overwrite:
        _clear(split_dir, split)
        return False
    if pkl.exists():
        raise FileExistsError(errno.EEXIST, f"{pkl} already exists (a finished {split} split); expected an empty "
                              f"or unfinished output directory, or pass overwrite=True (--overwrite)", str(pkl))
    if man.exists():
        try:
            have = json.loads(man.read_text())
        except (OSError, ValueError):
            have = None
        if have == want:
            return True
        raise FileExistsError(errno.EEXIST, f"{split_dir} holds an unfinished run with other arguments ({have}); "
                              f"expected {want} to resume, or pass overwrite=True (--overwrite)", str(split_dir))
    if _has_files(split_dir):
        raise FileExistsError(errno.EEXIST, f"{split_dir} already holds files in {'/'.join(SUBDIRS)} from an unknown "
                              f"run; expected an empty directory, or pass overwrite=True (--overwrite)", str(split_dir))
    return False


# ---------------------------------------------------------------- worker processes
def _why_no_workers() -> str | None:
    """Why worker processes could not start here, or None when they can.

    forkserver and spawn workers re-import the main module: by name (python -m), else from its file.
    A main module whose __file__ is no file (a script piped to `python -`, i.e. '<stdin>', or a
    deleted script) makes every worker die at start-up, and multiprocessing would start new ones forever.
    """
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) is not None:
        return None
    path = getattr(main, "__file__", None)
    if path is None:  # interactive, python -c, a Jupyter kernel: nothing to re-import
        return None
    full = path if os.path.isabs(path) else os.path.join(mp_process.ORIGINAL_DIR or os.getcwd(), path)
    if os.path.isfile(full):
        return None
    return (f"worker processes cannot re-import the main script {path!r} (not a file: a script read from "
            f"standard input?)")


def _render_in_pool(tasks: list, workers: int, collect, split: str) -> list:
    """Run _job over tasks in `workers` processes, handing each result to collect; returns the tasks left
    undone when a worker died (at start-up or later) instead of waiting forever."""
    # not "fork": forking a process that already runs threads (torch, OpenCV, a Jupyter kernel,
    # pytest after a training test) can deadlock the children on a lock held at fork time
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    done: set[int] = set()
    chunksize = max(1, min(16, len(tasks) // (4 * workers)))
    ex = ProcessPoolExecutor(workers, mp_context=mp.get_context(method), initializer=_init_worker)
    try:
        for res in ex.map(_job, tasks, chunksize=chunksize):
            collect(res)
            done.add(res[0])
    except BrokenProcessPool as e:
        left = [t for t in tasks if t[3] not in done]
        print(f"{split}: a worker process died ({e}); rendering the {len(left)} images left with 1 process",
              file=sys.stderr)
        ex.shutdown(wait=True, cancel_futures=True)
        return left
    except BaseException:  # Ctrl-C or an error in a job: do not wait for the queued images
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)
    return []


# ---------------------------------------------------------------- the split
def render_dataset(out_dir: str | os.PathLike, split: str, n_images: int, seed: int, workers: int = 1,
                   overwrite: bool = False, verbose: bool = False) -> Path:
    """Render `n_images` samples of `split` ('training' | 'evaluation') under out_dir/<split>/.

    Output bytes depend only on (seed, split, n_images), never on `workers`. Returns the split
    directory. Raises ValueError (bad arguments), PermissionError (unwritable output),
    FileExistsError (existing output and overwrite=False; see the module docstring for resume).
    """
    _validate(split, n_images, seed, workers)
    split_dir = Path(out_dir) / split
    _check_writable(split_dir)
    resume = _prepare(split_dir, split, n_images, seed, overwrite)
    _remove_temporaries(split_dir)
    for sub in SUBDIRS:
        (split_dir / sub).mkdir(exist_ok=True)
    write_json(split_dir / MANIFEST, _manifest(split, n_images, seed))

    tasks = [(str(split_dir), split, int(seed), i, resume) for i in range(n_images)]
    annos: dict[int, dict[str, np.ndarray]] = {}
    t0, reused = time.time(), 0

    def collect(res: tuple[int, dict, bool]) -> None:
        nonlocal reused
        i, ann, was_reused = res
        annos[i] = ann
        reused += was_reused
        if verbose and (len(annos) % 500 == 0 or len(annos) == n_images):
            rate = len(annos) / max(time.time() - t0, 1e-9)
            print(f"{split}: {len(annos)}/{n_images} images ({reused} reused), {rate:.1f} img/s", file=sys.stderr)

    workers = min(int(workers), n_images)
    if workers > 1 and (why := _why_no_workers()):
        print(f"{split}: {why}; rendering with 1 process instead of {workers}", file=sys.stderr)
        workers = 1
    if workers > 1:
        tasks = _render_in_pool(tasks, workers, collect, split)
    if tasks:
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            for task in tasks:
                collect(_job(task))
        finally:
            cv2.setNumThreads(threads)
    # rebuild in index order with fresh objects: the pickle bytes must not depend on workers
    out = {i: annotation_entry(annos[i]["uv_vis"], annos[i]["xyz"], annos[i]["K"]) for i in range(n_images)}
    with atomic_open(split_dir / f"anno_{split}.pickle", "wb") as f:
        pickle.dump(out, f, protocol=PICKLE_PROTOCOL)
    (split_dir / MANIFEST).unlink()
    return split_dir


def load_annotations(split_dir: str | os.PathLike) -> dict[int, dict[str, np.ndarray]]:
    """Read anno_<split>.pickle of a split directory."""
    split_dir = Path(split_dir)
    with open(split_dir / f"anno_{split_dir.name}.pickle", "rb") as f:
        return pickle.load(f)
