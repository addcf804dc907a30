#!/usr/bin/env bash
# Download the wheels bench/gpu_check.sh installs on a lent GPU machine into .whl/ (git-ignored): what its
# image (Python 3.12, JAX, CuPy, NumPy, PyArrow, Flax, Optax, Orbax, pytest, pandas) lacks. Versions follow
# requirements.lock; py-spy profiles the etl stage. Carry `.whl` with the device call (64 MiB in all).
#   bash bench/gpu_wheels.sh && du -sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { grep -i "^$1==" requirements.lock; }
PY=${PY:-.venv/bin/python}
rm -rf .whl.tmp && mkdir .whl.tmp
"$PY" -m pip download -q --no-deps --only-binary :all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .whl.tmp \
  "$(pin polars)" "$(pin polars-runtime-32)" "$(pin exchange-calendars)" "$(pin pyluach)" "$(pin toolz)" \
  "$(pin korean-lunar-calendar)" "$(pin tzdata)" "$(pin ta-lib)" py-spy==0.4.1
rm -rf .whl && mv .whl.tmp .whl
ls .whl
