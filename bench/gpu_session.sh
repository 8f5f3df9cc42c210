#!/usr/bin/env bash
# Issue 16's GPU measurements in ONE device call (one H200, ~9 minutes), everything written under $OUT.
#
#   bash ../shared/device/prepare.sh      # here, once: the wheels the device image lacks, into .device/whl
#   device run, carry [".device"], timeout_s 570, command:
#     bash bench/gpu_session.sh           # all steps; or name some: bash bench/gpu_session.sh throughput jobs
#
# Steps, in order of priority, each under its own timeout and all under one budget (GPU_SESSION_BUDGET_S,
# default 530 s): a step that would not fit in what is left is skipped and says so (rerun it by name).
#   install     the carried wheels into /tmp/site (prepare.sh's install line)
#   gpu_tests   pytest -m gpu: CUDA features, preprocess.py preprocess.device=cuda, the resident store on CUDA
#   throughput  bench/train_throughput.py: model-only vs pipeline, resnext101_32x4d and resnet50, batch 128
#               and 512, input path loader vs resident
#   jobs        bench/jobs_per_gpu.py: K = 1, 2, 4, 8 model-only processes at once (launcher.jobs_per_gpu)
#   epochs      bench/epoch_time.py: 3 whole train.py epochs at FSDKaggle2018's size (9,473 + 1,600 clips of
#               fabricated features), resnext101_32x4d, loader vs resident, against the model-only time
#   preprocess  bench/preprocess.py --device cuda: 1,000 and 3,000 clips of 7 s, the seed with BLAS pinned against
#               preprocess.py on the GPU, each line extrapolated to FSDKaggle2018's 18,873 clips
#   checkpoints bench/checkpoint_write.py --device cuda: Lightning's writer vs fstag's, sync and async
#   compile     bench/train_throughput.py, resnet50 batch 128 resident, gpu.compile off vs on
#   epochs_async  bench/epoch_time.py, resident only, checkpoint.async_write=true (against the epochs step)
# Files back (the device tool returns at most 8): $OUT/summary.txt (each step's result lines and status)
# and $OUT/steps.log (every step's whole output).
set -u
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET=${GPU_SESSION_BUDGET_S:-530}
START=$(date +%s)
SUMMARY=$OUT/summary.txt
LOG=$OUT/steps.log
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
steps=${*:-"install gpu_tests throughput jobs epochs preprocess checkpoints compile epochs_async"}
echo "gpu_session $(date -u +%FT%TZ) steps: $steps; git $(git rev-parse --short HEAD 2>/dev/null)" | tee "$SUMMARY"

# step NAME TIMEOUT_S COMMAND...: run under min(TIMEOUT_S, budget left); its output to steps.log, its
# result lines (tables, pass/fail counts) and its status to summary.txt
step() {
  local name=$1 limit=$2; shift 2
  case " $steps " in *" $name "*) ;; *) return 0 ;; esac
  local left=$((BUDGET - ($(date +%s) - START) - 5))
  local t=$((limit < left ? limit : left))
  if [ "$t" -lt 30 ]; then echo "== $name SKIPPED: ${left}s of the budget left" | tee -a "$SUMMARY"; return 0; fi
  echo "== $name (timeout ${t}s): $*" | tee -a "$SUMMARY" >> "$LOG"
  local s=$(date +%s)
  timeout -k 10 "$t" "$@" > "$OUT/.step.txt" 2>&1
  local rc=$?
  cat "$OUT/.step.txt" >> "$LOG"
  grep -E "^(machine|recipe|data|arch|input|overrides|where|\s+step|\s*(loader|resident)\s|\s+[a-z_]+(\s+(-?[0-9.]+|-))+$|cnn_small|resnet|resnext|  K|\s+[0-9]+ |.*clips/s|.*speed-up|.*passed|.*failed|.*skipped|SKIPPED|FAILED|ERROR|auto|GPU|nvidia)" \
    "$OUT/.step.txt" | grep -v "^GPU available" >> "$SUMMARY"
  echo "== $name rc=$rc $(( $(date +%s) - s )) s$([ $rc = 124 ] && echo ' (TIMED OUT)')" | tee -a "$SUMMARY"
  rm -f "$OUT/.step.txt"
}

install() {
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/whl/*.whl || return 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/nvidia-smi: /'
  $PY -c "from fstag.runs.launchers import visible_gpus, jobs_per_gpu; g = visible_gpus(); print('auto jobs_per_gpu on', g, '=', jobs_per_gpu('auto', g))"
}
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}

step install 90 install
step gpu_tests 110 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_features.py tests/test_resident_data.py tests/test_preprocess.py
step throughput 130 $PY bench/train_throughput.py --archs resnext101_32x4d,resnet50 --batches 128,512 --inputs loader,resident --steps 30
step jobs 90 $PY bench/jobs_per_gpu.py --jobs 1,2,4,8 --arch resnext101_32x4d --batch 128 --steps 40
step epochs 170 $PY bench/epoch_time.py --root /tmp/fstag_epoch_time --epochs 3 --arch resnext101_32x4d --inputs loader,resident
step preprocess 170 $PY bench/preprocess.py --n-clips 1000,3000 --seconds 7 --device cuda --no-as-written --data-dir /tmp/fstag_pre_clips
step checkpoints 60 $PY bench/checkpoint_write.py --device cuda --archs resnext101_32x4d,resnet50 --writes 5
step compile 150 $PY bench/train_throughput.py --archs resnet50 --batches 128 --inputs resident --compile off,on --steps 30
step epochs_async 120 $PY bench/epoch_time.py --root /tmp/fstag_epoch_time --epochs 3 --arch resnext101_32x4d --inputs resident --override checkpoint.async_write=true
echo "gpu_session done in $(( $(date +%s) - START )) s" | tee -a "$SUMMARY"
