"""Atomic file writes: a file is either absent or complete, never half-written."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


def _publish(tmp: str, path: Path) -> None:
    """Give the temporary file normal permissions (mkstemp makes it 0600), then rename it over path."""
    os.chmod(tmp, 0o666 & ~_UMASK)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kw: Any) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success rename it over `path`, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a library to write into; rename it on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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
