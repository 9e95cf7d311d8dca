"""python -m benchmarks: input pipeline, model and loop throughput, scaling, accuracy, the leaderboard, learning curves.

    python -m benchmarks input    [--n 3000] [--workers 0,1,2]        # crops/s cache -> augment -> batch
    python -m benchmarks models   [--models all] [--batch 32]          # img/s, memory, FLOPs per model
    python -m benchmarks loop     [--batch 256] [--cuda-graph off,on]  # the real training loop vs the model alone
    python -m benchmarks scaling  [--model hm_resnet18] [--procs 1,2]  # DDP processes (gloo / nccl)
    python -m benchmarks accuracy                                      # table of the finished runs
    python -m benchmarks leaderboard [--runs SPEC ...] [--profile P]   # train extra runs, then tabulate
    python -m benchmarks curves [--runs NAME ...] [--png FILE.png]     # kaggle_mse at equal images / equal time
    python -m benchmarks memorise [--models a,b] [--hands 512]         # steps to fit 512 hands (train EPE < 3 px)
    python -m benchmarks targets --loop F.csv [--run DIR] [--seconds all=S] # issue 12's targets: goal, measured, met
    python -m benchmarks all --out BENCHMARKS.md                       # = make bench (no leaderboard)

With ``--out FILE`` a section's table replaces the block between ``<!-- bench:NAME -->`` and
``<!-- /bench:NAME -->`` in FILE (appended when absent), so the prose around it stays. Every table
carries the command, device, versions and date. Each model is measured in its own subprocess, so
its peak memory is its own (CUDA: max allocated; CPU: the process's peak RSS).

Accuracy comes from training: `make run` (or the training notebooks, or `leaderboard`) first, then
`accuracy` tabulates outputs/runs/*/ and outputs/leaderboard.csv, `curves` the runs' learning curves.
A leaderboard run spec is MODEL:RECIPE[:MODEL_KWARGS_JSON][@RUN_NAME]. The synthetic renderer's speed
and the realism meter have their own commands: `python -m benchmarks.synth_speed`, `python -m benchmarks.realism`.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys

from lib import cli

COMMANDS = ("input", "models", "loop", "scaling", "accuracy", "leaderboard", "curves", "memorise", "targets", "all")
LEADERBOARD_DOC = """Train extra (model, recipe) runs at the profile's equal budget beside `make run`'s, predict them
with flip TTA, ensemble, then tabulate every finished run (the accuracy section). Runs whose
metrics exist are skipped, so the command resumes. A run spec is MODEL:RECIPE[:MODEL_KWARGS_JSON][@RUN_NAME]:

    python -m benchmarks leaderboard                                   # every model x both recipes, profile auto
    python -m benchmarks leaderboard --runs resnet34:modern cpm:modern --profile cpu
    python -m benchmarks leaderboard --runs 'hm_resnet18:modern:{"backbone":"resnet34"}@hm_resnet34'
"""
CURVES_DOC = """kaggle_mse of every run at equal training images seen and at equal training seconds (validation
time excluded), interpolated linearly between the run's validations (train with --eval-every N for
more points than one per epoch); blank before a run's first validation and after its last:

    python -m benchmarks curves                                        # every run of outputs/runs with a curve
    python -m benchmarks curves --runs hm_resnet18_modern_cpu cpm_paper_cpu --reach 700
    python -m benchmarks curves --png FIG.png --baseline 860 --baseline-label 'mean pose' --out BENCHMARKS.md
"""


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    p_in = sub.add_parser("input", help="input pipeline crops/s")
    p_mo = sub.add_parser("models", help="per-model training / inference throughput")
    p_lo = sub.add_parser("loop", help="the real training loop per model and recipe, against the model alone")
    p_one = sub.add_parser("_one")  # internal: one model, JSON on stdout (run by `models` in a subprocess)
    p_sc = sub.add_parser("scaling", help="1 vs N data-parallel processes")
    p_ac = sub.add_parser("accuracy", help="table of the finished runs")
    p_lb = sub.add_parser("leaderboard", help="train extra (model, recipe) runs at an equal budget, then tabulate",
                          description=LEADERBOARD_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_cu = sub.add_parser("curves", help="learning curves: kaggle_mse at equal images seen and equal training time",
                          description=CURVES_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_me = sub.add_parser("memorise", help="steps each model needs to fit a few hundred training hands")
    p_ta = sub.add_parser("targets", help="issue 12's GPU targets: goal, measured, met (from gpu_check.sh's files)")
    p_all = sub.add_parser("all", help="input, models, scaling and accuracy")
    for p in (p_in, p_mo, p_lo, p_sc, p_ac, p_lb, p_cu, p_me, p_ta, p_all):
        p.add_argument("--out", help="markdown file whose bench section(s) to update (e.g. BENCHMARKS.md)")
    for p in (p_in, p_all):
        p.add_argument("--n", type=int, default=3000, help="crops per DataLoader measurement")
        p.add_argument("--workers", default="0,1,2", help="DataLoader worker counts, comma-separated")
        p.add_argument("--pipelines", default="none,paper,modern",
                       help="augmentation pipelines, comma-separated: none, paper, modern, modern-deferred, "
                       "modern-context (the workers' share under --pixel-ops device, with --warp-on-device), "
                       "modern-drawn (--cache-on-device: the main process draws a batch at a time, no workers)")
        p.add_argument("--data-dir", default="auto")
    for p in (p_mo, p_one, p_all):
        p.add_argument("--batch", type=int, default=None, help="training batch (default 16 CPU, 256 GPU)")
        p.add_argument("--steps", type=int, default=None, help="timed steps (default 3 CPU, 30 GPU)")
        p.add_argument("--device", default="auto")
        p.add_argument("--amp", default="auto", help="auto (bf16 on a GPU of compute capability 8.0+ and on a CPU with bf16 "
                       "instructions, fp16 on older GPUs, else off) | bf16 | fp16 | off")
        p.add_argument("--compile", action="store_true")
        p.add_argument("--no-channels-last", action="store_true")
    p_mo.add_argument("--models", default="all", help="comma-separated names, or all")
    p_mo.add_argument("--timeout", type=float, default=None, help="seconds per model (a row says when it ran over)")
    p_lo.add_argument("--models", default="hm_resnet18_64,hm_resnet18,resnet34,cpm,inception_v3,irv2",
                      help="comma-separated names, or all")
    p_lo.add_argument("--recipes", default="modern", help="comma-separated: modern, paper")
    p_lo.add_argument("--batch", type=int, default=None, help="batch size (default: each recipe's)")
    p_lo.add_argument("--steps", type=int, default=None, help="timed steps (default 5 CPU, 50 GPU)")
    p_lo.add_argument("--cuda-graph", default="off", help="off, on, or off,on (both rows)")
    p_lo.add_argument("--amp", default="auto", help="auto (the training default), bf16, fp16, off (fp32; TF32 convolutions on "
                      "CUDA), or several, comma-separated: a row each")
    p_lo.add_argument("--pixel-ops", default="auto", help="workers | device | compiled | auto (device on CUDA)")
    p_lo.add_argument("--warp-on-device", action=argparse.BooleanOptionalAction, default=None,
                      help="the workers send the 192 context; the device warps it (with --pixel-ops device or "
                      "compiled; default: as training, on CUDA)")
    p_lo.add_argument("--cache-on-device", action=argparse.BooleanOptionalAction, default=None,
                      help="the crop cache's images on the device; the main process draws the rest, no workers (with "
                      "--warp-on-device; default: as training, on CUDA when they fit)")
    p_lo.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: lib.config's)")
    p_lo.add_argument("--compile", action="store_true", help="torch.compile the model (with --cuda-graph on: "
                      "the compiled step captured in the graph)")
    p_lo.add_argument("--no-breakdown", action="store_true", help="skip the synchronised per-phase epoch")
    p_lo.add_argument("--csv", default=None, metavar="FILE.csv", help="also write the rows here, after the rows it "
                      "holds already (for `targets`; written after each row)")
    p_ta.add_argument("--loop", default=None, metavar="FILE.csv", help="rows of `loop --csv`")
    p_ta.add_argument("--run", default=None, metavar="DIR", help="the gpu profile's run directory")
    p_ta.add_argument("--seconds", default=None, metavar="profile=S,all=S",
                      help="the gpu profile's and gpu_check.sh all's seconds")
    p_ta.add_argument("--models", default="hm_resnet18_64,hm_resnet18,resnet34,cpm,inception_v3,irv2",
                      help="the models whose loop / model ratio is a target (a row each, measured or not)")
    p_ta.add_argument("--note", default="", help="a line of context for the table's header")
    p_lo.add_argument("--device", default="auto")
    p_lo.add_argument("--profile", default="auto", help="whose synthetic data when data/ has no real files")
    p_lo.add_argument("--data-dir", default="auto")
    p_one.add_argument("--model", required=True)
    p_sc.add_argument("--model", default="hm_resnet18")
    p_sc.add_argument("--procs", default=None, help="comma-separated process counts (default 1,2 or 1..GPUs)")
    p_sc.add_argument("--steps", type=int, default=5)
    p_sc.add_argument("--batch", type=int, default=16)
    p_lb.add_argument("--runs", nargs="*", help="run specs (default: every model with paper and modern)")
    p_lb.add_argument("--profile", default="auto")
    p_lb.add_argument("--data-dir", default="auto")
    p_me.add_argument("--models", default="hm_resnet18,hm_resnet18_64,simcc_resnet18_64",
                      help="comma-separated names (NAME or NAME:JSON_KWARGS separated by ';' when kwargs hold commas)")
    p_me.add_argument("--hands", type=int, default=512)
    p_me.add_argument("--threshold", type=float, default=3.0, help="train EPE to reach (crop px)")
    p_me.add_argument("--max-steps", type=int, default=2000)
    p_me.add_argument("--max-minutes", type=float, default=5.0, help="per model")
    p_me.add_argument("--data-dir", default="auto")
    p_cu.add_argument("--runs", nargs="+", metavar="NAME", help="run names or directories (default: every run "
                      "with a learning curve)")
    p_cu.add_argument("--runs-dir", default=None, help="where run names are looked up (default outputs/runs)")
    p_cu.add_argument("--png", default=None, metavar="FILE.png", help="also draw the curves into this PNG")
    p_cu.add_argument("--baseline", type=float, default=None, metavar="MSE",
                      help="a dashed line at this kaggle_mse in the PNG (e.g. the mean pose's)")
    p_cu.add_argument("--baseline-label", default="baseline", help="the legend of --baseline (e.g. 'mean pose')")
    p_cu.add_argument("--reach", type=float, default=None, metavar="MSE",
                      help="add a column: images / seconds each run needed to first reach this kaggle_mse")
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
    if getattr(a, "timeout", None) is not None and not a.timeout > 0:
        raise ValueError(f"--timeout: expected seconds > 0, found {a.timeout}")
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
    if a.cmd == "loop":
        from lib.config import RECIPES
        from lib.models import list_models
        a.models = list_models() if a.models == "all" else name_list("--models", a.models, list_models())
        a.recipes = tuple(name_list("--recipes", a.recipes, sorted(RECIPES)))
        a.cuda_graph = tuple(w == "on" for w in name_list("--cuda-graph", a.cuda_graph, ("off", "on")))
        a.amp = tuple(name_list("--amp", a.amp, ("auto", "bf16", "fp16", "off")))
        if a.pixel_ops not in ("workers", "device", "compiled", "auto"):
            raise ValueError(f"--pixel-ops: expected workers, device, compiled or auto, found {a.pixel_ops!r}")
        if a.workers is not None and a.workers < 0:
            raise ValueError(f"--workers: expected an integer >= 0, found {a.workers}")
    if a.cmd == "memorise":
        from lib.models import list_models
        entries = [e.strip() for e in a.models.split(";" if ";" in a.models else ",") if e.strip()]
        name_list("--models", ",".join(e.split(":", 1)[0] for e in entries), list_models())
        a.models = entries
        for opt in ("hands", "max_steps"):
            if getattr(a, opt) < 1:
                raise ValueError(f"--{opt.replace('_', '-')}: expected a positive integer, found {getattr(a, opt)}")
        if not (a.threshold > 0 and a.max_minutes > 0):
            raise ValueError(f"--threshold / --max-minutes: expected numbers > 0, found {a.threshold} / {a.max_minutes}")
    if a.cmd == "loop":
        check_out(a.csv, "--csv", "a CSV file")
    if a.cmd == "targets":
        from benchmarks.targets import parse_seconds
        from lib.models import list_models
        a.seconds = parse_seconds(a.seconds)
        a.models = name_list("--models", a.models, list_models())
        for opt, kind, ok in (("loop", "a CSV file of `loop --csv`", os.path.isfile),
                              ("run", "a run directory", os.path.isdir)):
            path = getattr(a, opt)
            if path is not None and not ok(path):
                found = "a directory" if os.path.isdir(path) else "a file" if os.path.exists(path) else "nothing there"
                raise FileNotFoundError(errno.ENOENT, f"--{opt} {path}: expected {kind}, found {found}", path)
    if a.cmd == "curves":
        check_out(a.png, "--png", "a PNG file")
        for opt in ("baseline", "reach"):
            v = getattr(a, opt)
            if v is not None and not v > 0:
                raise ValueError(f"--{opt}: expected a kaggle_mse > 0, found {v}")
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
    if a.cmd == "curves":
        return _curves(a, argv)
    if a.cmd == "targets":
        return _targets(a, argv)
    if a.cmd == "memorise":
        from benchmarks.memorise import bench_memorise
        from benchmarks.report import section

        df = bench_memorise(a.models, a.hands, a.threshold, a.max_steps, a.max_minutes, a.data_dir)
        section("memorise", f"Memorisation: steps to fit {a.hands} training hands (train EPE < {a.threshold:g} px)",
                df, argv, "cpu", "no augmentation, AdamW at the modern recipe's peak lr after 50 warm-up steps, "
                "batch 32, no EMA; train EPE on the same crops in eval mode every 25 steps; curve = step:EPE", a.out)
        return 0

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
    if a.cmd == "loop":
        import pandas as pd

        from benchmarks.loop import bench_loop, read_rows, report_total, write_rows

        device = resolve_device(a.device)

        before = read_rows(a.csv)

        def loop_section(df, echo=True):
            if a.csv:
                write_rows(a.csv, pd.concat([before, df], ignore_index=True) if before is not None else df)
            section("loop", "The training loop against the model alone (img/s, per-step breakdown)", df, argv, device,
                    "lib.train.Trainer over one epoch of --steps batches after a warm-up epoch (real crop cache, the "
                    "recipe's augmentation, DataLoader, pixel ops, loss, clipping, fused optimizer, EMA); loop img/s "
                    "from the epoch's first batch on (epoch start apart); model-only = `models` on random crops at "
                    "the same batch (eager, also for --compile rows); host syncs / step = the loop's reads of the device; host ms / step = the main process's time inside "
                    "the steps, which never wait for the device (with the CUDA graph, near ms / step: the device waits for the host); (ms) columns = a further "
                    "epoch with the device synchronised at each phase end; report epochs (min) = the report's epochs "
                    "of the competition's training hands at the loop's rate" + (f"; {total}" if (total := report_total(df)) else ""),
                    a.out, echo)

        df = bench_loop(a.models, a.recipes, a.batch, a.steps, device, a.workers, a.cuda_graph, a.pixel_ops,
                        a.data_dir, a.profile, not a.no_breakdown, a.warp_on_device,
                        lambda part: loop_section(part, echo=False), a.compile, a.cache_on_device, a.amp)
        loop_section(df)
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
        def models_section(df, echo=True):
            section("models", "Model throughput at 128x128 (random crops, AdamW step incl. loss)", df, argv, device,
                    f"batch {a.batch}, {a.steps} timed steps after warm-up, channels_last={not a.no_channels_last}; "
                    "train TFLOP/s = 3 x forward FLOPs x img/s; test set + flip TTA = 2 x 3,611 / infer img/s; "
                    "peak mem = CUDA max allocated, or on CPU the process's peak RSS", a.out, echo)

        df = speed.bench_models(names, a.batch, a.steps, a.device, a.amp, a.compile, not a.no_channels_last,
                                getattr(a, "timeout", None), lambda part: models_section(part, echo=False))
        models_section(df)
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


def _targets(a: argparse.Namespace, argv: list[str]) -> int:
    """The targets command: a row per target of issue 12 (printed, and into the bench section "targets")."""
    import torch

    from benchmarks.loop import read_rows
    from benchmarks.report import section
    from benchmarks.targets import targets

    from benchmarks.targets import LOOP_COLUMNS

    loop = read_rows(a.loop)
    if loop is not None and (missing := [c for c in LOOP_COLUMNS if c not in loop]):
        raise ValueError(f"--loop {a.loop}: expected the columns of `loop --csv` ({', '.join(LOOP_COLUMNS)}), found no "
                         f"{', '.join(missing)}")
    df = targets(loop, a.run, a.seconds, a.models)
    section("targets", "Issue 12's targets: goal, measured, met", df, argv, "cuda" if torch.cuda.is_available() else "cpu",
            f"from {', '.join(p for p in (a.loop, a.run) if p) or 'nothing measured'}; the goals are the issue's "
            "(batch 256 on a GPU; the large batch here = the largest batch of the `modern` rows); met: yes / no / "
            "not measured" + (f"; {a.note}" if a.note else ""), a.out)
    return 0


def _curves(a: argparse.Namespace, argv: list[str]) -> int:
    """The curves command: both tables (printed, and into the bench section "curves"), and the PNG."""
    import torch

    from benchmarks.curves import curve_sections, load_curves, plot_curves
    from benchmarks.report import section
    from lib import paths

    df = load_curves(a.runs, a.runs_dir)
    if df.empty:
        print(f"curves: no run with a learning curve in {a.runs_dir or paths.runs()}; train one first "
              "(`make run`, or python -m lib.train ... --eval-every N)")
        return 0
    section("curves", "Learning curves: validation kaggle_mse at equal images seen and at equal training time",
            curve_sections(df, a.reach), argv, "cuda" if torch.cuda.is_available() else "cpu",
            "from each run's learning curve (lib.runs: every validation, no TTA); columns = images seen or training "
            "seconds (validation excluded), interpolated linearly between validations, blank before a run's "
            "first validation or after its last; end = where the run stopped, final = its last kaggle_mse"
            + (f", reach = where it first reached kaggle_mse {a.reach:g}" if a.reach is not None else ""), a.out)
    if a.png:
        print(f"wrote {plot_curves(df, a.png, a.baseline, a.baseline_label)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
