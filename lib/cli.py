"""One line per expected error, for every command line of the repo.

    from lib import cli

    def _main(argv: list[str] | None = None) -> int:   # the command's work; raises on bad input
        ...

    def main(argv: list[str] | None = None) -> int:
        return cli.run(_main, argv)

    if __name__ == "__main__":
        sys.exit(main())

`run(fn, *args, **kwargs)` calls `fn` and returns its exit code (None counts as 0). An *expected*
error, i.e. bad input or environment rather than a bug, becomes ONE line on stderr,
`error: <message>`, and exit code 2:

- ValueError and its subclasses (lib.data.DataError, lib.submit.SubmissionError, json decoding errors)
- OSError and its subclasses (FileNotFoundError, FileExistsError, PermissionError,
  IsADirectoryError, NotADirectoryError, h5py's read errors, subprocess timeouts wrapped by the caller)
- KeyError, FloatingPointError
- UserError (below) and its subclasses: lib.submit.KaggleError, benchmarks.realism.MeterUnavailable
- whatever the caller adds with `expected=(...)`

KeyboardInterrupt (Ctrl-C) prints `interrupted` and returns 130. Any other exception is a bug and
keeps its traceback. With the environment variable HANDJOINTS_DEBUG=1 every error is re-raised
with its traceback (for a bug report).

The messages are the exceptions' own: the project's errors name the file, key or option, the
expectation and what was found (e.g. `error: data/training.h5: train/img: expected at least 1
entry, found 0`); `format_error` only folds them onto one line and gives OSError / KeyError a
readable form. This module imports nothing from lib, so every layer may use it.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

DEBUG_ENV = "HANDJOINTS_DEBUG"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Base for an expected failure that is neither a ValueError nor an OSError (a missing tool,
    missing credentials): `run` prints its message as one line. Subclass it together with the
    builtin that fits, e.g. `class KaggleError(UserError, RuntimeError)`."""


EXPECTED: tuple[type[BaseException], ...] = (ValueError, OSError, KeyError, FloatingPointError, UserError)


def debug() -> bool:
    """True when HANDJOINTS_DEBUG asks for tracebacks (1, true, yes)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def format_error(e: BaseException) -> str:
    """The message of an expected error on one line (no type name, no traceback)."""
    if isinstance(e, KeyError) and len(e.args) == 1 and not isinstance(e.args[0], str):
        text = f"key {e.args[0]!r} not found"
    elif isinstance(e, KeyError) and len(e.args) == 1:
        text = e.args[0] if " " in e.args[0] else f"key {e.args[0]!r} not found"
    elif isinstance(e, OSError) and e.strerror:
        names = [str(n) for n in (e.filename, e.filename2) if n is not None]
        missing = [n for n in names if n not in e.strerror]
        text = f"{' -> '.join(missing)}: {e.strerror}" if missing else e.strerror
    else:
        text = str(e) or type(e).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) or type(e).__name__


def run(fn: Callable[..., int | None], *args: Any, expected: tuple[type[BaseException], ...] = (),
        **kwargs: Any) -> int:
    """Call fn(*args, **kwargs); return its exit code, or 2 after one `error: ...` line on stderr for an
    expected error, or 130 after `interrupted` on Ctrl-C. HANDJOINTS_DEBUG=1 re-raises instead."""
    try:
        code = fn(*args, **kwargs)
    except KeyboardInterrupt:
        if debug():
            raise
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except EXPECTED + tuple(expected) as e:
        if debug():
            raise
        sys.stdout.flush()
        print(f"error: {format_error(e)}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    return 0 if code is None else int(code)
