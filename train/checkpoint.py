"""Orbax checkpoints of a fold: `latest/` (resume) and `best/` (the best validation RankIC), one step each.

A checkpoint holds the train state (params, optimizer state, step, RNG) and a JSON `meta` item: the data
cursor (epoch and position in that epoch's shuffled date order), early-stopping and monitor state, the input
list's hash and the resolved config. `restore_params(fold_dir)` rebuilds the parameters of a fold's best (or
latest) checkpoint from the run folder alone, on any machine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from etl.errors import GogookuError
from model.atft_gat_fan import param_shapes
from model.config import ModelConfig
from train.config import config_diffs

KINDS = ("latest", "best")


class CheckpointMismatch(GogookuError):
    """A checkpoint that does not fit the data or model it is asked to serve."""


def managers(fold_dir: Path) -> dict[str, ocp.CheckpointManager]:
    """The fold's two managers, each keeping one step: `latest` for resuming, `best` for predicting."""
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    return {
        kind: ocp.CheckpointManager(
            (fold_dir / kind).absolute(), options=options, item_names=("state", "meta")
        )
        for kind in KINDS
    }


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Save (asynchronously; the arrays are copied off the device before this returns)."""
    manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    )


def _read(manager: ocp.CheckpointManager, step: int, args: ocp.args.Composite) -> Any:
    """`manager.restore`, with a damaged or incomplete checkpoint (files deleted, truncated, hand-edited) as
    one GogookuError that names it, rather than Orbax's traceback."""
    try:
        return manager.restore(step, args=args)
    except Exception as err:  # Orbax raises KeyError, ValueError, FileNotFoundError, ... for damaged files
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise GogookuError(
            f"checkpoint {manager.directory}/{step} is damaged or incomplete ({type(err).__name__}: "
            f"{detail}); train the run again (gogooku train --overwrite)"
        ) from None


def restore(manager: ocp.CheckpointManager, abstract_state: Any) -> tuple[Any, dict[str, Any]] | None:
    """The latest step's (state, meta), restored into `abstract_state` (structure, shardings); or None."""
    step = manager.latest_step()
    if step is None:
        return None
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
    out = _read(manager, step, args)
    return out["state"], dict(out["meta"])


def read_meta(fold_dir: Path, kind: str = "best") -> dict[str, Any]:
    """The meta item of a fold's `best` or `latest` checkpoint."""
    manager = ocp.CheckpointManager((Path(fold_dir) / kind).absolute(), item_names=("state", "meta"))
    step = manager.latest_step()
    if step is None:
        raise GogookuError(f"no {kind} checkpoint in {fold_dir}")
    meta = _read(manager, step, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    manager.close()
    return dict(meta)


def model_dict(cfg: ModelConfig) -> dict[str, Any]:
    """A model config as JSON-able data (what a checkpoint records and is checked against)."""
    return _jsonable(dataclasses.asdict(cfg))


def check_compatible(
    meta: dict[str, Any], input_hash: str, n_inputs: int, cfg: ModelConfig, where: str
) -> None:
    """Refuse a checkpoint trained on other inputs or another model config, saying which and how."""
    if meta.get("input_hash") != input_hash:
        raise CheckpointMismatch(
            f"{where} was trained on another input list (hash {str(meta.get('input_hash'))[:12]}, "
            f"{meta.get('n_inputs')} inputs) than this data (hash {input_hash[:12]}, {n_inputs} inputs): "
            "use the run's data.inputs and feature store"
        )
    diffs = config_diffs(meta.get("model", {}), model_dict(cfg))
    if diffs:
        raise CheckpointMismatch(f"{where} has another model config (checkpoint vs now): {'; '.join(diffs)}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def abstract_state(cfg: ModelConfig, train_cfg: Any, sharding: Any = None) -> Any:
    """The TrainState's structure, shapes, dtypes (and shardings) without computing anything."""
    from train.step import TrainState, make_optimizer

    params = param_shapes(cfg)
    tx = make_optimizer(train_cfg.clip_norm, train_cfg.weight_decay)
    state = TrainState(
        jax.ShapeDtypeStruct((), jnp.int32),
        params,
        jax.eval_shape(tx.init, params),
        jax.ShapeDtypeStruct((2,), jnp.uint32),
    )
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), state)


def restore_params(
    fold_dir: str | Path, kind: str = "best", sharding: Any = None
) -> tuple[Any, dict[str, Any]]:
    """A fold's parameters and checkpoint meta from the run folder alone (config.yaml beside the folds).

    `sharding`: where the parameters go (default: the first device)."""
    from train.config import load_config, model_config

    fold_dir = Path(fold_dir)
    cfg = load_config(fold_dir.parent / "config.yaml")
    meta = read_meta(fold_dir, kind)
    model_cfg = model_config(cfg, n_features=meta["n_inputs"])
    target = sharding if sharding is not None else jax.sharding.SingleDeviceSharding(jax.devices()[0])
    manager = ocp.CheckpointManager((fold_dir / kind).absolute(), item_names=("state", "meta"))
    restored = restore(manager, abstract_state(model_cfg, cfg.train, target))
    manager.close()
    assert restored is not None  # read_meta found the step
    return restored[0].params, restored[1]
