"""The jitted train, predict and validation steps, the optimizer and the device mesh.

`train_step(state, arrays, date_idx_B, label_idx_B)` is pure: it gathers the batch from the device-resident
`Arrays` (train/data.py), runs the model with dropout, takes the loss and its gradients, and applies optax
AdamW (linear warmup + cosine decay, global-norm clipping). The state is donated. Metrics come from inside
the step (loss terms, learning rate, global and per-module gradient norms), so the host never walks a tree.

With several devices the date axis of the batch is sharded over a 1-D `Mesh` ("data") and the parameters
and arrays are replicated; XLA inserts the gradient all-reduce. Several hosts join through
`jax.distributed.initialize` when JAX_COORDINATOR_ADDRESS is set (docs/train.md).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from etl.backend import jax_gpu_problem
from etl.errors import GogookuError
from model.atft_gat_fan import ATFTGATFAN, example_batch
from model.config import ModelConfig
from model.losses import total_loss
from train.config import TrainConfig
from train.data import Arrays, gather_batch
from train.metrics import rank_ic

MODULES = ("static", "vsn", "temporal", "gat", "fusion", "heads")  # the model's top-level blocks


@struct.dataclass
class TrainState:
    """Everything a step changes: a plain pytree (checkpointed as is)."""

    step: jax.Array  # int32 scalar: steps taken
    params: Any
    opt_state: Any
    rng: jax.Array  # uint32 [2]: raw threefry key data; each step splits it


def init_distributed() -> None:
    """Join a multi-host run when JAX_COORDINATOR_ADDRESS is set (with JAX_NUM_PROCESSES and JAX_PROCESS_ID,
    or a cluster JAX detects: SLURM, Open MPI, Kubernetes). Single-host runs need nothing."""
    if not os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return
    count, pid = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
    jax.distributed.initialize(
        num_processes=int(count) if count else None, process_id=int(pid) if pid else None
    )


def make_mesh(device: str = "auto") -> Mesh:
    """A 1-D mesh ("data") over every device of the platform (all hosts' devices in a multi-host run)."""
    if device == "gpu":
        problem = jax_gpu_problem()
        if problem is not None:
            raise GogookuError(f"device gpu is not usable: {problem}")
    platform = "gpu" if device == "gpu" or (device == "auto" and jax_gpu_problem() is None) else "cpu"
    return Mesh(np.array(jax.devices(platform)), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def by_date(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def to_mesh(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array (the same on every process) as a global array with `sharding`."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])


def make_optimizer(clip_norm: float, weight_decay: float) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW at unit learning rate: the step scales the update by
    `learning_rate(step, schedule_3)`, so one compiled step serves folds of any length.

    Weight decay (decoupled, times the learning rate) applies to matrices only, not to biases and norms."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.adamw(1.0, weight_decay=weight_decay, mask=decay_mask),
    )


def learning_rate(step: jax.Array, schedule_3: jax.Array) -> jax.Array:
    """Linear warmup from 0 to the peak over the warmup steps, then cosine decay to 0 at the last step.

    `schedule_3` = (peak, warmup steps, total steps), an array: one compiled step serves every fold and lr."""
    step = jnp.asarray(step, jnp.float32)
    peak, warmup, total = (jnp.asarray(schedule_3, jnp.float32)[i] for i in range(3))
    warm = peak * step / jnp.maximum(warmup, 1.0)
    progress = jnp.clip((step - warmup) / jnp.maximum(total - warmup, 1.0), 0.0, 1.0)
    return jnp.where(step < warmup, warm, 0.5 * peak * (1.0 + jnp.cos(jnp.pi * progress)))


def loss_fn(params: Any, batch: Any, rng: jax.Array, cfg: ModelConfig) -> tuple[jax.Array, dict]:
    """The training loss of one batch (dropout on when the config has any)."""
    q_BNHQ = ATFTGATFAN(cfg).apply(params, batch, deterministic=cfg.dropout == 0.0, rngs={"dropout": rng})
    return total_loss(q_BNHQ, batch.y_BNH, batch.y_mask_BNH, batch.stock_mask_BN, cfg)


def module_norms(grads: Any) -> dict[str, jax.Array]:
    return {m: optax.global_norm(grads["params"][m]) for m in MODULES if m in grads["params"]}


def train_step(
    state: TrainState,
    arrays: Arrays,
    date_idx_B: jax.Array,
    label_idx_B: jax.Array,
    schedule_3: jax.Array,
    *,
    cfg: ModelConfig,
    tx: optax.GradientTransformation,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step on dates `date_idx_B` (labels of `label_idx_B`); `schedule_3` = (peak lr,
    warmup steps, total steps) of the fold (`schedule_array`)."""
    rng, dropout_rng = jax.random.split(jax.random.wrap_key_data(state.rng))
    batch = gather_batch(arrays, date_idx_B, cfg.lookback, label_idx_B)
    grad_fn = jax.value_and_grad(lambda p: loss_fn(p, batch, dropout_rng, cfg), has_aux=True)
    (loss, parts), grads = grad_fn(state.params)
    lr = learning_rate(state.step, schedule_3)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, jax.tree.map(lambda u: lr * u, updates))
    metrics = {
        "loss": loss,
        "pinball": parts["pinball"],
        "ic": parts["ic"],
        "lr": lr,
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(params),
        **{f"grad_norm/{m}": v for m, v in module_norms(grads).items()},
    }
    new_state = TrainState(state.step + 1, params, opt_state, jax.random.key_data(rng))
    return new_state, metrics


def init_state(params: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
    return TrainState(
        jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.key_data(jax.random.key(seed))
    )


def schedule_array(cfg: TrainConfig, total_steps: int) -> np.ndarray:
    return np.array([cfg.lr, cfg.warmup_steps, total_steps], np.float32)


@functools.lru_cache(maxsize=4)
def compiled_train_step(
    cfg: ModelConfig, clip_norm: float, weight_decay: float, mesh: Mesh
) -> tuple[optax.GradientTransformation, Callable[..., tuple[TrainState, dict[str, jax.Array]]]]:
    """The optimizer and `train_step` jitted for the mesh: state and arrays replicated, date indices
    sharded, state donated. Cached: every fold and run of a process with this model and optimizer shares
    one compilation. Call as `step(state, arrays, date_idx_B, label_idx_B, schedule_3)`."""
    tx = make_optimizer(clip_norm, weight_decay)
    rep, dates = replicated(mesh), by_date(mesh)
    step = functools.partial(train_step, cfg=cfg, tx=tx)
    jitted = jax.jit(
        step, in_shardings=(rep, rep, dates, dates, rep), out_shardings=(rep, rep), donate_argnums=0
    )
    return tx, jitted


@functools.lru_cache(maxsize=4)
def params_init(cfg: ModelConfig) -> Callable[[jax.Array], Any]:
    """Jitted key -> fresh float32 parameters (cached like the step: one compilation per model config)."""
    model = ATFTGATFAN(cfg)
    return jax.jit(lambda key: {"params": model.init(key, example_batch(cfg))["params"]})


@functools.partial(jax.jit, static_argnames="cfg")
def predict_step(params: Any, arrays: Arrays, date_idx_B: jax.Array, *, cfg: ModelConfig) -> jax.Array:
    """Quantile predictions [B, Npad, H, Q] (float32, 0 at padded slots) of dates `date_idx_B`; no dropout."""
    batch = gather_batch(arrays, date_idx_B, cfg.lookback)
    return ATFTGATFAN(cfg).apply(params, batch)


@functools.partial(jax.jit, static_argnames="cfg")
def valid_ic_step(params: Any, arrays: Arrays, date_idx_B: jax.Array, *, cfg: ModelConfig) -> jax.Array:
    """RankIC [B, H] of the median prediction vs the raw forward return per date and horizon, over the
    date's universe (NaN where undefined)."""
    median_BNH = predict_step(params, arrays, date_idx_B, cfg=cfg)[..., cfg.median_index]
    ret_BNH = arrays.ret_TNH[date_idx_B]
    mask_BN = arrays.stock_mask_TN[date_idx_B]
    ic_HB = jax.vmap(lambda p, r: rank_ic(p, r, mask_BN), in_axes=(2, 2))(median_BNH, ret_BNH)
    return ic_HB.T


def batches(date_idx: np.ndarray, size: int) -> list[tuple[np.ndarray, int]]:
    """Fixed-size batches of `date_idx` for evaluation: the last is padded by repeating its last date;
    each comes with its count of real dates."""
    out = []
    for i in range(0, date_idx.size, size):
        part = date_idx[i : i + size]
        out.append((np.concatenate([part, np.repeat(part[-1:], size - part.size)]), part.size))
    return out
