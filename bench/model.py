"""Benchmark ATFT-GAT-FAN training and prediction steps on random contract-following batches.

    .venv/bin/python bench/model.py --config tiny                            # CPU, 300 stocks, B=2
    .venv/bin/python bench/model.py --config base --device gpu --steps 20    # full market: 4,000 stocks, L=20
    .venv/bin/python bench/model.py --config base --device gpu --dtype bfloat16
    .venv/bin/python bench/model.py --config tiny --set gat_layers=0          # ablation beside the default

The train step is one jitted function: forward, pinball + IC loss, backward, optax AdamW (warmup + cosine,
global-norm clipping), with the (params, optimizer state) argument donated. Timed steps are dispatched back to
back and synchronised once per step on the loss (as a loop that reads the previous step's metrics would).
Prints one JSON line: compile seconds, median/mean step milliseconds, dates/s, predict milliseconds, and peak
device memory on GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

# `python bench/model.py` puts bench/ first on sys.path, where this file would shadow the `model` package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402

from etl.backend import jax_gpu_problem  # noqa: E402
from etl.errors import GogookuError  # noqa: E402
from model.atft_gat_fan import ATFTGATFAN, init_params, param_count  # noqa: E402
from model.batch import random_batch  # noqa: E402
from model.config import load_model_config  # noqa: E402
from model.losses import total_loss  # noqa: E402

DEFAULT_STOCKS = {"tiny": 300, "base": 4000}


def make_train_step(cfg, optimizer):
    model = ATFTGATFAN(cfg)

    def loss_fn(params, batch, key):
        q = model.apply(params, batch, deterministic=False, rngs={"dropout": key})
        return total_loss(q, batch.y_BNH, batch.y_mask_BNH, batch.stock_mask_BN, cfg)

    def step(state, batch, key):
        params, opt_state = state
        (loss, _parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return jax.jit(step, donate_argnums=0), jax.jit(lambda p, b: model.apply(p, b))


def pick_device(name: str):
    if name == "gpu":
        problem = jax_gpu_problem()
        if problem is not None:
            raise GogookuError(f"--device gpu is not usable: {problem}")
        return jax.devices("gpu")[0]
    return jax.devices("cpu")[0]


def run(args: argparse.Namespace) -> dict:
    overrides = list(args.set or []) + ([f"compute_dtype={args.dtype}"] if args.dtype else [])
    cfg = load_model_config(args.config, overrides)
    if args.features:
        cfg = dataclasses.replace(cfg, n_features=args.features)
    device = pick_device(args.device)
    n = args.stocks or DEFAULT_STOCKS.get(args.config, 1000)
    host_batch = random_batch(cfg, batch_size=args.batch, n_stocks=n, n_pad=n, degree=args.degree, seed=1)
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, max(args.steps + args.warmup, 20))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))
    with jax.default_device(device):
        batch = jax.device_put(host_batch, device)
        params = init_params(cfg, seed=0, batch=batch)
        state = (params, optimizer.init(params))
        train_step, predict = make_train_step(cfg, optimizer)
        key = jax.random.key(0)
        t0 = time.perf_counter()
        compiled = train_step.lower(state, batch, key).compile()
        compile_s = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else (cost or {})
        times = []
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(f"{args.config} train steps", total=args.warmup + args.steps)
            for i in range(args.warmup + args.steps):
                key, sub = jax.random.split(key)
                t = time.perf_counter()
                state, loss = compiled(state, batch, sub)
                loss = float(loss)
                if i >= args.warmup:
                    times.append(time.perf_counter() - t)
                if not np.isfinite(loss):
                    raise GogookuError(f"loss became {loss} at step {i}")
                bar.advance(task)
        predict(state[0], batch).block_until_ready()
        pred_times = []
        for _ in range(max(3, args.steps // 4)):
            t = time.perf_counter()
            predict(state[0], batch).block_until_ready()
            pred_times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    out = {
        "bench": "model",
        "config": args.config,
        "overrides": list(args.set or []),
        "compute_dtype": cfg.compute_dtype,
        "device": str(device),
        "machine": f"{platform.machine()} {platform.node()}",
        "params": param_count(params),
        "B": args.batch,
        "L": cfg.lookback,
        "Npad": n,
        "F": cfg.n_features,
        "Epad": int(host_batch.edges_BE2.shape[1]),
        "compile_s": round(compile_s, 2),
        "gflop_per_step": round(float(cost.get("flops", float("nan"))) / 1e9, 1),
        "step_ms_median": round(1e3 * step_s, 2),
        "step_ms_mean": round(1e3 * statistics.mean(times), 2),
        "dates_per_s": round(args.batch / step_s, 2),
        "predict_ms_median": round(1e3 * statistics.median(pred_times), 2),
        "final_loss": round(loss, 5),
        "steps": args.steps,
    }
    if args.device == "gpu":
        stats = device.memory_stats() or {}
        out["peak_device_gib"] = round(stats.get("peak_bytes_in_use", 0) / 2**30, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny", help="tiny, base or a YAML path")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2, help="dates per step (B)")
    ap.add_argument("--stocks", type=int, default=None, help="stocks per date (= Npad); default by config")
    ap.add_argument("--features", type=int, default=None, help="override F (n_features)")
    ap.add_argument(
        "--degree", type=int, default=4, help="edges per stock per direction (Epad = 2 x degree x N)"
    )
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default=None, help="compute dtype override")
    ap.add_argument("--set", action="append", help="model config override key=value (repeatable)")
    args = ap.parse_args()
    try:
        print(json.dumps(run(args)))
    except GogookuError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
