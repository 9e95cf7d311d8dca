"""python -m benchmarks: input pipeline, model throughput, scaling, accuracy and the leaderboard.

    python -m benchmarks input    [--n 3000] [--workers 0,1,2]        # crops/s cache -> augment -> batch
    python -m benchmarks models   [--models all] [--batch 32]          # img/s, memory, FLOPs per model
    python -m benchmarks scaling  [--model hm_resnet18] [--procs 1,2]  # DDP processes (gloo / nccl)
    python -m benchmarks accuracy                                      # table of the finished runs
    python -m benchmarks leaderboard [--runs SPEC ...] [--profile P]   # train extra runs, then tabulate
    python -m benchmarks all --out BENCHMARKS.md                       # = make bench (no leaderboard)

With ``--out FILE`` a section's table replaces the block between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` in FILE (appended when absent), so the prose around it stays. Every table
carries the command, device, versions and date. Each model is measured in its own subprocess, so
its peak memory is its own (CUDA: max allocated; CPU: the process's peak RSS).

Accuracy comes from training: `make run` (or the training notebooks, or `leaderboard`) first, then
`accuracy` tabulates outputs/runs/*/ and outputs/leaderboard.csv. A leaderboard run spec is
MODEL:RECIPE[:MODEL_KWARGS_JSON][@RUN_NAME]. The synthetic renderer's speed and the realism meter
have their own commands: `python -m benchmarks.synth_speed`, `python -m benchmarks.realism`.
"""
from __future__ import annotations

import argparse
import json
import sys

from lib import cli

COMMANDS = ("input", "models", "scaling", "accuracy", "leaderboard", "all")
LEADERBOARD_DOC = """Train extra (model, recipe) runs at the profile's equal budget beside `make run`'s, predict them
with flip TTA, ensemble, then tabulate every finished run (the accuracy section). Runs whose
metrics exist are skipped, so the command resumes. A run spec is MODEL:RECIPE[:MODEL_KWARGS_JSON][@RUN_NAME]:

    python -m benchmarks leaderboard                                   # every model x both recipes, profile auto
    python -m benchmarks leaderboard --runs resnet34:modern cpm:modern --profile cpu
    python -m benchmarks leaderboard --runs 'hm_resnet18:modern:{"backbone":"resnet34"}@hm_resnet34'
"""


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    p_in = sub.add_parser("input", help="input pipeline crops/s")
    p_mo = sub.add_parser("models", help="per-model training / inference throughput")
    p_one = sub.add_parser("_one")  # internal: one model, JSON on stdout (run by `models` in a subprocess)
    p_sc = sub.add_parser("scaling", help="1 vs N data-parallel processes")
    p_ac = sub.add_parser("accuracy", help="table of the finished runs")
    p_lb = sub.add_parser("leaderboard", help="train extra (model, recipe) runs at an equal budget, then tabulate",
                          description=LEADERBOARD_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_all = sub.add_parser("all", help="input, models, scaling and accuracy")
    for p in (p_in, p_mo, p_sc, p_ac, p_lb, p_all):
        p.add_argument("--out", help="markdown file whose bench section(s) to update (e.g. BENCHMARKS.md)")
    for p in (p_in, p_all):
        p.add_argument("--n", type=int, default=3000, help="crops per DataLoader measurement")
        p.add_argument("--workers", default="0,1,2", help="DataLoader worker counts, comma-separated")
        p.add_argument("--pipelines", default="none,paper,modern", help="augmentation pipelines, comma-separated")
        p.add_argument("--data-dir", default="auto")
    for p in (p_mo, p_one, p_all):
        p.add_argument("--batch", type=int, default=None, help="training batch (default 16 CPU, 256 GPU)")
        p.add_argument("--steps", type=int, default=None, help="timed steps (default 3 CPU, 30 GPU)")
        p.add_argument("--device", default="auto")
        p.add_argument("--amp", default="auto", help="auto (bf16 on GPU) | bf16 | fp16 | off")
        p.add_argument("--compile", action="store_true")
        p.add_argument("--no-channels-last", action="store_true")
    p_mo.add_argument("--models", default="all", help="comma-separated names, or all")
    p_one.add_argument("--model", required=True)
    p_sc.add_argument("--model", default="hm_resnet18")
    p_sc.add_argument("--procs", default=None, help="comma-separated process counts (default 1,2 or 1..GPUs)")
    p_sc.add_argument("--steps", type=int, default=5)
    p_sc.add_argument("--batch", type=int, default=16)
    p_lb.add_argument("--runs", nargs="*", help="run specs (default: every model with paper and modern)")
    p_lb.add_argument("--profile", default="auto")
    p_lb.add_argument("--data-dir", default="auto")
    return ap


def int_list(option: str, text: str, low: int) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2); ValueError naming the option unless every item is an integer >= low."""
    items = [w.strip() for w in str(text).split(",") if w.strip()]
    try:
        values = tuple(int(w) for w in items)
    except ValueError:
        values = ()
    if not values or min(values) < low:
        raise ValueError(f"{option}: expected comma-separated integers >= {low}, found {text!r}")
    return values


def name_list(option: str, text: str, valid: list[str] | tuple[str, ...]) -> list[str]:
    """'a,b' -> ['a', 'b']; ValueError naming the option and the valid names for an unknown one."""
    names = [w.strip() for w in str(text).split(",") if w.strip()]
    unknown = [n for n in names if n not in valid]
    if not names or unknown:
        raise ValueError(f"{option}: expected comma-separated names from {', '.join(valid)}, "
                         f"found {', '.join(map(repr, unknown)) if unknown else repr(text)}")
    return names


def check_args(a: argparse.Namespace) -> None:
    """Refuse bad options before any measurement starts (ValueError / OSError naming the option)."""
    from benchmarks.report import check_out

    check_out(getattr(a, "out", None))
    for opt in ("n", "batch", "steps"):
        v = getattr(a, opt, None)
        if v is not None and v < 1:
            raise ValueError(f"--{opt}: expected a positive integer, found {v}")
    if a.cmd in ("input", "all"):
        from benchmarks.speed import PIPELINES
        a.workers = int_list("--workers", a.workers, 0)
        a.pipelines = tuple(name_list("--pipelines", a.pipelines, PIPELINES))
    if a.cmd in ("models", "all", "_one"):
        from lib.models import list_models
        if a.cmd == "_one":
            name_list("--model", a.model, list_models())
        elif getattr(a, "models", "all") != "all":
            a.models = ",".join(name_list("--models", a.models, list_models()))
    if a.cmd == "scaling":
        from lib.models import list_models
        name_list("--model", a.model, list_models())
        if a.procs is not None:
            int_list("--procs", a.procs, 1)


def main(argv: list[str] | None = None) -> int:
    """The command line; an expected error is one `error: ...` line and exit code 2 (lib.cli)."""
    return cli.run(_main, argv)


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parser().parse_args(argv)
    check_args(a)

    import torch

    from benchmarks import speed
    from benchmarks.accuracy import bench_accuracy, run_leaderboard
    from benchmarks.report import section
    from lib.config import resolve_device

    cuda = torch.cuda.is_available()
    if a.cmd in ("models", "_one", "all"):
        device = resolve_device(a.device)
        a.batch = a.batch or (256 if device.startswith("cuda") else 16)
        a.steps = a.steps or (30 if device.startswith("cuda") else 3)
    if a.cmd == "_one":
        print(json.dumps(speed.bench_one_model(a.model, a.batch, a.steps, a.device, a.amp, not a.no_channels_last,
                                               a.compile)))
        return 0
    if a.cmd == "leaderboard":
        profile, _ = run_leaderboard(a.runs, a.profile, a.data_dir)
        section("accuracy", "Accuracy leaderboard at equal training budget", bench_accuracy(), argv,
                "cuda" if profile == "full" else "cpu",
                f"profile {profile}: every run has the same training budget; validation metrics with flip TTA; "
                "test = the hidden solution of the synthetic test set", a.out)
        return 0
    from lib.models import list_models

    if a.cmd in ("input", "all"):
        df = speed.bench_input(a.n, a.workers, pipelines=a.pipelines, data_dir=a.data_dir)
        section("input", "Input pipeline: crop cache -> augmentation -> batch tensor (crops/s)", df, argv,
                "cpu", f"batch 64, uint8 NCHW, pin_memory={cuda}, {a.n} crops per DataLoader cell; "
                "per core = one process, one thread, per CPU second (1 process = the same per wall second); "
                "DataLoader rates exclude the worker start-up", a.out)
    if a.cmd in ("models", "all"):
        names = list_models() if getattr(a, "models", "all") == "all" else a.models.split(",")
        df = speed.bench_models(names, a.batch, a.steps, a.device, a.amp, a.compile, not a.no_channels_last)
        section("models", "Model throughput at 128x128 (random crops, AdamW step incl. loss)", df, argv, device,
                f"batch {a.batch}, {a.steps} timed steps after warm-up, channels_last={not a.no_channels_last}; "
                "train TFLOP/s = 3 x forward FLOPs x img/s; test set + flip TTA = 2 x 3,611 / infer img/s; "
                "peak mem = CUDA max allocated, or on CPU the process's peak RSS", a.out)
    if a.cmd in ("scaling", "all"):
        procs = (tuple(int(p) for p in a.procs.split(",")) if getattr(a, "procs", None)
                 else tuple(range(1, torch.cuda.device_count() + 1)) if cuda and torch.cuda.device_count() > 1
                 else (1, 2))
        model = getattr(a, "model", "hm_resnet18")
        df = speed.bench_scaling(model, procs, batch=16 if a.cmd == "all" else a.batch,
                                 steps=5 if a.cmd == "all" else a.steps)
        section("scaling", "Data-parallel scaling (DistributedDataParallel)", df, argv, "cuda" if cuda else "cpu",
                "on CPU the processes share the machine's cores: this checks correctness, not speed-up", a.out)
    if a.cmd in ("accuracy", "all"):
        df = bench_accuracy()
        if df.empty:
            print("accuracy: no finished runs in outputs/runs; run `make run` (or the training notebooks) first")
        else:
            section("accuracy", "Accuracy leaderboard (validation split; test = the hidden solution when known)",
                    df, argv, "cuda" if cuda else "cpu", "from each run's metrics, config and training log "
                    "(lib.runs) and outputs/leaderboard.csv", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
