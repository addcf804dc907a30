#!/usr/bin/env bash
# One call on a lent GPU machine: the GPU tests, then the GPU benchmarks.
# Usage (device tool, from the repo root, carrying the wheels the image lacks in .whl/: polars,
# polars-runtime-32, exchange-calendars and its pure-Python needs, ta-lib, py-spy; `bash bench/gpu_wheels.sh`
# downloads them, 56 MB; see docs/benchmarks.md):
#   bash bench/gpu_check.sh   # the open figures: GPU tests, the training step at full market, the scorer
#   STAGES="tests graph etl model train metrics" ETL_STOCKS=1000 bash bench/gpu_check.sh   # any subset
# Stages: tests (pytest -m gpu), graph (bench/graph.py), etl (a full-market synth, then four GPU ETL builds),
# model (bench/model.py), train (bench/train.py at full-market shape: bf16 with B = 8, then fp32 with B = 4
# beside it; TRAIN_DEVICE and TRAIN_SHAPE change them), metrics (bench/metrics.py, one full-market
# year, on the GPU and the CPU beside it; METRICS_DEVICE=cpu tries the stage without a GPU).
# Results go to $OUT (or ./gpu_out): summary.log, gpu_tests.log, bench_*.json, bench_stderr.log (the builds'
# chunk timeline), etl_gpu_spy.txt (py-spy raw stacks of the first build, every thread), gpu_usage.csv.
# Each stage has its own timeout; the defaults end inside 8 minutes (about 4 when all goes well).
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
PY=${PY:-python3}
STAGES=" ${STAGES:-tests train metrics} "
want() { [[ $STAGES == *" $1 "* ]]; }
log() { echo "== $(date -u +%T) $*" | tee -a "$OUT/summary.log"; }

log "machine"
{ nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc;
  $PY -c "import jax, cupy, numpy, polars; print('jax', jax.__version__, jax.devices()); print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'polars', polars.__version__)"; } 2>&1 | tee -a "$OUT/summary.log"

# The ETL benchmark needs a raw store: generate it on the CPU while the GPU runs the tests (ETL_STOCKS=4000
# is the full market: about a minute to generate).
ETL_STOCKS=${ETL_STOCKS:-4000}
want etl && ( timeout 200 $PY -m train.cli synth --stocks "$ETL_STOCKS" --start 2014-01-01 --end 2023-12-31 --seed 0 --out /tmp/raw \
    >"$OUT/synth.log" 2>&1; echo "synth rc=$?" >>"$OUT/synth.log" ) &
SYNTH_PID=$!

# Only the modules that hold GPU tests are collected: the others import test references (LightGBM, TA-Lib)
# the image may lack, and one failed import would stop the whole collection.
TESTS=${TESTS:-$(grep -l "mark.gpu" tests/test_*.py | tr '\n' ' ')}
want tests && log "gpu tests" && timeout 120 $PY -m pytest -q -m gpu -p no:cacheprovider $TESTS 2>&1 | tee "$OUT/gpu_tests.log" | tail -15 | tee -a "$OUT/summary.log"

bench() {  # bench NAME TIMEOUT ARGS...: one JSON line per run into $OUT/bench_NAME.json
  local name=$1 limit=$2; shift 2
  log "bench $name: $*"
  timeout "$limit" $PY "$@" 2>>"$OUT/bench_stderr.log" | tee -a "$OUT/bench_$name.json" | tail -1 | cut -c1-600 | tee -a "$OUT/summary.log"
}
want graph && bench graph 40 bench/graph.py --device gpu
if want etl; then wait $SYNTH_PID; tail -2 "$OUT/synth.log" | tee -a "$OUT/summary.log"; fi
# ETL builds, one per ';'-separated item of ETL_RUNS (default: "spy;compare;--workers 1;--chunk 2048"). "spy": the GPU
# defaults under py-spy (every thread, 20 Hz, non-blocking; on a fresh machine CuPy compiles its kernels in
# this run), "profile" the same under cProfile (the main thread only), "compare" the defaults again (kernel
# cache warm) followed by the ten-feature panels vs Polars `.over("Code")` comparison; anything else is
# options for bench/etl.py. ETL_LIMIT: seconds per build (default 80).
# GPU memory and utilisation are sampled every 2 s into gpu_usage.csv. ETL_DEVICE=cpu tries the stage here.
SPY=${SPY:-$(command -v py-spy || echo /tmp/site/bin/py-spy)}  # without it the build runs unprofiled
spy_run() {  # spy_run LIMIT ARGS...
  local limit=$1; shift
  log "bench etl under py-spy: $*"
  $PY "$@" --stacks 30 >>"$OUT/bench_etl.json" 2>>"$OUT/bench_stderr.log" &
  local pid=$!
  "$SPY" record --pid "$pid" --threads --nonblocking --rate 20 --format raw --duration "$limit" \
    --output "$OUT/etl_gpu_spy.txt" >/dev/null 2>>"$OUT/bench_stderr.log" || timeout "$limit" tail --pid="$pid" -f /dev/null
  kill "$pid" 2>/dev/null; wait "$pid"
  tail -1 "$OUT/bench_etl.json" | cut -c1-600 | tee -a "$OUT/summary.log"
}
if want etl; then
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 2000 >"$OUT/gpu_usage.csv" &
  SMI_PID=$!
  L=${ETL_LIMIT:-80}
  IFS=';' read -ra RUNS <<<"${ETL_RUNS-spy;compare;--workers 1;--chunk 2048}"
  for opts in "${RUNS[@]}"; do
    args=(bench/etl.py --raw /tmp/raw --out /tmp/features --device "${ETL_DEVICE:-gpu}")
    case $opts in
      profile) bench etl "$L" "${args[@]}" --skip-compare --profile "$OUT/etl_gpu_profile.txt" ;;
      spy) spy_run "$L" "${args[@]}" --skip-compare ;;
      compare) bench etl "$L" "${args[@]}" ;;
      *) bench etl "$L" "${args[@]}" --skip-compare $opts ;;
    esac
  done
  kill $SMI_PID 2>/dev/null
fi
want model && bench model 75 bench/model.py --config base --device gpu --steps 20  # XLA compile alone is ~31 s
# The full training step (gather, forward, backward, AdamW) at full-market shape: 10 years x 4,096 slots x all
# 328 inputs, Epad 36,864. Target (issue 15): >= 100 dates/s in bf16 on one H100. Compile is ~30-60 s each.
TRAIN_SHAPE=${TRAIN_SHAPE:---dates 2450 --stocks 4096 --features 328 --epad 36864}
if want train; then
  bench train 120 bench/train.py --model base --device "${TRAIN_DEVICE:-gpu}" $TRAIN_SHAPE --dtype bfloat16 --batch 8
  bench train 120 bench/train.py --model base --device "${TRAIN_DEVICE:-gpu}" $TRAIN_SHAPE --dtype float32 --batch 4
fi
if want metrics; then  # one year, full market: the scorer (target 2 s), and the host's CPUs beside it
  bench metrics 60 bench/metrics.py --device "${METRICS_DEVICE:-gpu}"
  bench metrics 60 bench/metrics.py --device cpu
fi
log "done"
