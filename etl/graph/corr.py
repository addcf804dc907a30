"""Trailing-window Pearson correlations and each stock's top-k peers, for every date (FEATURES.md §4.13).

Rule (the catalog's, one for every consumer): the window is the `cfg.window` sessions ending at t (fewer at
the start of the panel: rows before it count as missing). A stock is a node of date t when it has a row at t
and at least `cfg.min_obs` non-null returns in the window. Its missing returns are replaced by its window
mean, so after centring they are 0 and add nothing to covariances; rho is the Pearson correlation of those
filled vectors. A node whose valid returns in the window are all equal (max = min exactly) has no defined
rho: it has no peers and is nobody's peer.

Per node i: peers N_i = {j != i : |rho_ij| >= threshold}; K_i = the <= k members of N_i with the largest
|rho_ij|, ties to the smaller stock index (= smaller Code: the stock axis is sorted by Code).

Vectorised as batched matrix products over date chunks: for D dates the centred, unit-norm windows of the
dates' rho-defined stocks, packed in Code order into z[D, w, M] (M = the most defined stocks of any of the
D dates; zero columns pad the others), give rho = z^T z in row blocks [D, B, M] whose size is bounded by
`block_bytes`. Top-k is k passes of argmax (argmax returns the first maximum, which is the tie rule) rather
than a partition, which has no tie order. The only Python loops are over these chunks, never over stocks.

Why packed, and one date per block on a CPU: a BLAS product's last bits depend on the matrix shapes and on
where an element falls in the kernel's tiles (OpenBLAS's float32 GEMM gave 4.6e-9 differences in
peer_corr_mean when 77 empty stocks were appended). With one date per product and only that date's
defined stocks in it, the product's inputs and shapes are a function of the date's own windows, so a
stock's rho does not depend on the grid's other stocks: a build with `--start` (fewer stocks in the grid,
other positions) gives the bits of the full build. A GPU batches dates (`WorkSizes.max_dates`): there the
bits may depend on the batch, within the float tolerance of FEATURES.md §4.13.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, field
from typing import Any

import numpy as np

from etl.config import GraphConfig


@dataclass(frozen=True)
class WorkSizes:
    """How much of the graph stage one array call does. A CPU wants cache-sized pieces; a GPU wants few,
    large launches. With the CPU sizes on an H100 the ETL's full-market graph stage ran one correlation block
    per date (56 s) and 6,600-node BFS sub-chunks (76 s of metrics): launch-bound, where `bench/graph.py`
    with the GPU sizes takes 10.9 s for the whole stage (24.8 GiB device pool peak)."""

    block_bytes: int  # a correlation block [D, B, M] and its temporaries
    nodes_per_chunk: int  # a metric chunk: the union graph of nodes_per_chunk // N dates
    bfs_budget: int  # the five BFS bitsets of one sub-chunk of a metric chunk
    max_dates: int  # dates per correlation block at most (1: each product is one date's own, see above)


CPU_SIZES = WorkSizes(block_bytes=16 << 20, nodes_per_chunk=1 << 18, bfs_budget=16 << 20, max_dates=1)
GPU_SIZES = WorkSizes(block_bytes=2048 << 20, nodes_per_chunk=1 << 22, bfs_budget=4 << 30, max_dates=1 << 12)


def work_sizes(xp: Any) -> WorkSizes:
    """The graph stage's work sizes for an array namespace (NumPy: CPU, CuPy: GPU). The GPU sizes are for an
    80 GB card and shrink in proportion on a smaller one (a 40 GB A100 gets half)."""
    if xp.__name__ != "cupy":
        return CPU_SIZES
    scale = min(1.0, xp.cuda.Device().mem_info[1] / (80 << 30))
    if scale >= 0.9:  # an H100's 79.2 GiB counts as 80 GB
        return GPU_SIZES
    return WorkSizes(*(max(int(v * scale), 1) for v in astuple(GPU_SIZES)))


@dataclass(frozen=True)
class PeerTable:
    """Per date and stock: node flag, peer statistics and the directed top-k choice (on the `xp` device)."""

    node_TN: Any  # bool: stock is in V_t
    peer_count_TN: Any  # int32: |N_i| (0 where not a node)
    peer_corr_mean_TN: Any  # float64: mean |rho| over N_i, 0 if empty, NaN where not a node
    nbr_TNK: Any  # int32: chosen peers in descending |rho|, -1 padding
    rho_TNK: Any  # float (the correlations' dtype): signed rho of each chosen peer, NaN padding


def window_z(returns_TN: Any, row_mask_TN: Any, t0: int, t1: int, cfg: GraphConfig, xp: Any):
    """Centred, unit-norm windows z[D, w, N] for dates t0..t1-1, the node mask and the rho-defined mask.

    Works in place on one [D, w, N] array (plus the validity mask): this runs once per date on CPU, where
    every fresh multi-MB temporary costs page faults."""
    w = cfg.window
    n = returns_TN.shape[1]
    lo = max(t0 - w + 1, 0)
    block = xp.asarray(returns_TN[lo:t1], dtype=xp.float64)
    pad = w - 1 - (t0 - lo)  # rows before the panel start count as missing
    if pad:
        block = xp.concatenate([xp.full((pad, n), xp.nan), block], axis=0)
    if t1 - t0 == 1:
        x_DWN = block[None]
    else:
        x_DWN = block[xp.arange(t1 - t0)[:, None] + xp.arange(w)[None, :]]
    valid = xp.isfinite(x_DWN)
    count_DN = valid.sum(axis=1)
    hi_DN, lo_DN = _valid_extrema(x_DWN, valid, xp)
    c_DWN = xp.where(valid, x_DWN, 0.0)
    c_DWN -= c_DWN.sum(axis=1, keepdims=True) / xp.maximum(count_DN, 1)[:, None, :]
    c_DWN *= valid  # missing values sit at the window mean: 0 after centring
    node_DN = xp.asarray(row_mask_TN[t0:t1], dtype=bool) & (count_DN >= cfg.min_obs)
    defined_DN = node_DN & (hi_DN > lo_DN)
    norm_DN = xp.sqrt(xp.where(defined_DN, (c_DWN * c_DWN).sum(axis=1), 1.0))
    c_DWN /= norm_DN[:, None, :]
    c_DWN *= defined_DN[:, None, :]
    return c_DWN, node_DN, defined_DN


def _valid_extrema(x_DWN: Any, valid: Any, xp: Any) -> tuple[Any, Any]:
    """Max and min over the window of the valid values (NaN, resp. +-inf, where there are none)."""
    if xp.__name__ == "numpy":  # fmax/fmin skip NaN in one pass, without a filled copy
        return np.fmax.reduce(x_DWN, axis=1), np.fmin.reduce(x_DWN, axis=1)
    return xp.where(valid, x_DWN, -xp.inf).max(axis=1), xp.where(valid, x_DWN, xp.inf).min(axis=1)


def _dates_per_chunk(t: int, n: int, itemsize: int, block_bytes: int, max_dates: int) -> int:
    """Dates D per chunk: D full [N, N] blocks and their temporaries fit `block_bytes` (M <= N)."""
    per_date = n * n * (2 * itemsize + 1)  # rho, |rho| and a bool mask
    return int(max(min(block_bytes // max(per_date, 1), t, max_dates), 1))


def _rows_per_block(d: int, m: int, itemsize: int, block_bytes: int) -> int:
    """Rows B per block: a [D, B, M] block and its temporaries fit `block_bytes` (at least one row)."""
    return int(max(min(block_bytes // max(d * m * (2 * itemsize + 1), 1), m), 1))


def pack_defined(z_DWN: Any, defined_DN: Any, dtype: Any, xp: Any) -> tuple[Any, Any, Any]:
    """Each date's rho-defined stocks in Code order: z[D, w, M] in `dtype` (zero columns pad the dates with
    fewer than M), their stock indices [D, M] (0 in padding) and the packed-slot mask [D, M]."""
    d_idx, stock = xp.nonzero(defined_DN)  # row-major: by date, then Code
    count_D = defined_DN.sum(axis=1)
    m = int(count_D.max()) if count_D.size else 0
    slot = xp.arange(stock.size) - (xp.cumsum(count_D) - count_D)[d_idx]
    z_DWM = xp.zeros((z_DWN.shape[0], z_DWN.shape[1], m), dtype=dtype)
    z_DWM[d_idx, :, slot] = z_DWN[d_idx, :, stock]
    stock_DM = xp.zeros((z_DWN.shape[0], m), dtype=xp.int64)
    stock_DM[d_idx, slot] = stock
    return z_DWM, stock_DM, xp.arange(m)[None, :] < count_D[:, None]


def empty_peer_table(t_len: int, n: int, k: int, xp: Any, dtype: str = "float64") -> PeerTable:
    """Output arrays for `peer_table(..., out=)` (lets a consumer read finished dates while others run).

    `dtype` is the correlations' precision: the chosen rho are kept in it (no digits to gain above it)."""
    return PeerTable(
        xp.zeros((t_len, n), dtype=bool),
        xp.zeros((t_len, n), dtype=xp.int32),
        xp.full((t_len, n), xp.nan),
        xp.full((t_len, n, k), -1, dtype=xp.int32),
        xp.full((t_len, n, k), xp.nan, dtype=dtype),
    )


def peer_table(
    returns_TN: Any,
    row_mask_TN: Any,
    cfg: GraphConfig,
    xp: Any,
    *,
    dtype: str = "float32",
    block_bytes: int | None = None,
    out: PeerTable | None = None,
    progress: Callable[[int], None] | None = None,
    start: int = 0,
) -> PeerTable:
    """Nodes, peer counts, mean peer |rho| and top-k peers for every date of a [T, N] returns panel.

    `row_mask_TN` says which stocks have a universe row at t. `dtype` is the precision of the correlation
    matrices (float32 halves time and memory; edges at the threshold or the k-th place may then differ from a
    float64 build, FEATURES.md §4.13). Dates are done in order from `start` (earlier dates keep the empty
    table's values: no nodes); `progress(dates_done)` follows each chunk. `block_bytes`: by default the
    device's `work_sizes`.
    """
    sizes = work_sizes(xp)
    block_bytes = block_bytes or sizes.block_bytes
    t_len, n = returns_TN.shape
    ftype = np.dtype(dtype)  # cupy.dtype is numpy.dtype
    table = out if out is not None else empty_peer_table(t_len, n, cfg.k, xp, dtype)
    d_chunk = _dates_per_chunk(t_len, n, ftype.itemsize, block_bytes, sizes.max_dates)
    # one workspace reused by every block: fresh multi-MB temporaries would be page-faulted in each time
    size = max(block_bytes // (2 * ftype.itemsize + 1), d_chunk * n)
    work = [xp.empty(size, dtype=dt) for dt in (ftype, ftype, bool)]
    for t0 in range(start, t_len, d_chunk):
        t1 = min(t0 + d_chunk, t_len)
        z_DWN, node_DN, defined_DN = window_z(returns_TN, row_mask_TN, t0, t1, cfg, xp)
        z_DWM, stock_DM, packed_DM = pack_defined(z_DWN, defined_DN, ftype, xp)
        del z_DWN
        table.node_TN[t0:t1] = node_DN
        table.peer_count_TN[t0:t1] = 0
        table.peer_corr_mean_TN[t0:t1] = xp.where(node_DN, 0.0, xp.nan)  # a node without peers: 0
        table.nbr_TNK[t0:t1] = -1
        table.rho_TNK[t0:t1] = xp.nan
        d, m = t1 - t0, z_DWM.shape[2]
        padding = xp.nonzero(~packed_DM)
        b_rows = _rows_per_block(d, m, ftype.itemsize, block_bytes)
        for r0 in range(0, m, b_rows):
            r1 = min(r0 + b_rows, m)
            bufs = [w[: d * (r1 - r0) * m].reshape(d, r1 - r0, m) for w in work]
            cnt_DB, tot_DB, nbr_DBK, rho_DBK = _block_peers(z_DWM, padding, r0, r1, cfg, xp, bufs)
            t_i, b_i = xp.nonzero(packed_DM[:, r0:r1])  # the rows of real stocks, to their places
            stock = stock_DM[t_i, b_i + r0]
            cnt = cnt_DB[t_i, b_i]
            table.peer_count_TN[t0 + t_i, stock] = cnt
            mean = tot_DB[t_i, b_i] / xp.maximum(cnt, 1)
            table.peer_corr_mean_TN[t0 + t_i, stock] = xp.where(cnt > 0, mean, 0.0)
            nbr = nbr_DBK[t_i, b_i]
            peer = stock_DM[t_i[:, None], xp.maximum(nbr, 0)]
            table.nbr_TNK[t0 + t_i, stock] = xp.where(nbr >= 0, peer, -1)
            table.rho_TNK[t0 + t_i, stock] = rho_DBK[t_i, b_i]
        if progress is not None:
            progress(t1 - t0)
    return table


@dataclass
class DatesDone:
    """How far a peer table being filled has got: the filling side calls `advance(dates)` and finally
    `end(error)`; a consumer's `wait(d)` blocks until every date before d is done, and re-raises the filling
    side's error if it ended first."""

    done: int
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _ended: bool = False
    _error: BaseException | None = None

    def advance(self, dates: int) -> None:
        with self._cond:
            self.done += dates
            self._cond.notify_all()

    def end(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._ended, self._error = True, error
            self._cond.notify_all()

    def wait(self, d: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.done >= d or self._ended)
            if self.done < d:
                if self._error is not None:
                    raise self._error
                raise RuntimeError("the correlation stage ended before all dates were done")


def start_peer_table(
    returns_TN: Any,
    row_mask_TN: Any,
    cfg: GraphConfig,
    xp: Any,
    *,
    background: bool,
    dtype: str = "float32",
    block_bytes: int | None = None,
    start: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[PeerTable, DatesDone]:
    """Fill a peer table (`peer_table`), in a daemon thread with one BLAS thread when `background` (an
    error in the caller then does not wait minutes for it), else here and now; return the table and its
    `DatesDone`, through which the metrics of finished dates can start while later dates are still running.
    Errors reach the consumer through `DatesDone.wait`."""
    t_len, n = returns_TN.shape
    table = empty_peer_table(t_len, n, cfg.k, xp, dtype)
    dates = DatesDone(start)

    def on_chunk(count: int) -> None:
        dates.advance(count)
        if progress is not None:
            progress(count)

    def fill() -> None:
        try:
            with blas_threads(1):
                peer_table(
                    returns_TN,
                    row_mask_TN,
                    cfg,
                    xp,
                    dtype=dtype,
                    block_bytes=block_bytes,
                    out=table,
                    progress=on_chunk,
                    start=start,
                )
        except BaseException as exc:  # surfaced by the consumer's wait
            dates.end(exc)
        else:
            dates.end()

    if background:
        threading.Thread(target=fill, name="graph-corr", daemon=True).start()
    else:
        fill()
    return table, dates


@contextlib.contextmanager
def blas_threads(count: int) -> Iterator[None]:
    """Run the block with `count` OpenBLAS threads in the calling thread (no-op where that cannot be set).

    The correlation GEMMs have an inner dimension of only 60: on small CPUs a multi-threaded OpenBLAS spends
    more time synchronising than computing, and the graph stage keeps the other core busy with the metrics.
    """
    setter = _openblas_local_setter()
    if setter is None:
        yield
        return
    old = setter(count)
    try:
        yield
    finally:
        setter(old)


@functools.cache
def _openblas_local_setter() -> Callable[[int], int] | None:
    """OpenBLAS's `openblas_set_num_threads_local` (>= 0.3.27) from the library NumPy loaded, if any."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted(
                {ln.split()[-1] for ln in maps if "openblas" in ln and ln.split()[-1].startswith("/")}
            )
    except OSError:
        return None
    for path in paths:
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


def _block_peers(z_DWM, padding, r0, r1, cfg: GraphConfig, xp: Any, bufs):
    """Peer count, |rho| sum and the top-k (packed slots, rho) of packed rows r0..r1-1 of every date.

    `z_DWM`: the dates' packed windows; `padding`: (date, slot) indices of the zero padding columns;
    `bufs` = (rho, |rho|, peer mask) workspaces of shape [D, r1 - r0, M]. With threshold > 0 the |rho| buffer
    is multiplied by the peer mask in place: one pass gives both the masked sum and an argmax input whose
    non-peers (0) sort below every peer, so no separate product buffer is streamed through. The |rho| sum
    accumulates in float64: for float32 |rho| that sum is exact, so peer_corr_mean does not depend on the
    summation order."""
    k, thr = cfg.k, cfg.threshold
    rho_DBM, a_DBM, peer_DBM = bufs
    rows = xp.arange(r0, r1)
    xp.matmul(z_DWM.transpose(0, 2, 1)[:, r0:r1], z_DWM, out=rho_DBM)  # a transposed operand: no copy
    xp.abs(rho_DBM, out=a_DBM)
    # -1 on the diagonal and, at threshold 0, on the padding columns: never a peer. Above threshold 0 only the
    # diagonal needs it: a padding column's z is 0, so its |rho| is 0 < threshold.
    a_DBM[:, rows - r0, rows] = -1.0
    if thr <= 0:
        a_DBM[padding[0], :, padding[1]] = -1.0
    xp.greater_equal(a_DBM, thr, out=peer_DBM)
    cnt_DB = peer_DBM.sum(axis=-1, dtype=xp.int32)
    if thr > 0:
        xp.multiply(a_DBM, peer_DBM, out=a_DBM)  # non-peers become 0 (or -0.0): below every peer
        tot_DB = a_DBM.sum(axis=-1, dtype=xp.float64)
    else:  # at threshold 0 a peer can have |rho| = 0: keep the -1 marks for the argmax
        tot_DB = xp.where(peer_DBM, a_DBM, 0.0).sum(axis=-1, dtype=xp.float64)
    d_idx, b_idx = xp.ogrid[: a_DBM.shape[0], : a_DBM.shape[1]]
    nbr_DBK = xp.empty((*a_DBM.shape[:2], k), dtype=xp.int32)
    rho_DBK = xp.empty((*a_DBM.shape[:2], k), dtype=rho_DBM.dtype)
    for slot in range(k):
        j_DB = xp.argmax(a_DBM, axis=-1)
        ok_DB = a_DBM[d_idx, b_idx, j_DB] >= thr
        nbr_DBK[..., slot] = xp.where(ok_DB, j_DB, -1)
        rho_DBK[..., slot] = xp.where(ok_DB, rho_DBM[d_idx, b_idx, j_DB], xp.nan)
        a_DBM[d_idx, b_idx, j_DB] = -2.0
    return cnt_DB, tot_DB, nbr_DBK, rho_DBK
