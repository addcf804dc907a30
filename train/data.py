"""The feature store as model batches: inputs, universe, labels and graphs on the device; windows in jit.

Stock axis: on date t, slot n is the n-th of the store's rows at t in Code order (the order of the edge file's
stock indices), padded to Npad (the store's largest row count, rounded up to `data.pad_multiple`: 128 on a
GPU, 8 on a CPU). `slot_TG[t, g]` finds stock g's slot on any date, so a lookback window follows each stock
through its own history.

- Inputs: the catalog's role-I columns (or the configured subset), scaled per date by `robust_scale` (median
  and MAD x 1.4826 over that date's universe stocks, clipped to +-clip), stored as `x_TNF` with NaN where the
  value is missing; `gather_batch` turns NaN into 0 with a False mask. Role-C ids enter through the model's
  embeddings: sector33_id and the market section (Section).
- Universe of a date: common stocks that traded that session (a row with a close and Volume > 0), without
  sector33 "9999" (ETFs and the like) unless `data.exclude_sector9999` is off, and optionally a minimum
  20-session mean turnover in yen.
- Labels: the target_{h}d columns. Training uses per-date rank-normalised targets (average ranks over the
  universe, standardised to mean 0 and variance 1); evaluation uses the raw forward returns.

Everything a batch needs lives on the device (`Arrays`); a step passes date indices and `gather_batch` builds
its [B, L, Npad, F] windows inside jit, so no window crosses the host-device link. Nothing is fitted across
dates: a batch at t depends on store rows <= t only (tests/test_train_data.py perturbs the future).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
import scipy.stats
from flax import struct

from etl.errors import GogookuError
from etl.features.identifiers import SECTION_OF_MARKET
from etl.graph.build import EDGES_FILE, read_graph_edges
from etl.store.feature_store import read_catalog, scan
from model.batch import Batch
from train.config import DataConfig

SECTIONS = tuple(sorted(set(SECTION_OF_MARKET.values())))  # market id = index here (model n_market = 7)
SECTOR_9999 = 33  # sector33_id of Sector33Code "9999" (FEATURES.md #10)
MAD_TO_SD = 1.4826  # MAD x this = the standard deviation of a normal sample
MEAN_AD_TO_SD = 1.2533  # mean absolute deviation x this = the same, where the MAD is 0
TURNOVER_WINDOW = 20
YEAR_BLOCK = 256  # a store year (at most ~250 sessions), padded: read, scaled and moved at once
GRAPH_SHUFFLE_STREAM = 0x5EED  # with train.seed, the random stream of the shuffled graph's permutations

Progress = Callable[[str, int, int], None]


@struct.dataclass
class Arrays:
    """What a jitted step reads, all on the device (a pytree; T dates, G codes, Npad slots, Epad edges)."""

    x_TNF: Any  # scaled inputs, NaN = missing (bfloat16 on a GPU, float32 on a CPU)
    slot_TG: Any  # int32: stock g's slot on date t, -1 without a row
    code_TN: Any  # int32: the stock (index into Dataset.codes) in slot n on date t, -1 = padding
    stock_mask_TN: Any  # bool: in the date's universe
    sector_TN: Any  # int32 sector33_id, -1 unknown
    market_TN: Any  # int32 index into SECTIONS, -1 unknown
    edges_TE2: Any  # int32 (source, target) slots
    edge_mask_TE: Any  # bool
    edge_feat_TEC: Any  # float32 (rho, |rho|, same sector33, same market)
    y_TNH: Any  # float32 rank-normalised training labels (0 where masked)
    y_mask_TNH: Any  # bool
    ret_TNH: Any  # float32 raw forward returns (NaN where missing or outside the universe)


@dataclass
class Dataset:
    """The loaded store: device `arrays` plus the host-side index and label arrays later stages read."""

    features_dir: Path
    dates: np.ndarray  # [T] datetime64[D]
    codes: np.ndarray  # [G] str, sorted
    input_names: tuple[str, ...]
    input_hash: str
    horizons: tuple[int, ...]
    n_pad: int
    e_pad: int
    settings: dict[str, Any]  # universe and scaling settings, as recorded in inputs.json
    code_TN: np.ndarray  # int32 host copies of the index and label arrays
    slot_TG: np.ndarray
    stock_mask_TN: np.ndarray
    y_TNH: np.ndarray
    y_mask_TNH: np.ndarray
    ret_TNH: np.ndarray  # NaN where missing or outside the universe
    arrays: Arrays

    def inputs_record(self) -> dict[str, Any]:
        """inputs.json: the input list and its hash, the universe and scaling settings, the padded shapes."""
        return {
            "input_hash": self.input_hash,
            "n_features": len(self.input_names),
            "inputs": list(self.input_names),
            "embedded_ids": {"sector33_id": "sector embedding", "Section": f"market embedding {SECTIONS}"},
            "horizons": list(self.horizons),
            "n_pad": self.n_pad,
            "e_pad": self.e_pad,
            "dates": [str(self.dates[0]), str(self.dates[-1]), len(self.dates)],
            "stocks": len(self.codes),
            **self.settings,
        }

    def check_universe(self, date_idx: np.ndarray, what: str) -> None:
        """Refuse dates without a universe to rank (two stocks on one date at least): training on them learns
        nothing and validation gives no RankIC, so a run would 'succeed' without a model."""
        most = int(self.stock_mask_TN[np.asarray(date_idx)].sum(1).max(initial=0))
        if most < 2:
            u = self.settings["universe"]
            days = f"{self.dates[date_idx[0]]}..{self.dates[date_idx[-1]]}" if len(date_idx) else "none"
            raise GogookuError(
                f"{what} ({days}) hold {'no universe stock' if most == 0 else 'one universe stock a date'}: "
                f"data.exclude_sector9999 = {u['exclude_sector9999']} and data.min_turnover_20d = "
                f"{u['min_turnover_20d']:g} leave nothing to rank (lower the floor or check the store)"
            )


def input_hash(names: tuple[str, ...] | list[str]) -> str:
    """sha256 of the input names in model order: a checkpoint only fits data with the same hash."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def resolve_inputs(catalog: dict[str, Any], cfg: DataConfig) -> tuple[str, ...]:
    """The model's input columns: every role-I column in catalog order, or the configured role-I names."""
    roles = {c["name"]: c.get("role") for c in catalog["columns"]}
    if cfg.inputs == "all":
        return tuple(name for name, role in roles.items() if role == "I")
    for name in cfg.inputs:
        if name not in roles:
            raise GogookuError(f"data.inputs: '{name}' is not a column of the feature store")
        if roles[name] != "I":
            raise GogookuError(
                f"data.inputs: '{name}' has role {roles[name]}; only role-I columns are model inputs "
                "(ids enter through embeddings, targets and auxiliary columns never)"
            )
    if len(set(cfg.inputs)) != len(cfg.inputs):
        raise GogookuError("data.inputs names a column twice")
    return tuple(cfg.inputs)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _masked_median(x_TNF: jax.Array, valid_TNF: jax.Array) -> jax.Array:
    """Median over axis 1 of the valid entries, [T, F]; NaN where none is valid."""
    sorted_TNF = jnp.sort(jnp.where(valid_TNF, x_TNF, jnp.inf), axis=1)
    n_TF = valid_TNF.sum(1)
    lo = jnp.take_along_axis(sorted_TNF, jnp.maximum((n_TF - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = jnp.take_along_axis(sorted_TNF, jnp.maximum(n_TF // 2, 0)[:, None], axis=1)[:, 0]
    return jnp.where(n_TF > 0, (lo + hi) / 2.0, jnp.nan)


def robust_scale(x_TNF: jax.Array, universe_TN: jax.Array, clip: float) -> jax.Array:
    """Per-date robust z-scores: (x - median) / (MAD x 1.4826), statistics over the date's universe stocks.

    Where the MAD is 0 (a mostly constant column, e.g. a flag) the mean absolute deviation x 1.2533 scales
    instead; where that is 0 too the column carries nothing that day and scales to 0. Clipped to +-clip;
    NaN stays NaN (missing), and a column with no universe value that day is NaN for every stock.
    """
    x_TNF = jnp.asarray(x_TNF, jnp.float32)
    valid_TNF = jnp.isfinite(x_TNF) & jnp.asarray(universe_TN, bool)[:, :, None]
    med_TF = _masked_median(x_TNF, valid_TNF)
    dev_TNF = jnp.abs(x_TNF - med_TF[:, None])
    mad_TF = _masked_median(dev_TNF, valid_TNF) * MAD_TO_SD
    n_TF = jnp.maximum(valid_TNF.sum(1), 1)
    mean_ad_TF = jnp.where(valid_TNF, dev_TNF, 0.0).sum(1) / n_TF * MEAN_AD_TO_SD
    scale_TF = jnp.where(mad_TF > 0, mad_TF, mean_ad_TF)
    z_TNF = jnp.where(scale_TF[:, None] > 0, (x_TNF - med_TF[:, None]) / scale_TF[:, None], 0.0)
    return jnp.where(
        jnp.isfinite(x_TNF) & jnp.isfinite(med_TF)[:, None], jnp.clip(z_TNF, -clip, clip), jnp.nan
    )


def rank_normalise(y_TN: np.ndarray, valid_TN: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-date average ranks of the valid entries, standardised to mean 0 and variance 1; (labels, mask).

    A date with fewer than two distinct valid values has no labels (mask False)."""
    y = np.where(valid_TN & np.isfinite(y_TN), y_TN, np.nan).astype(np.float64)
    r = scipy.stats.rankdata(y, axis=1, nan_policy="omit")
    ok = np.isfinite(r)
    n = ok.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, r, 0.0).sum(1, keepdims=True) / np.maximum(n, 1)
        sd = np.sqrt(np.where(ok, (r - mean) ** 2, 0.0).sum(1, keepdims=True) / np.maximum(n, 1))
        z = (r - mean) / sd
    mask = ok & (sd > 0)
    return np.where(mask, z, 0.0).astype(np.float32), mask


@dataclass
class _Index:
    """Where each store row goes: date and stock axes, slots, and the per-date host panels."""

    dates: np.ndarray
    codes: np.ndarray
    slot_TG: np.ndarray
    code_TN: np.ndarray
    n_pad: int


def _day_numbers(dates: pl.Series) -> np.ndarray:
    return dates.cast(pl.Int32).to_numpy()


def _build_index(keys: pl.DataFrame, pad_multiple: int) -> _Index:
    """Dates and codes of the store, each row's slot (its Code rank among the date's rows)."""
    dates = np.unique(_day_numbers(keys["Date"]))
    codes = np.unique(keys["Code"].to_numpy().astype(str))
    t = np.searchsorted(dates, _day_numbers(keys["Date"]))
    g = np.searchsorted(codes, keys["Code"].to_numpy().astype(str))
    order = np.lexsort((g, t))
    counts = np.bincount(t, minlength=dates.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.empty(t.size, np.int64)
    slot[order] = np.arange(t.size) - starts[t[order]]
    n_pad = round_up(int(counts.max()), pad_multiple)
    slot_TG = np.full((dates.size, codes.size), -1, np.int32)
    slot_TG[t, g] = slot
    code_TN = np.full((dates.size, n_pad), -1, np.int32)
    code_TN[t, slot] = g
    return _Index(dates.astype("datetime64[D]"), codes, slot_TG, code_TN, n_pad)


def _panel(index: _Index, keys: pl.DataFrame, t: np.ndarray, slot: np.ndarray, column: str) -> np.ndarray:
    out = np.full((index.dates.size, index.n_pad), np.nan, np.float64)
    out[t, slot] = keys[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
    return out


def _trailing_mean(v_TG: np.ndarray, window: int) -> np.ndarray:
    """Mean of the finite values among the last `window` dates (inclusive), per column; NaN if none."""
    ok = np.isfinite(v_TG)
    s = np.cumsum(np.where(ok, v_TG, 0.0), axis=0)
    c = np.cumsum(ok, axis=0)
    s[window:] = s[window:] - s[:-window]
    c[window:] = c[window:] - c[:-window]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / c, np.nan)


def _universe_and_labels(
    index: _Index, keys: pl.DataFrame, cfg: DataConfig, horizons: tuple[int, ...]
) -> dict[str, np.ndarray]:
    t = np.searchsorted(index.dates.astype(np.int64), _day_numbers(keys["Date"]))
    g = np.searchsorted(index.codes, keys["Code"].to_numpy().astype(str))
    slot = index.slot_TG[t, g]
    close = _panel(index, keys, t, slot, "Close")
    volume = _panel(index, keys, t, slot, "Volume")
    sector = _panel(index, keys, t, slot, "sector33_id")
    universe = np.isfinite(close) & (volume > 0)
    if cfg.exclude_sector9999:
        universe &= sector != SECTOR_9999
    if cfg.min_turnover_20d > 0:
        tv_TG = np.full(index.slot_TG.shape, np.nan)
        tv_TG[t, g] = keys["TurnoverValue"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        mean_TG = _trailing_mean(tv_TG, TURNOVER_WINDOW)
        mean_TN = np.where(
            index.code_TN >= 0, mean_TG[np.arange(index.dates.size)[:, None], index.code_TN], np.nan
        )
        universe &= mean_TN >= cfg.min_turnover_20d
    section = keys["Section"].replace_strict(
        {s: i for i, s in enumerate(SECTIONS)}, default=-1, return_dtype=pl.Int32
    )
    market = np.full(close.shape, -1, np.int32)
    market[t, slot] = section.to_numpy()
    ret = np.stack([_panel(index, keys, t, slot, f"target_{h}d") for h in horizons], axis=-1)
    ret = np.where(universe[..., None] & np.isfinite(ret), ret, np.nan).astype(np.float32)
    ys = [rank_normalise(ret[..., k], universe) for k in range(len(horizons))]
    return {
        "stock_mask_TN": universe,
        "sector_TN": np.where(np.isfinite(sector), sector, -1).astype(np.int32),
        "market_TN": market,
        "ret_TNH": ret,
        "y_TNH": np.stack([y for y, _ in ys], axis=-1),
        "y_mask_TNH": np.stack([m for _, m in ys], axis=-1),
    }


def _input_slab(
    index: _Index, frame: pl.DataFrame, names: tuple[str, ...], date_idx: np.ndarray
) -> np.ndarray:
    """Raw inputs of the rows in `frame` as a float32 [len(date_idx), Npad, F] slab, NaN where absent."""
    slab = np.full((date_idx.size, index.n_pad, len(names)), np.nan, np.float32)
    if frame.height == 0:
        return slab
    t = np.searchsorted(index.dates.astype(np.int64), _day_numbers(frame["Date"]))
    g = np.searchsorted(index.codes, frame["Code"].to_numpy().astype(str))
    pos = np.searchsorted(date_idx, t)
    slab[pos, index.slot_TG[t, g]] = frame.select(names).to_numpy().astype(np.float32, copy=False)
    return slab


def _read_inputs(features_dir: Path, names: tuple[str, ...], dates: np.ndarray) -> pl.DataFrame:
    """Code, Date and the inputs (as float32, null -> NaN) of the store rows on `dates` (ascending)."""
    years = set(dates.astype("datetime64[Y]").astype(int) + 1970)
    files = [p for y in sorted(years) for p in sorted(features_dir.glob(f"year={y}/part-*.parquet"))]
    first, last = (d.astype("datetime64[D]").item() for d in (dates[0], dates[-1]))
    lf = (
        pl.scan_parquet(files).select(["Code", "Date", *names]).filter(pl.col("Date").is_between(first, last))
    )
    if dates.size < (last - first).days + 1:  # not every session of the range: keep the ones asked for
        lf = lf.filter(pl.col("Date").is_in(pl.Series(dates.astype("datetime64[D]")).cast(pl.Date).implode()))
    return lf.with_columns(pl.col(list(names)).cast(pl.Float32)).collect()


def shuffle_edges(
    edges_TE2: np.ndarray, mask_TE: np.ndarray, universe_TN: np.ndarray, seed: int
) -> np.ndarray:
    """Each date's edges relabelled by a random permutation of that date's universe slots (another per date).

    Slots outside the universe keep their label and padding edges (mask False) are untouched, so every
    slot's degree moves with it: the degree multiset is kept, who links to whom is random. Edge features stay
    with their edge. The same seed gives the same permutations.
    """
    rng = np.random.default_rng([seed, GRAPH_SHUFFLE_STREAM])
    universe_TN = np.asarray(universe_TN, bool)
    # stable sorts: the universe slots first (ascending, resp. in random order), then the rest ascending
    ascending_TN = np.argsort(~universe_TN, axis=1, kind="stable")
    shuffled_TN = np.argsort(np.where(universe_TN, rng.random(universe_TN.shape), 2.0), axis=1, kind="stable")
    perm_TN = np.empty_like(ascending_TN)
    np.put_along_axis(perm_TN, ascending_TN, shuffled_TN, axis=1)
    t_TE2 = np.arange(edges_TE2.shape[0])[:, None, None]
    relabelled_TE2 = perm_TN[t_TE2, edges_TE2].astype(edges_TE2.dtype)
    return np.where(np.asarray(mask_TE, bool)[..., None], relabelled_TE2, edges_TE2)


def _edges(
    features_dir: Path,
    index: _Index,
    put: Callable[[np.ndarray], Any],
    shuffle: tuple[np.ndarray, int] | None,
) -> tuple[tuple, int]:
    """The edge file's padded arrays on the device, after checking it covers the store's dates; `shuffle`
    = (universe_TN, seed) relabels them by `shuffle_edges`."""
    path = features_dir / EDGES_FILE
    if path.is_file():
        with np.load(path) as f:
            n_edge_dates, file_dates = f["date_ptr"].size - 1, [str(d) for d in f["dates"]]
        if n_edge_dates != index.dates.size or (file_dates and file_dates != [str(d) for d in index.dates]):
            raise GogookuError(
                f"{path} covers {n_edge_dates} dates, the store {index.dates.size}: "
                "rebuild it with `gogooku etl`"
            )
    e = read_graph_edges(features_dir)[0]
    edges_TE2 = e.edges_TE2 if shuffle is None else shuffle_edges(e.edges_TE2, e.mask_TE, *shuffle)
    return (put(edges_TE2), put(e.mask_TE), put(e.feat_TEF)), e.epad


def _scaled_inputs(
    features_dir: Path,
    index: _Index,
    names: tuple[str, ...],
    universe_TN: np.ndarray,
    clip: float,
    dtype: Any,
    placement: Any,
    report: Progress,
) -> jax.Array:
    """The scaled [T, Npad, F] panel, built on the device one store year at a time.

    Each year is padded to YEAR_BLOCK dates so one compilation serves all; the padding rows land on the
    next year's dates (written after) or past the end (cut off).
    """
    n_dates = index.dates.size
    put = lambda a: jax.device_put(a, placement)

    def fill(x_TNF: jax.Array, raw_BNF: jax.Array, universe_BN: jax.Array, start: jax.Array) -> jax.Array:
        z_BNF = robust_scale(raw_BNF, universe_BN, clip).astype(x_TNF.dtype)
        return jax.lax.dynamic_update_slice(x_TNF, z_BNF, (start, 0, 0))

    fill = jax.jit(fill, donate_argnums=0)
    x_TNF = jnp.full((n_dates + YEAR_BLOCK, index.n_pad, len(names)), jnp.nan, dtype, device=placement)
    universe_pad = np.zeros((n_dates + YEAR_BLOCK, index.n_pad), bool)
    universe_pad[:n_dates] = universe_TN
    years = index.dates.astype("datetime64[Y]").astype(int) + 1970
    for k, year in enumerate(np.unique(years)):
        report("inputs", k, len(np.unique(years)))
        real = np.flatnonzero(years == year)
        if real.size > YEAR_BLOCK:
            raise GogookuError(f"{features_dir}: year {year} has {real.size} sessions (> {YEAR_BLOCK})")
        block = np.arange(real[0], real[0] + YEAR_BLOCK)
        slab = _input_slab(index, _read_inputs(features_dir, names, index.dates[real]), names, block)
        x_TNF = fill(x_TNF, put(slab), put(universe_pad[block]), np.int32(real[0]))
        del slab
    report("inputs", len(np.unique(years)), len(np.unique(years)))
    return x_TNF[:n_dates]


def load_dataset(
    cfg: Any,
    *,
    features_dir: str | Path | None = None,
    horizons: tuple[int, ...] | None = None,
    dtype: Any = None,
    sharding: Any = None,
    pad_multiple: int | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """Load the feature store at `features_dir` (default: cfg.paths.features) onto the device.

    `cfg` is the run Config (its `data` and `model` sections). `dtype` of the input panel: bfloat16 on a GPU,
    float32 on a CPU by default; `sharding`: where the arrays live (default: the first JAX device; a
    replicated NamedSharding for a mesh). Inputs are read, scaled and moved one year at a time, so the host
    holds one year of raw inputs at once (docs/train.md gives the memory at full market).
    """
    features_dir = Path(features_dir or cfg.paths.features)
    catalog = read_catalog(features_dir)
    data_cfg: DataConfig = cfg.data
    names = resolve_inputs(catalog, data_cfg)
    horizons = tuple(horizons or cfg.model.horizons)
    columns = {c["name"] for c in catalog["columns"]}
    missing = [f"target_{h}d" for h in horizons if f"target_{h}d" not in columns]
    if missing:
        raise GogookuError(f"model.horizons need {', '.join(missing)}, which the feature store lacks")
    placement = sharding if sharding is not None else jax.devices()[0]
    platform = next(iter(sharding.device_set)).platform if sharding is not None else placement.platform
    if dtype is None:
        dtype = jnp.bfloat16 if platform == "gpu" else jnp.float32
    pad = pad_multiple or data_cfg.pad_multiple or (128 if platform == "gpu" else 8)
    put = lambda a: jax.device_put(a, placement)
    report = progress or (lambda stage, done, total: None)

    targets = [f"target_{h}d" for h in horizons]
    key_cols = ["Code", "Date", "Section", "sector33_id", "Close", "Volume", "TurnoverValue", *targets]
    keys = scan(features_dir).select(key_cols).collect()
    index = _build_index(keys, pad)
    host = _universe_and_labels(index, keys, data_cfg, horizons)
    del keys
    seed = cfg.train.seed
    shuffle = (host["stock_mask_TN"], seed) if data_cfg.graph == "shuffled" else None
    edges, e_pad = _edges(features_dir, index, put, shuffle)

    x_TNF = _scaled_inputs(
        features_dir, index, names, host["stock_mask_TN"], data_cfg.clip, dtype, placement, report
    )
    arrays = Arrays(
        x_TNF=x_TNF,
        slot_TG=put(index.slot_TG),
        code_TN=put(index.code_TN),
        stock_mask_TN=put(host["stock_mask_TN"]),
        sector_TN=put(host["sector_TN"]),
        market_TN=put(host["market_TN"]),
        edges_TE2=edges[0],
        edge_mask_TE=edges[1],
        edge_feat_TEC=edges[2],
        y_TNH=put(host["y_TNH"]),
        y_mask_TNH=put(host["y_mask_TNH"]),
        ret_TNH=put(host["ret_TNH"]),
    )
    settings = {
        "universe": {
            "rule": "common stocks with a store row that traded that session (close present, Volume > 0)",
            "exclude_sector9999": data_cfg.exclude_sector9999,
            "min_turnover_20d": data_cfg.min_turnover_20d,
        },
        "graph": "correlation"
        if shuffle is None
        else f"shuffled: each date's edges relabelled by a random permutation of its universe (seed {seed})",
        "scaling": f"per date: (x - median) / (MAD x {MAD_TO_SD}) over the universe, clipped",
        "clip": data_cfg.clip,
        "labels": "train: per-date rank-normalised target_{h}d; evaluation: raw target_{h}d",
        "store_schema_hash": catalog.get("schema_hash"),
        "panel_dtype": jnp.dtype(dtype).name,
    }
    return Dataset(
        features_dir=features_dir,
        dates=index.dates,
        codes=index.codes,
        input_names=names,
        input_hash=input_hash(names),
        horizons=horizons,
        n_pad=index.n_pad,
        e_pad=e_pad,
        settings=settings,
        code_TN=index.code_TN,
        slot_TG=index.slot_TG,
        stock_mask_TN=host["stock_mask_TN"],
        y_TNH=host["y_TNH"],
        y_mask_TNH=host["y_mask_TNH"],
        ret_TNH=host["ret_TNH"],
        arrays=arrays,
    )


def gather_batch(
    arrays: Arrays, date_idx_B: jax.Array, lookback: int, label_idx_B: jax.Array | None = None
) -> Batch:
    """The model batch of dates `date_idx_B` (pure; runs inside jit): windows of the `lookback` sessions
    ending at each date, each stock followed through its own slots; sessions before the store's first and
    sessions without the stock's row are masked. Labels come from `label_idx_B` (default: the same dates)."""
    date_idx_B = jnp.asarray(date_idx_B, jnp.int32)
    label_idx_B = date_idx_B if label_idx_B is None else jnp.asarray(label_idx_B, jnp.int32)
    t_BL = date_idx_B[:, None] + jnp.arange(1 - lookback, 1, dtype=jnp.int32)[None, :]
    in_store_BL = t_BL >= 0
    t_BL = jnp.maximum(t_BL, 0)
    code_BN = arrays.code_TN[date_idx_B]
    slot_BLN = arrays.slot_TG[t_BL[:, :, None], jnp.maximum(code_BN, 0)[:, None, :]]
    row_BLN = in_store_BL[:, :, None] & (slot_BLN >= 0) & (code_BN >= 0)[:, None, :]
    x_BLNF = arrays.x_TNF[t_BL[:, :, None], jnp.maximum(slot_BLN, 0)]
    mask_BLNF = row_BLN[..., None] & jnp.isfinite(x_BLNF)
    return Batch(
        x_BLNF=jnp.where(mask_BLNF, x_BLNF, jnp.zeros((), x_BLNF.dtype)),
        x_mask_BLNF=mask_BLNF,
        sector_BN=arrays.sector_TN[date_idx_B],
        market_BN=arrays.market_TN[date_idx_B],
        edges_BE2=arrays.edges_TE2[date_idx_B],
        edge_mask_BE=arrays.edge_mask_TE[date_idx_B],
        edge_feat_BEC=arrays.edge_feat_TEC[date_idx_B],
        stock_mask_BN=arrays.stock_mask_TN[date_idx_B],
        y_BNH=arrays.y_TNH[label_idx_B],
        y_mask_BNH=arrays.y_mask_TNH[label_idx_B],
    )


def store_dates(features_dir: str | Path) -> np.ndarray:
    """The store's sessions (datetime64[D], ascending), read from the Date column alone."""
    dates = scan(features_dir).select(pl.col("Date").unique()).collect()["Date"]
    return np.sort(_day_numbers(dates)).astype("datetime64[D]")


def design_matrix(
    ds: Dataset, date_idx: np.ndarray, *, scaled: bool = False, chunk: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's inputs for the universe stocks of `date_idx` as a host matrix, for LightGBM and friends.

    Returns (X [rows, F] float32 with NaN where missing, t [rows], slot [rows]), rows in (date, slot)
    order; the labels of the same rows are `ds.y_TNH[t, slot]` / `ds.ret_TNH[t, slot]`. `scaled=False`:
    the store's values; `scaled=True`: the same per-date robust z-scores the model sees (float32, before
    any bfloat16 cast). Read from the store `chunk` dates at a time.
    """
    date_idx = np.unique(np.asarray(date_idx, np.int64))
    index = _Index(ds.dates, ds.codes, ds.slot_TG, ds.code_TN, ds.n_pad)
    clip = ds.settings["clip"]
    xs, ts, slots = [], [], []
    for i in range(0, date_idx.size, chunk):
        part = date_idx[i : i + chunk]
        slab = _input_slab(
            index, _read_inputs(ds.features_dir, ds.input_names, ds.dates[part]), ds.input_names, part
        )
        if scaled:
            slab = np.asarray(robust_scale(slab, ds.stock_mask_TN[part], clip))
        pos, slot = np.nonzero(ds.stock_mask_TN[part])
        xs.append(slab[pos, slot])
        ts.append(part[pos])
        slots.append(slot)
    empty = np.empty((0, len(ds.input_names)), np.float32)
    cat = lambda parts, e: np.concatenate(parts) if parts else e
    return cat(xs, empty), cat(ts, np.empty(0, np.int64)), cat(slots, np.empty(0, np.int64))


def write_inputs_json(ds: Dataset, path: Path) -> None:
    path.write_text(json.dumps(ds.inputs_record(), indent=1))
