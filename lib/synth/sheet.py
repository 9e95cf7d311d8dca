"""Contact sheet: synthetic renders with skeleton overlays beside real RHD frames (when present)."""
from __future__ import annotations

import errno
from pathlib import Path

import cv2
import numpy as np

from lib.data import competition_crop
from lib.io import atomic_open
from lib.joints import NUM_JOINTS
from lib.paths import REPO
from lib.reference import SHARED, rhd_frames
from lib.viz import draw_skeleton

from .scene import render_image



def _overlay(img: np.ndarray, kp: np.ndarray) -> np.ndarray:
    """An RGB image with one hand's 21 rows [u, v, visible] (RHD order) drawn on a copy by
    lib.viz.draw_skeleton (visible joints filled, hidden ones hollow); a hand with no keypoint
    within an image size of the image (e.g. the off-screen one) is left out: `img` itself."""
    kp = np.asarray(kp, np.float64)
    h, w = img.shape[:2]
    if not ((kp[:, 0] > -w) & (kp[:, 0] < 2 * w) & (kp[:, 1] > -h) & (kp[:, 1] < 2 * h)).any():
        return img
    return draw_skeleton(img, kp[:, :2], kp[:, 2] > 0)


def _label(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)


def real_frames(reference: Path = SHARED) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The real RHD frames (name, frame with overlay, 128 px competition crop), or [] when the reference
    folder is absent."""
    out = []
    for name, img, kp in rhd_frames(reference):
        crop = competition_crop(img, kp[:, :2])[0]
        img = _overlay(img, kp)
        _label(img, f"real RHD {name}")
        out.append((name, img, crop))
    return out


def _crop_row(samples: list[np.ndarray], real_crops: list[np.ndarray], width: int) -> np.ndarray:
    """One row of 128 px competition crops (the network's view, no overlay): synthetic, then real."""
    from lib.data import CROP_SIZE

    side = CROP_SIZE
    k = width // side
    picks = real_crops[:k // 3]
    crops = samples[:k - len(picks)] + picks
    row = np.full((side, width, 3), 40, np.uint8)
    for j, c in enumerate(crops):
        tile = c.copy()
        if j >= len(crops) - len(picks):
            _label(tile, "real RHD")
        row[:, j * side:(j + 1) * side] = tile
    return row


def committable(path: Path, repo: Path | None = None) -> bool:
    """Whether a file written at `path` could be committed: inside the repository, outside its
    git-ignored outputs/ and data/ folders."""
    repo = (repo or REPO).resolve()
    p = Path(path).resolve()
    return p.is_relative_to(repo) and not any(p.is_relative_to(repo / d) for d in ("outputs", "data"))


def contact_sheet(out_png: str | Path, seed: int = 0, n: int = 16, cols: int = 4, real: bool = True) -> Path:
    """Write a PNG (or a JPEG, by the suffix): n synthetic renders (4 columns) with overlays, then a column of real RHD frames
    (when ../shared is present and `real`; the real frames are research-only: keep them out of the repo), and
    below a row of 128 px competition crops, the network's view (real RHD crops at its end when present)."""
    from lib.data import CROP_SIZE, usable_hand_crops

    out_png = Path(out_png)
    if out_png.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{out_png}: expected the path of an image file to write, "
                                f"found a directory", str(out_png))
    if real and committable(out_png):
        print(f"note: {out_png} is inside the repository: the real RHD frames are left out (research-only, "
              "never to be committed); write the sheet elsewhere, e.g. outputs/, to see them")
        real = False
    tiles, crops = [], []
    for i in range(n):
        s = render_image(np.random.SeedSequence([seed, 0x5EE7, i]))
        crops += [c for c, _ in usable_hand_crops(s["color"], s["uv_vis"])]
        img = s["color"]
        for hand in range(2):
            img = _overlay(img, s["uv_vis"][NUM_JOINTS * hand:NUM_JOINTS * (hand + 1)])
        nvis = int(s["uv_vis"][:, 2].sum())
        _label(img, f"synth {seed}/{i}  vis {nvis}")
        tiles.append(img)
    size = tiles[0].shape[0]
    rows = -(-n // cols)
    wanted = real
    real = real_frames() if wanted else []
    if wanted and not real:
        print(f"note: {SHARED / 'rhd_samples'} is absent; the sheet has synthetic renders only")
    height = max(rows, len(real)) * size
    width = (cols + (1 if real else 0)) * size
    sheet = np.full((height + CROP_SIZE, width, 3), 40, np.uint8)
    sheet[height:] = _crop_row(crops, [c for _, _, c in real], width)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * size:(r + 1) * size, c * size:(c + 1) * size] = t
    for k, (_, img, _) in enumerate(real):
        sheet[k * size:(k + 1) * size, cols * size:(cols + 1) * size] = img
    ext = out_png.suffix.lower() if out_png.suffix.lower() in (".png", ".jpg", ".jpeg") else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 88] if ext != ".png" else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(sheet[:, :, ::-1]), params)
    if not ok:
        raise RuntimeError(f"could not encode the contact sheet for {out_png}")
    try:
        with atomic_open(out_png, "wb") as f:
            f.write(buf.tobytes())
    except OSError as e:  # e.g. a read-only or special file system: name the file asked for, not the temporary
        raise OSError(e.errno, f"{out_png}: cannot be written ({e.strerror or e}); expected a writable directory "
                      f"{out_png.parent}", str(out_png)) from e
    return out_png
