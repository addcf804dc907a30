"""Benchmark the full training step of `gogooku train`: window gather from the device-resident panel, forward,
loss, backward and AdamW, as one jitted function with the state donated (train/step.py).

    .venv/bin/python bench/train.py                                       # demo shape on the CPU
    .venv/bin/python bench/train.py --model base --device gpu --dtype bfloat16 \\
        --dates 2450 --stocks 4096 --features 328 --epad 36864 --batch 8   # full market on one GPU
    .venv/bin/python bench/train.py --model base --dtype bfloat16 --compile-only \
        --dates 2450 --stocks 4096 --features 328 --epad 36864 --batch 8   # its FLOPs and memory, any machine

The panel [T, Npad, F] (random values, 10% missing), the stock index and the edges are generated on the
device, so nothing crosses the host-device link per step; the loop fetches step t-1's loss after dispatching
step t, as train/loop.py does. Prints one JSON line: compile seconds, median step milliseconds, dates/s,
XLA's FLOPs per date (cost analysis of the compiled step), the compiled step's temporary memory per date, the
resident panel's bytes and, on a GPU, peak device memory. `--compile-only` compiles the step from shapes
alone (nothing allocated, nothing run) and prints the figures that need no timing, for the device it compiles
for.
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

# `python bench/train.py` puts bench/ first on sys.path, where it would shadow the `train` package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from model.config import load_model_config  # noqa: E402
from train.data import Arrays  # noqa: E402
from train.step import (  # noqa: E402
    TrainState,
    by_date,
    compiled_train_step,
    make_mesh,
    params_init,
    replicated,
    to_mesh,
)


def synthetic_arrays(
    t: int, n: int, f: int, e: int, h: int, dtype, sharding, seed: int = 0, abstract: bool = False
) -> Arrays:
    """Device-resident arrays of the given shape: every stock present every date, `e // 2` undirected
    random edges per date, 10% of the inputs missing. `abstract`: their shapes and shardings only."""

    @jax.jit
    def make(key):
        kx, km, ke, kr, ky = jax.random.split(key, 5)
        x = jax.random.normal(kx, (t, n, f), jnp.float32)
        x = jnp.where(jax.random.uniform(km, (t, n, f)) < 0.1, jnp.nan, x).astype(dtype)
        src_dst = jax.random.randint(ke, (t, e // 2, 2), 0, n)
        edges = jnp.concatenate([src_dst, src_dst[..., ::-1]], axis=1)
        rho = jax.random.uniform(kr, (t, e // 2), minval=-1.0, maxval=1.0)
        rho = jnp.concatenate([rho, rho], axis=1)
        feat = jnp.stack([rho, jnp.abs(rho), (rho > 0.5), (rho > 0.0)], -1).astype(jnp.float32)
        y = jax.random.normal(ky, (t, n, h), jnp.float32)
        idx = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (t, n))
        return Arrays(
            x_TNF=x,
            slot_TG=idx,
            code_TN=idx,
            stock_mask_TN=jnp.ones((t, n), bool),
            sector_TN=idx % 33,
            market_TN=idx % 7,
            edges_TE2=edges.astype(jnp.int32),
            edge_mask_TE=jnp.ones((t, e), bool),
            edge_feat_TEC=feat,
            y_TNH=y,
            y_mask_TNH=jnp.ones((t, n, h), bool),
            ret_TNH=y * 0.01,
        )

    make_jit = jax.jit(make, out_shardings=sharding)
    if abstract:  # shapes only: compile the step at any size without allocating the panel
        return jax.eval_shape(make_jit, jax.random.key(seed))
    return make_jit(jax.random.key(seed))


def run(args: argparse.Namespace) -> dict:
    overrides = [f"compute_dtype={args.dtype}"] if args.dtype else []
    overrides += list(args.set or [])
    cfg = dataclasses.replace(load_model_config(args.model, overrides), n_features=args.features)
    if args.hidden:
        cfg = dataclasses.replace(cfg, hidden=args.hidden)
    if args.lookback:
        cfg = dataclasses.replace(cfg, lookback=args.lookback)
    mesh = make_mesh(args.device)
    rep = replicated(mesh)
    platform_name = mesh.devices.flat[0].platform
    panel_dtype = jnp.bfloat16 if (args.dtype == "bfloat16" or platform_name == "gpu") else jnp.float32
    shape = (args.dates, args.stocks, args.features, args.epad, len(cfg.horizons))
    arrays = synthetic_arrays(*shape, panel_dtype, rep, abstract=args.compile_only)
    tx, step = compiled_train_step(cfg, 1.0, 1e-4, mesh)

    def fresh_state():
        params = params_init(cfg)(jax.random.key(0))
        return TrainState(
            jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.key_data(jax.random.key(1))
        )

    b = args.batch
    rng = np.random.default_rng(0)

    def dates():
        return to_mesh(rng.integers(cfg.lookback, args.dates, size=b).astype(np.int32), by_date(mesh))

    if args.compile_only:
        state, d = jax.eval_shape(fresh_state), jax.ShapeDtypeStruct((b,), jnp.int32)
    else:
        state, d = jax.tree.map(lambda a: to_mesh(np.asarray(a), rep), fresh_state()), dates()
    schedule = jax.ShapeDtypeStruct((3,), jnp.float32)
    t0 = time.perf_counter()
    compiled = step.lower(state, arrays, d, d, schedule).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    out = {
        "bench": "train",
        "model": args.model,
        "overrides": overrides,
        "compute_dtype": cfg.compute_dtype,
        "panel_dtype": jnp.dtype(panel_dtype).name,
        "device": str(mesh.devices.flat[0]),
        "devices": int(mesh.size),
        "machine": f"{platform.machine()} {platform.node()}",
        "T": args.dates,
        "Npad": args.stocks,
        "F": args.features,
        "L": cfg.lookback,
        "hidden": cfg.hidden,
        "Epad": args.epad,
        "B": b,
        "params": int(sum(np.prod(p.shape) for p in jax.tree.leaves(state.params))),
        "compile_s": round(compile_s, 1),
        "gflop_per_date": round(float(cost.get("flops", 0.0)) / b / 1e9, 2),
        "temp_mb_per_date": round(memory.temp_size_in_bytes / b / 2**20, 1) if memory else None,
        "panel_gb": round(np.prod(arrays.x_TNF.shape) * jnp.dtype(panel_dtype).itemsize / 2**30, 2),
    }
    if args.compile_only:
        return out
    schedule = to_mesh(np.array([1e-3, 10, 10_000], np.float32), rep)
    state, metrics = step(state, arrays, d, d, schedule)  # warm-up
    jax.block_until_ready(metrics)
    times, prev = [], None
    for _ in range(args.steps):
        t0 = time.perf_counter()
        d = dates()
        state, metrics = step(state, arrays, d, d, schedule)
        if prev is not None:
            float(prev["loss"])  # the loop reads step t-1's metrics after dispatching step t
        prev = metrics
        times.append(time.perf_counter() - t0)
    float(prev["loss"])
    med = statistics.median(times)
    out |= {
        "step_ms_median": round(med * 1e3, 2),
        "dates_per_s": round(b / med, 2),
        "final_loss": round(float(prev["loss"]), 4),
        "steps": args.steps,
    }
    if platform_name == "gpu":
        stats = mesh.devices.flat[0].memory_stats() or {}
        out["peak_device_gb"] = round(stats.get("peak_bytes_in_use", 0) / 2**30, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="model config name or YAML path (configs/model/)")
    p.add_argument("--set", action="append", help="model config override key=value (repeatable)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "gpu"))
    p.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype (default: the config's)")
    p.add_argument("--dates", type=int, default=1218, help="T: sessions in the panel (demo: 1218)")
    p.add_argument("--stocks", type=int, default=288, help="Npad (demo: 288)")
    p.add_argument("--features", type=int, default=24, help="F (demo config: 24; all role-I columns: 328)")
    p.add_argument("--epad", type=int, default=2176, help="Epad (demo: 2176)")
    p.add_argument("--hidden", type=int, help="hidden size (default: the model config's)")
    p.add_argument("--lookback", type=int, help="L (default: the model config's)")
    p.add_argument("--batch", type=int, default=4, help="B: dates per step")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument(
        "--compile-only",
        action="store_true",
        help="compile the step from shapes alone and print FLOPs and memory per date (any size, no panel)",
    )
    print(json.dumps(run(p.parse_args())))


if __name__ == "__main__":
    main()
