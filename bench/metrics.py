"""Benchmark the scorer (train/metrics.py) on one year of the full market after compilation.

    .venv/bin/python bench/metrics.py                      # CPU: 245 dates x 4,000 stocks x 5 horizons
    .venv/bin/python bench/metrics.py --device gpu
    .venv/bin/python bench/metrics.py --dates 60 --stocks 500 --repeats 3

Random predictions with a weak planted signal, 5 % of the stocks masked each date, default `eval:` config
(both portfolios: long-short quintiles and top-50 with 5 dropped per day, lag 1, 10 bp). The first call
compiles; the timed calls are the compiled `score` on device-resident inputs, synchronised on its outputs;
`from_host_s` times one call on NumPy inputs (the transfer included) and `summarise_s` the host-side
summary. Prints one JSON line; the target is <= 20 s on a 2-core CPU and <= 2 s on a GPU
(docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from etl.backend import jax_gpu_problem  # noqa: E402
from train.config import MetricsConfig  # noqa: E402
from train.metrics import score, summarise  # noqa: E402

HORIZONS = (1, 2, 3, 5, 10)


def market(dates: int, stocks: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    daily = rng.normal(0.0003, 0.02, size=(dates + max(HORIZONS), stocks)).astype(np.float32)
    growth = np.cumprod(1.0 + daily, axis=0)
    ret = np.stack([growth[h : h + dates] / growth[:dates] - 1.0 for h in HORIZONS], axis=-1)
    pred = 0.1 * ret / 0.02 + rng.normal(size=ret.shape)  # RankIC about 0.1 on the 1-day horizon
    mask = np.broadcast_to(rng.random((dates, stocks, 1)) > 0.05, ret.shape)
    return {
        "pred_DNH": pred.astype(np.float32),
        "ret_DNH": ret.astype(np.float32),
        "mask_DNH": np.ascontiguousarray(mask),
        "daily_ret_TN": daily[: dates + 1],
        "topix_ret_T": daily[: dates + 1].mean(1),
    }


def run(args: argparse.Namespace) -> dict:
    if args.device == "gpu" and (problem := jax_gpu_problem()) is not None:
        sys.exit(f"error: --device gpu is not usable: {problem}")
    device = jax.devices(args.device)[0]
    host = market(args.dates, args.stocks)
    config = MetricsConfig()
    with jax.default_device(device):
        inputs = jax.device_put(host)  # uncommitted, as NumPy inputs are: one compilation serves both
        t0 = time.perf_counter()
        jax.block_until_ready(score(**inputs, config=config))  # compiles
        first_call_s = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = jax.block_until_ready(score(**inputs, config=config))
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        jax.block_until_ready(score(**host, config=config))
        from_host_s = time.perf_counter() - t
        t = time.perf_counter()
        summary = summarise(out, HORIZONS, config)
        summarise_s = time.perf_counter() - t
    first = summary["horizons"]["1d"]
    return {
        "bench": "metrics",
        "device": str(device),
        "machine": f"{platform.machine()} {platform.node()}",
        "D": args.dates,
        "N": args.stocks,
        "H": len(HORIZONS),
        "first_call_s": round(first_call_s, 2),  # compilation + one run
        "score_s_best": round(min(times), 3),
        "score_s_median": round(statistics.median(times), 3),
        "repeats": args.repeats,
        "from_host_s": round(from_host_s, 3),
        "summarise_s": round(summarise_s, 3),
        "rank_ic_1d": round(first["signal"]["rank_ic_mean"], 4),
        "top_k_sharpe_1d": round(first["top_k"]["sharpe"], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--dates", type=int, default=245)
    ap.add_argument("--stocks", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=5)
    print(json.dumps(run(ap.parse_args())))


if __name__ == "__main__":
    main()
