#!/usr/bin/env bash
# The GPU measurements of BENCHMARKS.md §7: all of issue 12's targets in one device call (all), or
# parts that go further, one call each:
#
#   bash benchmarks/gpu_check.sh [OUT_DIR] [all|bench|profile|compile|quick]  # default outputs/gpu_check, all
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh                                # the rehearsal: tiny sizes, runs on a CPU too
#
#   all     (one device call of GPU_CHECK_CALL_S, default 590 s): the gpu profile's render starts at
#           once, niced, and the GPU measures beside it: the GPU tests, the input alone, the loop at
#           the report's batch 8 (resnet34, cpm, Inception-v3, IRv2) and at batch 256 (every model),
#           the CUDA graph on (a user's default), the model alone beside each row; then the profile's
#           training for what the call has left after the render (at most GPU_CHECK_TRAIN_MIN; on
#           16 cores the render takes ~4.5-6 min, so expect 1-2.5 min of training: the profile part
#           alone trains longer), its predictions, and the targets table (BENCHMARKS.targets.md:
#           goal, measured, met, from loop.csv and the profile's run). The measurements share the
#           CPU with the niced render (the log lines carry the load). Left out for time: bench's
#           graph-off and compiled rows, the per-phase breakdown, the compile part.
#   quick   (~4 min; all has its batch-256 rows, graph on only): the GPU tests, then the fastest model's loop
#           at the gpu profile's batch 32 and at batch 256, with the CUDA graph off and on (the
#           CUDA defaults: images, warp and pixel ops on the device, in the graph since §7l), and
#           resnet34 at batch 256 beside it (eager pixel ops, the default; §7c's rows had them
#           compiled). After it, one session's 900 s hold the profile part only with a smaller
#           GPU_CHECK_CALL_S (what is left, less a minute), which shortens its training.
#   bench   (~9 min on one H100, under the 10-min limit of one call): the GPU tests; the training
#           loop at the report's batch 8 with a CUDA graph; at batch 256 with the warp and the
#           images on the device and the batches drawn in the main process (the CUDA defaults) and
#           compiled pixel ops, the three fastest models also with the step in a CUDA graph; batch 8
#           with the compiled model in the graph.
#   compile (~8.5 min): IRv2 alone; the input alone; IRv2 compiled block by block (240 s to compile;
#           over 110 s on the H100, 2026-11-27); Inception-v3 at batch 8, compiled in the CUDA graph.
#   profile (~10 min: render ~4.5, data build ~1.5, training 2.5, predict): `make run PROFILE=gpu`'s
#           work without Jupyter (the gpu profile's data, the modern model for the profile's
#           minutes, predict and score), each phase timed, the learning curve in profile.log.
#           GPU_CHECK_TRAIN_MIN (default 2.5 minutes, half a minute under the profile's own 3) and
#           GPU_CHECK_TRAIN_ARGS change the training. The part ends within one device call of
#           GPU_CHECK_CALL_S seconds (default 590 for the part alone, counted from the script's start): a slow render
#           shortens the training (a line says so) instead of the call's limit cutting everything;
#           a failed render leaves the training out (it would render the data again).
#
# For a GPU box where only torch, timm and the scientific stack are installed and nothing can be
# downloaded: put wheels of the rest (albumentations==2.0.8, albucore, pydantic, pydantic-core,
# annotated-types, typing-inspection, stringzilla, simsimd) in .whl/ (README, "GPU"); they are
# installed into a temporary folder first. Each step has its own time limit; a failed step is logged
# and the next one runs. Output (10 files at most): OUT_DIR/gpu_check.log (everything),
# BENCHMARKS.gpu.md and BENCHMARKS.loop_small.md (bench sections), BENCHMARKS.compile.md, BENCHMARKS.quick.md,
# BENCHMARKS.targets.md, loop.csv, profile.log, curve.csv, log.csv.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:-outputs/gpu_check}
PART=${2:-all}
case $PART in all|bench|profile|compile|quick) ;; *) echo "gpu_check.sh: expected the part all, bench, profile, compile or quick, found '$PART'" >&2; exit 2;; esac
mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/gpu_check.log
MD=$OUT_DIR/BENCHMARKS.gpu.md
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
T0=$(date +%s)
touch "$LOG"

say() { echo "[gpu_check $(($(date +%s) - T0)) s, load $(cut -d' ' -f1 /proc/loadavg 2>/dev/null)] $*" | tee -a "$LOG"; }
step() {  # step SECONDS NAME COMMAND...: run with a time limit, log everything, go on when it fails
    local limit=$1 name=$2; shift 2
    say "$name: $*"
    timeout --signal=INT --kill-after=15 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    say "$name: exit $rc"
    return $rc
}

if [ -n "${GPU_CHECK_TINY:-}" ]; then  # rehearsal sizes
    SMALL=(60 20); STEPS=2; BATCH_BIG=8; MODELS=hm_resnet18_64,resnet34;
    SMALL_MODELS=resnet34; SMALL_SLOW=resnet34; FAST_MODELS=hm_resnet18_64; WORKERS=1; BATCH_MID=4; INPUT_N=64; PROFILE=smoke; TRAIN_MIN=${GPU_CHECK_TRAIN_MIN:-0.2}; BIG=irv2
    COMPILE_S=10
else  # limits from the H100 run of 2026-11-27: tests 69 s, the small data 73 s, 6 loop rows at batch 256 93 s
    # hm_resnet18_64 second: at 0.48 as the first row of 7c's process, is it the model or the first row?
    SMALL=(4500 300); STEPS=20; BATCH_BIG=256; BATCH_MID=32; MODELS=hm_resnet18,hm_resnet18_64,resnet34,cpm,inception_v3,irv2
    SMALL_MODELS=resnet34,cpm,inception_v3,irv2; SMALL_SLOW=inception_v3; FAST_MODELS=hm_resnet18_64,hm_resnet18,resnet34
    WORKERS=$(($(nproc) - 1))
    INPUT_N=4000; PROFILE=gpu; TRAIN_MIN=${GPU_CHECK_TRAIN_MIN:-2.5}; BIG=irv2; COMPILE_S=240
fi

# 0. the packages the GPU box lacks, from carried wheels
if ! $PY -c "import albumentations" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu_check_site .whl/*.whl \
            >>"$LOG" 2>&1 && export PYTHONPATH=$PYTHONPATH:/tmp/gpu_check_site
    fi
    $PY -c "import albumentations" 2>>"$LOG" || { say "albumentations missing and no .whl/; see README (GPU)"; exit 2; }
fi
{ echo "part $PART; checkout $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (a device copy's .git can lag its files)";
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi";
  $PY -c "import torch, timm, albumentations as A; print('torch', torch.__version__, 'timm', timm.__version__,
'albumentations', A.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')";
  echo "cores $(nproc); $(lscpu 2>/dev/null | grep -E '^(Model name|Thread\(s\) per core|Core\(s\) per socket|Socket\(s\))' | tr -s ' ' | paste -sd';')"; } 2>&1 | tee -a "$LOG"

if $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then GRAPH=--cuda-graph GRAPHS=off,on
else GRAPH=--no-cuda-graph GRAPHS=off; say "no CUDA: the CUDA graph rows and the GPU-only tests are left out"; fi

# the profile and all parts end within one device call (600 s, less a margin); the others have no such limit
case $PART in profile|all) CALL_S=${GPU_CHECK_CALL_S:-590};; *) CALL_S=${GPU_CHECK_CALL_S:-86400};; esac
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check_work}  # the benchmarks' small data set and the runs: kept out of OUT_DIR
mkdir -p "$WORK"

# a small data set for the loop and input benchmarks (once per machine), on all cores: in the background
DATA=$WORK/data
small_data() {
    [ -f "$DATA/small.done" ] && return 0
    $PY -m lib.synth --out "$DATA/rhd" --split training --images "${SMALL[0]}" --seed 0 --workers "$WORKERS" &&
    $PY -m lib.synth --out "$DATA/rhd" --split evaluation --images "${SMALL[1]}" --seed 1 --workers "$WORKERS" &&
    $PY -m lib.data build --rhd "$DATA/rhd" --out "$DATA" --overwrite && $PY -m lib.data cache "$DATA" &&
    touch "$DATA/small.done"
}
CSV=$OUT_DIR/loop.csv  # the all part's loop rows, for its targets table
TMP_MD=$OUT_DIR/BENCHMARKS.tmp.md  # a second table of the same kind: its own file first (--out replaces a section)
append() { cat "$TMP_MD" >>"$1" 2>/dev/null; rm -f "$TMP_MD"; }
wait_small() { wait "$SMALL_PID"; say "small data: exit $? ($(tail -n 1 "$WORK/small.log" | tr '\r' '\n' | tail -n 1))"; }
# the files the all and profile parts write: an earlier call's must not pass for this one's
[ "$PART" = all ] && rm -f "$MD" "$OUT_DIR/BENCHMARKS.loop_small.md" "$OUT_DIR/BENCHMARKS.targets.md" "$CSV"
case $PART in all|profile) rm -f "$OUT_DIR/profile.log" "$OUT_DIR/curve.csv" "$OUT_DIR/log.csv";; esac
if [ "$PART" != profile ]; then  # niced: the GPU tests beside it keep their core (7b's ran out of time beside a render)
    [ "$PART" = all ] && NICE=10 || NICE=19  # all: above the profile's render, which nothing waits for until the training
    mkdir -p "$DATA"; ( renice -n "$NICE" "$BASHPID" >/dev/null 2>&1; small_data ) >"$WORK/small.log" 2>&1 &
    SMALL_PID=$!
fi
# the gpu profile's data (render, build): for all, from the start and beside the measurements, niced
# below the small data (which they wait for); the profile part renders it in the foreground (below).
# AFTER_S: the seconds the call keeps after the training's budget (the model's start, the graph's
# capture and the last validation, the predictions; for all also the targets table)
if [ "$PART" = all ]; then
    AFTER_S=120 TRAIN_EXTRA_S=60 PREDICT_S=40
    P0=$(date +%s); DATA_S=$((CALL_S - AFTER_S - 30 - (P0 - T0)))  # the training keeps at least 30 s
    say "profile data, from the start and niced beside the rest (at most $DATA_S s)"
    ( renice -n 19 "$BASHPID" >/dev/null 2>&1
      timeout --signal=INT --kill-after=15 "$DATA_S" $PY -m lib.pipeline --profile "$PROFILE" --only data
      rc=$?; date +%s >"$WORK/profile_data.end"; exit $rc ) >"$WORK/profile_data.log" 2>&1 &
    PDATA_PID=$!
else
    AFTER_S=150 TRAIN_EXTRA_S=90 PREDICT_S=60
fi

if [ "$PART" = bench ]; then
    # 1. the GPU's own checks (beside the niced render): graph step = eager step, a step never waits, pixel ops match
    step 100 "tests" $PY -m pytest -q -p no:cacheprovider -o addopts="" -m gpu
    wait_small

    # 2. the loop: the report's batch 8 with a CUDA graph; batch 256 on the CUDA defaults (the warp
    #    and the images on the device, the batches drawn in the main process) with compiled pixel ops;
    #    the fast models again with the step in a CUDA graph; batch 8 with the compiled model in the graph
    [ "$GRAPH" = --cuda-graph ] && step 120 "loop batch 8, CUDA graph" $PY -m benchmarks loop --models "$SMALL_MODELS" \
        --recipes paper --cuda-graph on --steps "$((STEPS * 2))" --data-dir "$DATA" --out "$OUT_DIR/BENCHMARKS.loop_small.md"
    step 120 "loop batch $BATCH_BIG, images on the device" $PY -m benchmarks loop --models "$MODELS" \
        --batch "$BATCH_BIG" --steps "$STEPS" --pixel-ops compiled --data-dir "$DATA" --out "$MD"
    [ "$GRAPH" = --cuda-graph ] && step 90 "loop batch $BATCH_BIG, CUDA graph" $PY -m benchmarks loop \
        --models "$FAST_MODELS" --batch "$BATCH_BIG" --steps "$STEPS" --pixel-ops compiled --cuda-graph on \
        --data-dir "$DATA" --out "$TMP_MD"
    append "$MD"
    [ "$GRAPH" = --cuda-graph ] && step 75 "loop batch 8, CUDA graph + compile" $PY -m benchmarks loop \
        --models "${SMALL_MODELS%%,*}" --recipes paper --cuda-graph on --compile --steps "$((STEPS * 2))" \
        --data-dir "$DATA" --out "$TMP_MD"
    append "$OUT_DIR/BENCHMARKS.loop_small.md"
    say "bench part done"
fi

if [ "$PART" = quick ]; then
    # 1b. the GPU tests, then what §7l changed: the step with its input in the graph at the gpu
    #     profile's batch (§7k: 4.5-7.4 k img/s) and at batch 256 (§7c: hm_resnet18_64 at 0.48,
    #     its pixel ops compiled there)
    step 100 "tests" $PY -m pytest -q -p no:cacheprovider -o addopts="" -m gpu
    wait_small
    step 90 "loop batch $BATCH_MID, graph $GRAPHS" $PY -m benchmarks loop --models "${FAST_MODELS%%,*}" \
        --batch "$BATCH_MID" --steps "$((STEPS * 5))" --cuda-graph "$GRAPHS" --data-dir "$DATA" --out "$OUT_DIR/BENCHMARKS.quick.md"
    step 120 "loop batch $BATCH_BIG, graph $GRAPHS" $PY -m benchmarks loop --models "${FAST_MODELS%%,*},resnet34" \
        --batch "$BATCH_BIG" --steps "$STEPS" --cuda-graph "$GRAPHS" --data-dir "$DATA" --out "$TMP_MD"
    append "$OUT_DIR/BENCHMARKS.quick.md"
    say "quick part done"
fi

if [ "$PART" = compile ]; then
    # 3. IRv2 alone (GPU-bound, beside the render if it still runs), the input alone (the host's
    #    share in each mode), IRv2 compiled block by block, Inception-v3 at batch 8 compiled in the graph
    step 60 "models $BIG" $PY -m benchmarks models --models "$BIG" --batch "$BATCH_BIG" --steps "$STEPS" \
        --out "$OUT_DIR/BENCHMARKS.compile.md"
    wait_small
    step 30 "input" $PY -m benchmarks input --workers "$WORKERS" \
        --pipelines modern,modern-deferred,modern-context,modern-drawn --n "$INPUT_N" --data-dir "$DATA" \
        --out "$OUT_DIR/BENCHMARKS.compile.md"
    step $((COMPILE_S + 30)) "models $BIG compiled" $PY -m benchmarks models --models "$BIG" --batch "$BATCH_BIG" \
        --steps "$STEPS" --compile --timeout "$COMPILE_S" --out "$TMP_MD"
    append "$OUT_DIR/BENCHMARKS.compile.md"
    [ "$GRAPH" = --cuda-graph ] && step 150 "loop batch 8, CUDA graph + compile, $SMALL_SLOW" $PY -m benchmarks loop \
        --models "$SMALL_SLOW" --recipes paper --cuda-graph on --compile --steps "$((STEPS * 2))" \
        --data-dir "$DATA" --out "$TMP_MD"
    append "$OUT_DIR/BENCHMARKS.compile.md"
fi

if [ "$PART" = all ]; then
    # 4. every target of issue 12 in one call: the GPU tests, the input alone, the loop at the
    #    report's batch 8 and at the large batch (the CUDA defaults, the graph on: a user's run) with
    #    the model alone beside each, all while the gpu profile's data renders; then its training
    step 100 "tests" $PY -m pytest -q -p no:cacheprovider -o addopts="" -m gpu
    wait_small
    step 45 "input" $PY -m benchmarks input --workers "$WORKERS" --pipelines paper,modern --n "$INPUT_N" \
        --data-dir "$DATA" --out "$OUT_DIR/BENCHMARKS.gpu.md"
    [ "$GRAPH" = --cuda-graph ] && G=on || G=off
    step 150 "loop batch 8, CUDA graph $G" $PY -m benchmarks loop --models "$SMALL_MODELS" --recipes paper \
        --cuda-graph "$G" --steps "$((STEPS * 2))" --no-breakdown --data-dir "$DATA" --csv "$CSV" \
        --out "$OUT_DIR/BENCHMARKS.loop_small.md"
    step 150 "loop batch $BATCH_BIG, CUDA graph $G" $PY -m benchmarks loop --models "$MODELS" --batch "$BATCH_BIG" \
        --cuda-graph "$G" --steps "$STEPS" --no-breakdown --data-dir "$DATA" --csv "$CSV" --out "$MD"
    say "profile data: waiting for it"
    wait "$PDATA_PID"; PDATA_RC=$?
    L0=$(($(wc -l <"$LOG") + 1)); cat "$WORK/profile_data.log" >>"$LOG"
    PD_END=$(cat "$WORK/profile_data.end" 2>/dev/null || date +%s)
    say "profile data: exit $PDATA_RC, done $((PD_END - T0)) s after the start"
fi

if [ "$PART" = all ] || [ "$PART" = profile ]; then
    # 5. the gpu profile without Jupyter (notebook 07's calls): data, training, predict, each timed
    #    within the call: the data at most until 4 minutes before its end; the training budget is
    #    what is left after it, less AFTER_S for the crop cache, the model's start, the last
    #    validation and the predictions
    if [ "$PART" = profile ]; then
        P0=$(date +%s) L0=$(($(wc -l <"$LOG") + 1))
        DATA_S=$((CALL_S - 240 - (P0 - T0))); [ "$DATA_S" -gt 900 ] && DATA_S=900
        step "$DATA_S" "profile data" $PY -m lib.pipeline --profile "$PROFILE" --only data; PDATA_RC=$?
    fi
    P1=$(date +%s)
    RUNS=$WORK/runs; rm -rf "$RUNS/gpu_profile"  # an earlier call's run must not stand in for this one's
    ASKED_S=$(awk -v m="$TRAIN_MIN" 'BEGIN { print int(m * 60) }')  # bash has no fractions
    LEFT_S=$((CALL_S - (P1 - T0) - AFTER_S))
    TRAIN_S=$((LEFT_S < ASKED_S ? LEFT_S : ASKED_S)); [ "$TRAIN_S" -lt 0 ] && TRAIN_S=0
    TRAIN_MIN_NOW=$(awk -v s="$TRAIN_S" 'BEGIN { printf "%.2f", s / 60 }')
    if [ "$TRAIN_S" -lt "$ASKED_S" ]; then
        say "profile train: $TRAIN_S s of the $TRAIN_MIN min asked, the time left in the ${CALL_S}-s call after the data"
    fi
    TRAIN_RC=none PRED_RC=none
    if [ "$PDATA_RC" != 0 ]; then
        say "profile train: left out, the profile's data failed (exit $PDATA_RC; the training would render it again)"; P2=$(date +%s)
    elif [ "$TRAIN_S" -ge 10 ]; then
        step $((TRAIN_S + TRAIN_EXTRA_S)) "profile train" $PY -m lib.train --model hm_resnet18_64 --recipe modern \
            --profile "$PROFILE" --budget-minutes "$TRAIN_MIN_NOW" --out-dir "$RUNS" --run gpu_profile --no-resume \
            "$GRAPH" ${GPU_CHECK_TRAIN_ARGS:-}; TRAIN_RC=$?
        P2=$(date +%s)
        step "$PREDICT_S" "profile predict" $PY -m lib.predict --run "$RUNS/gpu_profile"; PRED_RC=$?
    else
        say "profile train: left out, under 10 s left in the call"; P2=$(date +%s)
    fi
    P3=$(date +%s)
    # all: the data ended at PD_END, beside the measurements; the training waited for them until P1
    [ "$PART" = all ] && DATA_SEC=$((PD_END - P0)) BESIDE="; beside the measurements, which the training waited for until $((P1 - T0)) s" \
        || DATA_SEC=$((P1 - P0)) BESIDE=""
    PROFILE_SEC=$((DATA_SEC + P3 - P1))
    cp "$RUNS/gpu_profile/curve.csv" "$RUNS/gpu_profile/log.csv" "$OUT_DIR/" 2>/dev/null
    { echo "gpu profile ($PROFILE): data $DATA_SEC s (render, build$BESIDE), training $((P2 - P1)) s (the crop cache build included), predict $((P3 - P2)) s, total $PROFILE_SEC s";
      tail -n "+$L0" "$LOG" | tr '\r' '\n' | grep -E "gpu_profile|data:|kaggle_mse|epe|rror|\] profile" | tail -n 80; } >"$OUT_DIR/profile.log"
    say "$(head -n 1 "$OUT_DIR/profile.log")"
fi
if [ "$PART" = all ]; then  # the issue's targets: goal, measured, met
    ARGS=(--models "$MODELS" --note "measured beside the niced render of the gpu profile's data (gpu_check.sh all)")
    [ -f "$CSV" ] && ARGS+=(--loop "$CSV")
    [ -f "$RUNS/gpu_profile/val_metrics.json" ] && [ "$PRED_RC" = 0 ] && ARGS+=(--run "$RUNS/gpu_profile")
    # the profile's seconds count when it rendered its data here (not a reused set) and trained and predicted
    if grep -q "rendering the synthetic default" "$WORK/profile_data.log" && [ "$TRAIN_RC" = 0 ] && [ "$PRED_RC" = 0 ]; then
        SECONDS_ARG=profile=$PROFILE_SEC,
    else
        SECONDS_ARG=; say "targets: the gpu profile's seconds left out (data rendered here: $(grep -c "rendering the synthetic default" "$WORK/profile_data.log"), training exit $TRAIN_RC, predict exit $PRED_RC)"
    fi
    step 20 "targets" $PY -m benchmarks targets "${ARGS[@]}" --seconds "${SECONDS_ARG}all=$(($(date +%s) - T0))" \
        --out "$OUT_DIR/BENCHMARKS.targets.md"
fi
# the headline lines last, so the end of the output (all a short remote call may return) has them
{ echo "--- summary"; tr '\r' '\n' <"$LOG" | grep -E "^\[gpu_check .*exit [^0]|^loop: |^bench: .*(img/s|still running)|^gpu_profile epoch [0-9]+: train|\"(test_)?kaggle_mse\"|(passed|failed|errors?).* in [0-9.]+s" \
    | cut -c1-160 | tail -n 40; head -n 1 "$OUT_DIR/profile.log" 2>/dev/null
  grep -E "^\| " "$OUT_DIR/BENCHMARKS.targets.md" 2>/dev/null | cut -c1-200; } | tee -a "$LOG"
say "done in $(($(date +%s) - T0)) s"
