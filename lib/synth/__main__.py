"""Command line.

    python -m lib.synth --out DIR --split training|evaluation --images N --seed S [--workers K] [--overwrite]
    python -m lib.synth sheet OUT.png [--seed S] [--no-real]
"""
from __future__ import annotations

import argparse
import sys
import time

from lib import cli

from .dataset import SPLITS, render_dataset
from .sheet import contact_sheet


def _render_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m lib.synth",
        description="Render a synthetic RHD-style split (contact sheet: python -m lib.synth sheet OUT.png)")
    ap.add_argument("--out", required=True, help="output root; the split goes to OUT/<split>/")
    ap.add_argument("--split", required=True, choices=SPLITS)
    ap.add_argument("--images", type=int, required=True, help="number of images (>= 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="processes (output does not depend on it)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing split")
    a = ap.parse_args(argv)
    t0 = time.time()
    out = render_dataset(a.out, a.split, a.images, a.seed, workers=a.workers, overwrite=a.overwrite, verbose=True)
    dt = time.time() - t0
    print(f"wrote {a.images} images to {out} in {dt:.1f} s ({a.images / dt:.1f} img/s)")
    return 0


def _sheet_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.synth sheet",
                                 description="Contact sheet: 16 renders with skeletons beside real RHD frames")
    ap.add_argument("out", help="PNG to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-real", action="store_true", help="leave out the real RHD frames of ../shared")
    a = ap.parse_args(argv)
    print(contact_sheet(a.out, seed=a.seed, real=not a.no_real))
    return 0


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "sheet":
        return _sheet_main(argv[1:])
    return _render_main(argv)


def main(argv: list[str] | None = None) -> int:
    """The command line; an expected error is one `error: ...` line and exit code 2 (lib.cli)."""
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
