"""Provenance and markdown of a benchmark table: the command, date, device and versions above it,
and the <!-- bench:NAME --> block of a markdown file it replaces."""
from __future__ import annotations

import datetime
import errno
import os
import platform
import re
import shlex
from pathlib import Path

import pandas as pd
import torch

from lib.io import write_text

PROG = "python -m benchmarks"


def device_line(device: str = "cpu") -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "no GPU used"
    return f"{gpu}; {cpu}, {os.cpu_count()} logical CPUs (load {load:.1f} at start)"


def versions() -> str:
    import timm
    out = f"python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}"
    if torch.cuda.is_available():
        out += f", CUDA {torch.version.cuda}"
    return out


def header(title: str, argv: list[str], device: str, extra: str = "", prog: str = PROG) -> list[str]:
    cmd = " ".join([prog] + [shlex.quote(a) for a in argv])
    lines = [f"### {title}", "", f"- command: `{cmd}`",
             f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"- device: {device_line(device)}", f"- versions: {versions()}"]
    return lines + ([f"- {extra}"] if extra else []) + [""]


def markdown(df: pd.DataFrame) -> str:
    """A table with 4 significant digits; a column whose numbers are all >= 100 and reach 10,000 in
    whole numbers (92750, not 9.275e+04)."""
    def fmt(col: pd.Series) -> str:
        v = pd.to_numeric(col, errors="coerce").dropna().abs()
        return ".0f" if len(v) and v.min() >= 100 and v.max() >= 1e4 else ".4g"

    floatfmt = [fmt(df[c]) for c in df.columns]
    return df.astype(object).where(df.notna(), None).to_markdown(index=False, floatfmt=floatfmt, missingval="")


def check_out(path: str | os.PathLike | None, option: str = "--out", kind: str = "a markdown file") -> None:
    """Refuse an --out that cannot be written before a benchmark spends minutes measuring (one line, lib.cli)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{option} {path}: expected {kind}, found a directory", str(path))
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{option} {path}: expected a directory above it, found the file "
                                 f"{parent}", str(path))
    if parent is not None and not os.access(parent, os.W_OK):
        raise PermissionError(errno.EACCES, f"{option} {path}: expected a writable directory, {parent} is not "
                              "writable", str(path))


def update_section(path: str | os.PathLike, name: str, text: str) -> Path:
    """Replace (or append) the <!-- bench:name --> block of a markdown file, atomically."""
    path = Path(path)
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"<!-- bench:{name} -->\n{text.rstrip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block + "\n"
    write_text(path, new)
    return path


def section(name: str, title: str, df: pd.DataFrame | list[tuple[str, pd.DataFrame]], argv: list[str], device: str,
            extra: str, out: str | os.PathLike | None, echo: bool = True) -> str:
    """A table (or a list of (subtitle, table)) with its provenance header: printed (unless echo is
    False: a partial table kept as rows come in), and written into out's block `name` when out is given."""
    tables = [("", df)] if isinstance(df, pd.DataFrame) else df
    body = "\n\n".join((f"#### {sub}\n\n" if sub else "") + markdown(t) for sub, t in tables)
    text = "\n".join(header(title, argv, device, extra)) + "\n" + body + "\n"
    if echo:
        print(text, flush=True)
    if out:
        update_section(out, name, text)
    return text
