#!/usr/bin/env bash
# One call on a lent GPU machine: the GPU tests, then the GPU benchmarks beside their CPU comparison runs.
# Usage (device tool, from the repo root, carrying the wheels the image lacks in .whl/):
#   bash bench/gpu_check.sh            # writes gpu_tests.log and bench_*.json under $OUT (or ./gpu_out)
# Each stage has its own timeout so the whole script ends well inside 8 minutes.
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
log() { echo "== $(date -u +%T) $*" | tee -a "$OUT/summary.log"; }

log "machine"
{ nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc;
  $PY -c "import jax, cupy, numpy, polars; print('jax', jax.__version__, jax.devices()); print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'polars', polars.__version__)"; } 2>&1 | tee -a "$OUT/summary.log"

# The ETL benchmark needs a raw store: generate a 1,000-stock market on the CPU while the GPU runs the rest
# (the full market's GPU build did not fit a 180 s stage on 2026-11-26; 1,000 stocks took 84 s on an H200).
( timeout 200 $PY -m train.cli synth --stocks 1000 --start 2014-01-01 --end 2023-12-31 --seed 0 --out /tmp/raw \
    >"$OUT/synth.log" 2>&1; echo "synth rc=$?" >>"$OUT/synth.log" ) &
SYNTH_PID=$!

log "gpu tests"
timeout 120 $PY -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu_tests.log" | tail -15 | tee -a "$OUT/summary.log"

bench() {  # bench NAME TIMEOUT ARGS...: one JSON line per run into $OUT/bench_NAME.json
  local name=$1 limit=$2; shift 2
  log "bench $name: $*"
  timeout "$limit" $PY "$@" 2>>"$OUT/bench_stderr.log" | tee -a "$OUT/bench_$name.json" | tail -1 | cut -c1-600 | tee -a "$OUT/summary.log"
}
bench graph 40 bench/graph.py --device gpu
wait $SYNTH_PID; tail -2 "$OUT/synth.log" | tee -a "$OUT/summary.log"
# the GPU defaults (1,024-stock chunks, one chunk thread) under cProfile (where the host waits), then 128-stock
# chunks (the 2026-11-26 default: 84 s on an H200) beside it; `--workers 2` is the next thing to try
bench etl 90 bench/etl.py --raw /tmp/raw --out /tmp/features --device gpu --skip-compare \
  --profile "$OUT/etl_gpu_profile.txt"
bench etl 100 bench/etl.py --raw /tmp/raw --out /tmp/features --device gpu --skip-compare --chunk 128
bench model 75 bench/model.py --config base --device gpu --steps 20  # XLA compile alone is ~31 s
log "done"
