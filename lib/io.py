"""Atomic file writes: a file is either absent or complete, never half-written."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)

# a write that fails while less than this is free on its file system failed for want of space
# (torch.save then says only "unexpected pos N vs M", h5py "Can't write data")
FULL_BELOW = 32 << 20


def _mb(n: int) -> str:
    return f"{n / 2**20:,.{1 if n < 10 << 20 else 0}f} MB"


_FREE_SOME = "free some space (old runs in outputs/runs, data/cache) and run again"


def require_space(path: str | os.PathLike, need: int, what: str = "", hint: str = "") -> None:
    """Refuse up front to write `need` bytes at `path` (a file or folder, created or not) where its disk has
    less free: for writes that cannot fail cleanly half-way (a memory map dies of SIGBUS on a full disk),
    or that would fill the disk only after long work. `what` names the work, `hint` adds a way out."""
    parent = Path(path)
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if need + FULL_BELOW > free:
        raise OSError(errno.ENOSPC, f"{path}: {what + ' ' if what else ''}needs {_mb(need)} and {_mb(FULL_BELOW)} "
                                    f"to spare, and its disk has {_mb(free)} free; {_FREE_SOME}{hint}")


def _full_disk(path: Path, tmp: str, exc: BaseException) -> OSError | None:
    """The clear error for an atomic write that failed because the disk is full, else None; call it
    before deleting the temporary file (which gives the space back)."""
    if not isinstance(exc, (OSError, RuntimeError)):  # not a bad input's own error (DataError, ValueError)
        return None
    try:
        free = shutil.disk_usage(path.parent).free
        written = os.path.getsize(tmp)
    except OSError:
        return None
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or free < FULL_BELOW:
        return OSError(errno.ENOSPC, f"{path}: the disk ran out of space after {_mb(written)} ({_mb(free)} free); "
                                     f"the previous file, if any, is unchanged; {_FREE_SOME}")
    return None


def _publish(tmp: str, path: Path) -> None:
    """Give the temporary file normal permissions (mkstemp makes it 0600), then rename it over path."""
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kw: Any) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success rename it over `path`, on error delete it."""
    with atomic_path(path) as tmp, open(tmp, mode, **kw) as f:  # closed (and synced) before the rename
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a library to write into; rename it on success."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{path}: expected a file to write, found a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    except OSError as e:  # named by the file asked for, not by the hidden temporary one
        raise type(e)(e.errno, f"{path}: cannot write there ({e.strerror or e})") from e
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(tmp, path)
    except BaseException as e:
        full = _full_disk(path, tmp, e)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if full is not None:
            raise full from e
        raise


def sweep_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed atomic write left in `directory` (.NAME.*.tmp*); returns them.
    Call it only while no other process writes there (e.g. holding the directory's lock)."""
    gone = []
    for p in Path(directory).glob(".*.tmp*"):
        if p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                gone.append(p)
    return gone


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)
