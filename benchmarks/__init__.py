"""Every benchmark of this repo, and the command that runs it (from the repository root).

    python -m benchmarks input    [--n 3000] [--workers 0,1,2]        # crops/s: crop cache -> augment -> batch
    python -m benchmarks models   [--models all] [--batch 32]          # img/s, memory, FLOPs per model
    python -m benchmarks loop     [--batch 256] [--cuda-graph off,on]  # the real training loop against the model alone
    python -m benchmarks scaling  [--model hm_resnet18] [--procs 1,2]  # DDP processes (gloo / nccl)
    python -m benchmarks accuracy                                      # table of the finished runs
    python -m benchmarks leaderboard [--runs SPEC ...] [--profile P]   # train extra runs at an equal budget, then tabulate
    python -m benchmarks curves [--runs NAME ...] [--png F.png]        # kaggle_mse at equal images seen / equal training time
    python -m benchmarks memorise [--models a,b] [--hands 512]         # steps to fit 512 training hands (train EPE < 3 px)
    python -m benchmarks all --out BENCHMARKS.md                       # input, models, scaling, accuracy (= make bench)
    python -m benchmarks.synth_speed [--images 400] [--workers K]      # images/s of the synthetic renderer
    python -m benchmarks.realism [--images 400] [--out BENCHMARKS.md]  # MediaPipe Hands on synthetic vs real hands
    python -m benchmarks targets --loop F.csv [--run DIR]              # issue 12's targets: goal, measured, met
    bash benchmarks/gpu_check.sh [OUT_DIR]                             # issue 12's targets in one device call (at most 590 s)

With ``--out FILE`` a benchmark replaces its ``<!-- bench:NAME -->`` block of FILE (appended when
absent), so the prose around the tables stays; every table carries its command, device, versions
and date.

Modules:

- report:   provenance and markdown (device_line, versions, header, markdown, update_section, section)
- speed:    input pipeline (bench_input), model throughput (bench_one_model in a subprocess per
            model, bench_models, forward_flops), data-parallel scaling (bench_scaling)
- accuracy: the table of finished runs (bench_accuracy) and the equal-budget leaderboard runner
            (run_leaderboard)
- curves:   learning curves of runs (load_curves, curve_table at equal images or seconds, reach,
            plot_curves)
- memorise: steps a model needs to fit a few hundred training hands without augmentation
- targets:  issue 12's targets against gpu_check.sh's files: goal, measured, met
- loop:     lib.train.Trainer's real loop per model / recipe / CUDA graph, against the model alone,
            with a per-phase breakdown (bench_loop, PhaseTimer)
- __main__: the one CLI above
- synth_speed, realism: their own CLIs (`python -m benchmarks.synth_speed`, `python -m benchmarks.realism`)
"""
