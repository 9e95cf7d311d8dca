#!/usr/bin/env bash
# Every GPU measurement of BENCHMARKS.md in one command, about 9 minutes on one H100 (each step
# has a time limit; the first run, 2026-11-26, took 9.0 with longer limits):
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # default outputs/gpu_check
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh   # the rehearsal: tiny sizes, runs on a CPU too
#
# For a GPU box where only torch, timm and the scientific stack are installed and nothing can be
# downloaded: put wheels of the rest (albumentations==2.0.8, albucore, pydantic, pydantic-core,
# annotated-types, typing-inspection, stringzilla, simsimd) in .whl/ (README, "GPU") and they
# are installed into a temporary folder first. Each step has its own time limit; a failed step is
# logged and the next one runs. Output: OUT_DIR/gpu_check.log (everything), OUT_DIR/BENCHMARKS.gpu.md and
# BENCHMARKS.loop_small.md (the tables, as bench sections), render.log, train.log and the run's
# curve.csv / log.csv; the data and the run go to GPU_CHECK_WORK (default /tmp/gpu_check_work).
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${1:-outputs/gpu_check}
mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/gpu_check.log
MD=$OUT_DIR/BENCHMARKS.gpu.md
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
T0=$(date +%s)
: >"$LOG"

say() { echo "[gpu_check $(($(date +%s) - T0)) s] $*" | tee -a "$LOG"; }
step() {  # step SECONDS NAME COMMAND...: run with a time limit, log everything, go on when it fails
    local limit=$1 name=$2; shift 2
    say "$name: $*"
    timeout --signal=INT --kill-after=15 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    say "$name: exit $rc"
}

if [ -n "${GPU_CHECK_TINY:-}" ]; then  # rehearsal sizes
    RENDER=(60 20); STEPS=2; BATCH_BIG=8; MODELS=hm_resnet18_64,resnet34; SMALL_MODELS=resnet34
    TRAIN_MIN=0.3; EVAL_EVERY=5; WORKERS=1; INPUT_N=64
    FAST_MODELS=hm_resnet18_64
else
    RENDER=(12000 1000); STEPS=20; BATCH_BIG=256; MODELS=irv2,hm_resnet18_64,hm_resnet18,resnet34,cpm,inception_v3
    SMALL_MODELS=irv2,resnet34,cpm,inception_v3; TRAIN_MIN=0.5; EVAL_EVERY=500; WORKERS=$(($(nproc) - 1))
    INPUT_N=4000; FAST_MODELS=hm_resnet18_64,hm_resnet18
fi

# 0. the packages the GPU box lacks, from carried wheels
if ! $PY -c "import albumentations" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu_check_site .whl/*.whl \
            >>"$LOG" 2>&1 && export PYTHONPATH=$PYTHONPATH:/tmp/gpu_check_site
    fi
    $PY -c "import albumentations" 2>>"$LOG" || { say "albumentations missing and no .whl/; see README (GPU)"; exit 2; }
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi";
  $PY -c "import torch, timm, albumentations as A; print('torch', torch.__version__, 'timm', timm.__version__,
'albumentations', A.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')";
  echo "cores $(nproc)"; } 2>&1 | tee -a "$LOG"

if $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then GRAPHS=off,on; GRAPH=--cuda-graph
else GRAPHS=off; GRAPH=--no-cuda-graph; say "no CUDA: the CUDA graph rows and the GPU-only tests are left out"; fi

# 1. data: a synthetic set rendered on all cores (in the background, beside the GPU-only steps)
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check_work}  # data and runs: large, kept out of OUT_DIR
DATA=$WORK/data
( $PY -m lib.synth --out "$DATA/rhd" --split training --images "${RENDER[0]}" --seed 0 --workers "$WORKERS" &&
  $PY -m lib.synth --out "$DATA/rhd" --split evaluation --images "${RENDER[1]}" --seed 1 --workers "$WORKERS" &&
  $PY -m lib.data build --rhd "$DATA/rhd" --out "$DATA" --overwrite && $PY -m lib.data cache "$DATA" ) \
    >"$OUT_DIR/render.log" 2>&1 &
RENDER_PID=$!
say "rendering ${RENDER[0]} + ${RENDER[1]} images into $DATA on $WORKERS processes (pid $RENDER_PID)"

# 2. the GPU's own checks: CUDA graph step = eager step, a step never waits, pixel ops match albumentations
step 75 "tests" $PY -m pytest -q -p no:cacheprovider tests/test_loop.py tests/test_augment_device.py -o addopts=""

# 3. the models alone
step 100 "models" $PY -m benchmarks models --models "$MODELS" --batch "$BATCH_BIG" --steps "$STEPS" --timeout 30 --out "$MD"

wait $RENDER_PID; say "render: exit $? ($(tail -n 1 "$OUT_DIR/render.log"))"

# 4. the input alone: can the workers feed the GPU (full modern pipeline vs the workers' share on CUDA)?
step 45 "input" $PY -m benchmarks input --workers "0,8,$WORKERS" --pipelines modern,modern-deferred,modern-context \
    --n "$INPUT_N" \
    --data-dir "$DATA" --out "$MD"

# 5. the training loop against the models alone: big batches, then the report's batch 8 with and without a graph
step 90 "loop batch $BATCH_BIG" $PY -m benchmarks loop --models "$MODELS" --batch "$BATCH_BIG" --steps "$STEPS" \
    --data-dir "$DATA" --out "$MD"
step 40 "loop batch $BATCH_BIG, warp on the device" $PY -m benchmarks loop --models "$FAST_MODELS" --batch "$BATCH_BIG" \
    --steps "$STEPS" --pixel-ops device --warp-on-device --data-dir "$DATA" --out "$OUT_DIR/BENCHMARKS.loop_warp.md"
step 75 "loop batch 8" $PY -m benchmarks loop --models "$SMALL_MODELS" --recipes paper --cuda-graph "$GRAPHS" \
    --steps "$((STEPS * 2))" --data-dir "$DATA" --out "$OUT_DIR/BENCHMARKS.loop_small.md"

# 6. the modern model on the rendered set for TRAIN_MIN minutes (gpu profile settings), then predict and score
RUNS=$WORK/runs
step 60 "train" $PY -m lib.train --model hm_resnet18_64 --profile gpu --data-dir "$DATA" --budget-minutes "$TRAIN_MIN" \
    --eval-every "$EVAL_EVERY" --out-dir "$RUNS" --run gpu_check --no-resume "$GRAPH"
step 30 "predict" $PY -m lib.predict --run "$RUNS/gpu_check"
cp "$RUNS/gpu_check/curve.csv" "$RUNS/gpu_check/log.csv" "$OUT_DIR/" 2>/dev/null
grep -E "gpu_check (epoch|step)|ms/step|kaggle_mse|error" "$LOG" | tail -n 40 >"$OUT_DIR/train.log"
say "done in $(($(date +%s) - T0)) s"
