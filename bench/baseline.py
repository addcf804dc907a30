"""Benchmark the LightGBM baseline (train/baseline.py) at full-market shape on the CPU.

    .venv/bin/python bench/baseline.py                         # 2,450 sessions x 4,000 stocks, 24 inputs
    .venv/bin/python bench/baseline.py --inputs 328            # every role-I input: about 19 GB of RAM
    .venv/bin/python bench/baseline.py --sessions 600 --stocks 500

It runs what `gogooku baseline --config configs/full.yaml` runs, with the default `baseline:` config (the
one the demo uses), on generated data, and times its largest fold. The folds are those of the full config:
expanding, the first training on 500 sessions, a 20-session embargo, 120 validation sessions, an embargo
and 120 test sessions, moving on by 120. The steps are binning every fold's training rows once (bin edges
from the first fold's rows), then for the last fold, which trains on all of them: one booster per horizon
(5) early-stopped on the validation RankIC, and predicting the test rows. The inputs are standard normal
with 2 % missing. Each horizon's forward return is a weak linear function of the first inputs plus noise,
so early stopping behaves as on a real store. Prints one JSON line with the wall time of each step and the
peak RSS (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from train.baseline import bin_training_rows, fit_fold, lightgbm_params, universe_rows  # noqa: E402
from train.config import BaselineConfig, FoldsConfig  # noqa: E402
from train.data import rank_normalise  # noqa: E402
from train.splits import make_folds  # noqa: E402

HORIZONS = (1, 2, 3, 5, 10)


def market(sessions: int, stocks: int, inputs: int, seed: int = 0) -> SimpleNamespace:
    """Inputs [T, N, F], raw forward returns and rank labels [T, N, H], as `fit_fold` reads them."""
    rng = np.random.default_rng(seed)
    x_TNF = rng.standard_normal((sessions, stocks, inputs), dtype=np.float32)
    beta_F = np.zeros(inputs, np.float32)
    beta_F[: min(inputs, 4)] = (0.004, -0.003, 0.002, 0.001)[: min(inputs, 4)]
    ret_TNH = np.empty((sessions, stocks, len(HORIZONS)), np.float32)
    y_TNH = np.empty_like(ret_TNH)
    y_mask_TNH = np.empty(ret_TNH.shape, bool)
    mask_TN = np.ones((sessions, stocks), bool)
    for k, h in enumerate(HORIZONS):
        noise = rng.standard_normal((sessions, stocks), dtype=np.float32) * (0.02 * np.sqrt(h))
        ret_TNH[..., k] = x_TNF @ beta_F * np.sqrt(h) + noise
        y_TNH[..., k], y_mask_TNH[..., k] = rank_normalise(ret_TNH[..., k], mask_TN)
    for x_NF in x_TNF:  # one session at a time: a float64 draw for the whole panel would double its size
        x_NF[rng.random(x_NF.shape) < 0.02] = np.nan
    return SimpleNamespace(
        x_TNF=x_TNF,
        stock_mask_TN=mask_TN,
        ret_TNH=ret_TNH,
        y_TNH=y_TNH,
        y_mask_TNH=y_mask_TNH,
        horizons=HORIZONS,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2450)
    parser.add_argument("--stocks", type=int, default=4000)
    parser.add_argument("--inputs", type=int, default=24)
    args = parser.parse_args()

    started = time.perf_counter()
    ds = market(args.sessions, args.stocks, args.inputs)
    made = time.perf_counter()
    bc = BaselineConfig()
    params = lightgbm_params(bc)
    folds = make_folds(args.sessions, FoldsConfig(), max_horizon=max(HORIZONS))  # configs/full.yaml's
    fold = folds[-1]
    names = [f"x{i}" for i in range(args.inputs)]
    binned = bin_training_rows(ds.x_TNF, ds.stock_mask_TN, folds, params, names)
    bin_s = time.perf_counter() - made
    valid = universe_rows(ds.x_TNF, ds.stock_mask_TN, fold.valid)
    t0 = time.perf_counter()
    train_idx = binned.rows_of(fold.train)
    boosters = fit_fold(binned, train_idx, valid, ds, bc)
    fit_s = time.perf_counter() - t0
    test = universe_rows(ds.x_TNF, ds.stock_mask_TN, fold.test)
    t0 = time.perf_counter()
    for booster in boosters:
        booster.predict(test.x_RF, num_iteration=booster.best_iteration)
    predict_s = time.perf_counter() - t0
    record = {
        "bench": "baseline",
        "shape": {"sessions": args.sessions, "stocks": args.stocks, "inputs": args.inputs},
        "folds": len(folds),
        "train_rows": int(train_idx.size),
        "valid_rows": int(valid.t_R.size),
        "test_rows": int(test.t_R.size),
        "threads": params["num_threads"],
        "generate_s": round(made - started, 1),
        "bin_s": round(bin_s, 1),
        "fit_s": round(fit_s, 1),
        "fit_per_horizon_s": round(fit_s / len(HORIZONS), 1),
        "best_iterations": [b.best_iteration for b in boosters],
        "predict_s": round(predict_s, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
