"""Array operators on [T, N] panels (axis 0 = time, axis 1 = stocks), float64 with NaN = missing.

Every operator works on NumPy and CuPy arrays alike: the namespace is taken from the input array
(`array_namespace`), CuPy is imported only when a CuPy array arrives. Nothing here loops over stocks or
dates in Python; recursions (EMA, Wilder) use a parallel prefix scan over time (log2(T) array steps).

Semantics follow FEATURES.md §1.6/§3 and pandas: rolling windows are the last `w` rows including t,
`min_periods` counts non-null values, std/var use ddof = 1 unless stated, and a flat window (max == min,
found with rolling max/min, never by testing a computed std against 0) gives std 0 and z-score 0.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

EPS = 1e-12


def array_namespace(x: Any) -> ModuleType:
    """numpy for NumPy arrays (and anything else), cupy for CuPy arrays."""
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def to_host(a: Any) -> np.ndarray:
    """`a` as a NumPy array: copied from the device for CuPy, as it is otherwise."""
    return a.get() if type(a).__module__.startswith("cupy") else np.asarray(a)


def _f64(x: Any) -> Any:
    xp = array_namespace(x)
    return xp.asarray(x, dtype=xp.float64)


def _time_index(xp: ModuleType, x: Any) -> Any:
    """[T, 1, ...] row numbers broadcastable against x."""
    return xp.arange(x.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))


def _argsort_stable(xp: ModuleType, a: Any, axis: int = -1) -> Any:
    """Stable argsort along `axis` (CuPy's sort is always stable and takes no `kind`)."""
    return np.argsort(a, axis=axis, kind="stable") if xp is np else xp.argsort(a, axis=axis)


def _cummax(xp: ModuleType, a: Any) -> Any:
    """Running maximum along axis 0 (NumPy ufunc accumulate; a doubling scan elsewhere)."""
    if xp is np:
        return np.maximum.accumulate(a, axis=0)
    out = a.copy()
    k = 1
    while k < out.shape[0]:
        out[k:] = xp.maximum(out[k:], out[:-k])
        k *= 2
    return out


# ------------------------------------------------------------------------------------------------ shifts


def lag(x: Any, k: int) -> Any:
    """x shifted down by k rows (x_{t-k}); a negative k is a lead (x_{t+|k|}). Vacated rows are NaN."""
    xp = array_namespace(x)
    x = _f64(x)
    out = xp.full_like(x, xp.nan)
    T = x.shape[0]
    if k == 0:
        return x.copy()
    if abs(k) >= T:
        return out
    if k > 0:
        out[k:] = x[:-k]
    else:
        out[:k] = x[-k:]
    return out


def last_valid_index(valid: Any) -> Any:
    """Row index of the last True at or before t along axis 0, -1 before the first True."""
    xp = array_namespace(valid)
    idx = xp.where(valid, _time_index(xp, valid), -1)
    return _cummax(xp, idx)


def ffill(x: Any) -> Any:
    """Forward-fill NaN along time (index-of-last-valid cumulative max, then a gather)."""
    xp = array_namespace(x)
    x = _f64(x)
    idx = last_valid_index(~xp.isnan(x))
    out = xp.take_along_axis(x, xp.maximum(idx, 0), axis=0)
    return xp.where(idx >= 0, out, xp.nan)


def age_since_last(valid: Any) -> Any:
    """Rows since the last True at or before t (0 on a True row), NaN before the first True."""
    xp = array_namespace(valid)
    idx = last_valid_index(valid)
    age = (_time_index(xp, valid) - idx).astype(xp.float64)
    return xp.where(idx >= 0, age, xp.nan)


def ffill_limit(x: Any, limit: int) -> Any:
    """Forward-fill carrying a value at most `limit` rows past its own row (staleness limits)."""
    xp = array_namespace(x)
    x = _f64(x)
    valid = ~xp.isnan(x)
    out = ffill(x)
    return xp.where(age_since_last(valid) <= limit, out, xp.nan)


# ------------------------------------------------------------------------------------------------ rolling
# Window statistics are combined from power-of-two blocks (a doubling "sparse table"): the window [t-w+1, t]
# is the union of the blocks given by the binary digits of w. Sums, maxima and Chan's parallel
# (count, mean, M2) moments combine exactly this way, so each value depends only on its own window (no
# running cumulative sum whose rounding grows with history), costs O(log w) array passes, and a flat window
# has exactly zero variance (identical block means give a zero difference).


def _merge(a: tuple, b: tuple, k: int, combine: Any) -> tuple:
    """Combine block parts `a` with `b` shifted down by k rows (rows < k keep `a`: b is empty there)."""
    if k >= a[0].shape[0]:
        return a
    merged = combine(tuple(p[k:] for p in a), tuple(q[:-k] for q in b))
    out = []
    for p, m in zip(a, merged, strict=True):
        xp = array_namespace(p)
        out.append(xp.concatenate([p[:k], m], axis=0))
    return tuple(out)


def _tree(parts: tuple, w: int, combine: Any) -> tuple:
    """Combine each row's block with the w - 1 rows before it (binary decomposition of w)."""
    acc: tuple | None = None
    span = 0
    level, size = parts, 1
    while size <= w:
        if w & size:
            acc = level if acc is None else _merge(acc, level, span, combine)
            span += size
        if 2 * size <= w:
            level = _merge(level, level, size, combine)
        size *= 2
    assert acc is not None
    return acc


def _add(a: tuple, b: tuple) -> tuple:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _chan(a: tuple, b: tuple) -> tuple:
    """Merge (n, mean, M2) of two disjoint sets (Chan et al.); empty sets have n = 0."""
    xp = array_namespace(a[0])
    na, ma, qa = a
    nb, mb, qb = b
    n = na + nb
    safe = xp.where(n > 0, n, 1.0)
    d = mb - ma
    mean = ma + d * (nb / safe)
    return n, mean, qa + qb + d * d * (na * nb / safe)


def _chan2(a: tuple, b: tuple) -> tuple:
    """Merge (n, mean_x, mean_y, M2_x, M2_y, C_xy) of two disjoint sets of pairs."""
    xp = array_namespace(a[0])
    na, mxa, mya, qxa, qya, ca = a
    nb, mxb, myb, qxb, qyb, cb = b
    n = na + nb
    safe = xp.where(n > 0, n, 1.0)
    dx, dy = mxb - mxa, myb - mya
    f = na * nb / safe
    return (
        n,
        mxa + dx * (nb / safe),
        mya + dy * (nb / safe),
        qxa + qxb + dx * dx * f,
        qya + qyb + dy * dy * f,
        ca + cb + dx * dy * f,
    )


def rolling_count(x: Any, w: int) -> Any:
    """Number of non-null values in the window."""
    xp = array_namespace(x)
    c = xp.cumsum((~xp.isnan(x)).astype(xp.float64), axis=0)
    out = c.copy()
    if w < c.shape[0]:
        out[w:] -= c[:-w]
    return out


def _sums(x: Any, w: int) -> tuple[Any, Any]:
    xp = array_namespace(x)
    x = _f64(x)
    valid = ~xp.isnan(x)
    n, s = _tree((valid.astype(xp.float64), xp.where(valid, x, 0.0)), w, _add)
    return n, s


def rolling_sum(x: Any, w: int, min_periods: int | None = None) -> Any:
    """Sum over the window of non-null values; NaN with fewer than min_periods (default w) values."""
    xp = array_namespace(x)
    mp = w if min_periods is None else min_periods
    n, s = _sums(x, w)
    return xp.where(n >= max(mp, 1), s, xp.nan)


def rolling_mean(x: Any, w: int, min_periods: int | None = None) -> Any:
    """Mean over the window's non-null values (pandas rolling(w, min_periods).mean())."""
    xp = array_namespace(x)
    mp = w if min_periods is None else min_periods
    n, s = _sums(x, w)
    ok = n >= max(mp, 1)
    return xp.where(ok, s / xp.where(ok, n, 1.0), xp.nan)


def _rolling_extreme(x: Any, w: int, fn: Any) -> Any:
    """Sliding max/min (NaN-skipping fmax/fmin) over the window, by the same block decomposition."""
    (m,) = _tree((_f64(x),), w, lambda a, b: (fn(a[0], b[0]),))
    return m


def rolling_max(x: Any, w: int, min_periods: int | None = None) -> Any:
    """Max over the window's non-null values."""
    xp = array_namespace(x)
    mp = w if min_periods is None else min_periods
    out = _rolling_extreme(x, w, xp.fmax)
    return xp.where(rolling_count(x, w) >= max(mp, 1), out, xp.nan)


def rolling_min(x: Any, w: int, min_periods: int | None = None) -> Any:
    """Min over the window's non-null values."""
    xp = array_namespace(x)
    mp = w if min_periods is None else min_periods
    out = _rolling_extreme(x, w, xp.fmin)
    return xp.where(rolling_count(x, w) >= max(mp, 1), out, xp.nan)


def rolling_flat(x: Any, w: int) -> Any:
    """True where the window's non-null values are all equal (max == min exactly)."""
    xp = array_namespace(x)
    return _rolling_extreme(x, w, xp.fmax) == _rolling_extreme(x, w, xp.fmin)


def _moments(x: Any, w: int) -> tuple[Any, Any, Any]:
    """(count, mean, M2 = sum of squared deviations) over each window's non-null values."""
    xp = array_namespace(x)
    x = _f64(x)
    valid = ~xp.isnan(x)
    parts = (valid.astype(xp.float64), xp.where(valid, x, 0.0), xp.zeros_like(x))
    return _tree(parts, w, _chan)


def rolling_var(x: Any, w: int, min_periods: int | None = None, ddof: int = 1) -> Any:
    """Variance over the window (ddof 1 by default); exactly 0 on a flat window."""
    xp = array_namespace(x)
    mp = w if min_periods is None else min_periods
    n, _, m2 = _moments(x, w)
    ok = (n >= max(mp, 1)) & (n > ddof)
    return xp.where(ok, xp.maximum(m2, 0.0) / xp.where(ok, n - ddof, 1.0), xp.nan)


def rolling_std(x: Any, w: int, min_periods: int | None = None, ddof: int = 1) -> Any:
    """Standard deviation over the window (ddof 1 by default); exactly 0 on a flat window."""
    xp = array_namespace(x)
    return xp.sqrt(rolling_var(x, w, min_periods, ddof))


def rolling_z(x: Any, w: int, min_periods: int | None = None) -> Any:
    """(x - mean_w) / (std_w + EPS), window including t; exactly 0 on a flat window; NaN where x is NaN."""
    xp = array_namespace(x)
    x = _f64(x)
    mp = w if min_periods is None else min_periods
    n, mean, m2 = _moments(x, w)
    ok = (n >= max(mp, 1)) & (n > 1)
    std = xp.sqrt(xp.maximum(m2, 0.0) / xp.where(ok, n - 1, 1.0))
    z = xp.where(m2 == 0, 0.0, (x - mean) / (std + EPS))
    return xp.where(ok & ~xp.isnan(x), z, xp.nan)


def _pair_moments(x: Any, y: Any, w: int) -> tuple[Any, ...]:
    """(n, mean_x, mean_y, M2_x, M2_y, C_xy) over each window's rows where both x and y are non-null."""
    xp = array_namespace(x)
    x, y = _f64(x), _f64(y)
    both = ~(xp.isnan(x) | xp.isnan(y))
    zero = xp.zeros(both.shape)
    parts = (both.astype(xp.float64), xp.where(both, x, 0.0), xp.where(both, y, 0.0), zero, zero, zero)
    return _tree(parts, w, _chan2)


def rolling_cov(x: Any, y: Any, w: int, min_periods: int | None = None) -> Any:
    """Sample covariance (ddof 1) over the window's rows where both are non-null."""
    xp = array_namespace(x)
    mp = w if min_periods is None else min_periods
    n, _, _, _, _, c = _pair_moments(x, y, w)
    ok = (n >= max(mp, 1)) & (n > 1)
    return xp.where(ok, c / xp.where(ok, n - 1, 1.0), xp.nan)


def rolling_corr(x: Any, y: Any, w: int, min_periods: int | None = None) -> Any:
    """Pearson correlation over the window's paired rows; NaN if either side is flat."""
    xp = array_namespace(x)
    mp = w if min_periods is None else min_periods
    n, _, _, qx, qy, c = _pair_moments(x, y, w)
    ok = (n >= max(mp, 1)) & (n > 1) & (qx > 0) & (qy > 0)
    den = xp.sqrt(xp.where(ok, qx * qy, 1.0))
    return xp.where(ok, c / den, xp.nan)


def rolling_beta(y: Any, x: Any, w: int, min_periods: int | None = None) -> Any:
    """cov_w(y, x) / var_w(x) over the same paired rows; NaN if x is flat.

    With x, y one-period simple returns this is talib.BETA(x_prices, y_prices, w): TA-Lib takes prices."""
    xp = array_namespace(x)
    mp = w if min_periods is None else min_periods
    n, _, _, _, qx, c = _pair_moments(y, x, w)
    ok = (n >= max(mp, 1)) & (n > 1) & (qx > 0)
    return xp.where(ok, c / xp.where(ok, qx, 1.0), xp.nan)


# ------------------------------------------------------------------------------------------------ recursions


def linear_scan(a: Any, b: Any) -> Any:
    """y_t = a_t * y_{t-1} + b_t along axis 0 with y_{-1} = 0 (Hillis-Steele doubling, inputs finite)."""
    A = _f64(a).copy()
    B = _f64(b).copy()
    k = 1
    while k < A.shape[0]:
        B[k:] = A[k:] * B[:-k] + B[k:]
        A[k:] = A[k:] * A[:-k]
        k *= 2
    return B


def seeded_recursion(x: Any, n: int, decay: float, gain: float, seed_scale: float) -> Any:
    """SMA/sum-seeded recursion over the non-null values of x (FEATURES.md §3).

    With bar k = the k-th non-null value: y_n = seed_scale * (x_1 + ... + x_n), y_k = decay * y_{k-1} +
    gain * x_k for k > n. Null rows carry the state and output NaN; rows before bar n are NaN.
    """
    xp = array_namespace(x)
    x = _f64(x)
    valid = ~xp.isnan(x)
    xz = xp.where(valid, x, 0.0)
    cnt = xp.cumsum(valid, axis=0)
    seed_row = valid & (cnt == n)
    seed = xp.cumsum(xz, axis=0) * seed_scale
    after = valid & (cnt > n)
    a = xp.where(seed_row | (cnt < n), 0.0, xp.where(after, decay, 1.0))
    b = xp.where(seed_row, seed, xp.where(after, gain * xz, 0.0))
    y = linear_scan(a, b)
    return xp.where(valid & (cnt >= n), y, xp.nan)


def ema(x: Any, n: int) -> Any:
    """EMA_n, adjust=False, SMA seed on the first n non-null values (= talib.EMA on a gap-free series)."""
    alpha = 2.0 / (n + 1.0)
    return seeded_recursion(x, n, 1.0 - alpha, alpha, 1.0 / n)


def wilder(x: Any, n: int) -> Any:
    """Wilder smoothing (RMA, a = 1/n), SMA seed on the first n non-null values."""
    return seeded_recursion(x, n, 1.0 - 1.0 / n, 1.0 / n, 1.0 / n)


def prev_valid(x: Any) -> Any:
    """The previous non-null value before row t (x of bar k-1 at bar k), NaN on null rows."""
    xp = array_namespace(x)
    x = _f64(x)
    return xp.where(xp.isnan(x), xp.nan, lag(ffill(x), 1))


# ---------------------------------------------------------------------------------------------- cross-section


def _cs_valid(x: Any, mask: Any | None) -> Any:
    xp = array_namespace(x)
    valid = ~xp.isnan(x)
    return valid if mask is None else valid & mask


def cs_count(x: Any, mask: Any | None = None) -> Any:
    """[T] number of valid stocks per date (mask & non-null)."""
    return _cs_valid(x, mask).sum(axis=1)


def cs_mean(x: Any, mask: Any | None = None, min_count: int = 1) -> Any:
    """[T] mean over valid stocks per date; NaN with fewer than min_count."""
    xp = array_namespace(x)
    x = _f64(x)
    v = _cs_valid(x, mask)
    n = v.sum(axis=1)
    s = xp.where(v, x, 0.0).sum(axis=1)
    ok = n >= max(min_count, 1)
    return xp.where(ok, s / xp.where(ok, n, 1), xp.nan)


def cs_std(x: Any, mask: Any | None = None, min_count: int = 2) -> Any:
    """[T] sample std (ddof 1, two-pass) over valid stocks per date; 0 when they are all equal."""
    xp = array_namespace(x)
    x = _f64(x)
    v = _cs_valid(x, mask)
    n = v.sum(axis=1)
    mean = cs_mean(x, mask)
    d = xp.where(v, x - mean[:, None], 0.0)
    ok = n >= max(min_count, 2)
    var = (d * d).sum(axis=1) / xp.where(ok, n - 1, 1)
    hi = xp.where(v, x, -xp.inf).max(axis=1)
    lo = xp.where(v, x, xp.inf).min(axis=1)
    return xp.where(ok, xp.where(hi == lo, 0.0, xp.sqrt(var)), xp.nan)


def cs_z(x: Any, mask: Any | None = None, min_count: int = 2) -> Any:
    """[T, N] (x - cs_mean) / (cs_std + EPS) over valid stocks; 0 on a flat date; NaN off the mask."""
    xp = array_namespace(x)
    x = _f64(x)
    v = _cs_valid(x, mask)
    std = cs_std(x, mask, min_count)[:, None]
    z = xp.where(std == 0, 0.0, (x - cs_mean(x, mask)[:, None]) / (std + EPS))
    return xp.where(v & ~xp.isnan(std), z, xp.nan)


def cs_rankpct(x: Any, mask: Any | None = None, min_count: int = 2) -> Any:
    """[T, N] (average rank - 1) / (n - 1) among valid stocks of each date; NaN if n < min_count."""
    T, N = x.shape
    gid = array_namespace(x).zeros((T, N), dtype=np.int64)
    return group_rankpct(x, gid, 1, mask, min_count=max(min_count, 2))


# ------------------------------------------------------------------------------------------------ groups
# Sector cross-sections: group_ids [T, N] int (-1 = no group), n_groups G; per-(date, group) statistics are
# [T, G] arrays; group_gather maps them back to the members [T, N].


def _group_keys(x: Any, group_ids: Any, n_groups: int, mask: Any | None) -> tuple[Any, Any]:
    xp = array_namespace(x)
    g = xp.asarray(group_ids)
    v = _cs_valid(x, mask) & (g >= 0) & (g < n_groups)
    key = _time_index(xp, x) * n_groups + xp.where(v, g, 0)
    return v, key


def group_count(x: Any, group_ids: Any, n_groups: int, mask: Any | None = None) -> Any:
    """[T, G] number of valid members per (date, group)."""
    xp = array_namespace(x)
    v, key = _group_keys(x, group_ids, n_groups, mask)
    T = x.shape[0]
    return xp.bincount(key[v], minlength=T * n_groups).reshape(T, n_groups)


def group_sum(x: Any, group_ids: Any, n_groups: int, mask: Any | None = None) -> Any:
    """[T, G] sum over valid members (0 for an empty group)."""
    xp = array_namespace(x)
    x = _f64(x)
    v, key = _group_keys(x, group_ids, n_groups, mask)
    T = x.shape[0]
    return xp.bincount(key[v], weights=x[v], minlength=T * n_groups).reshape(T, n_groups)


def group_gather(stat_TG: Any, group_ids: Any) -> Any:
    """[T, N] the row's own group statistic; NaN where the group id is -1 or out of range."""
    xp = array_namespace(stat_TG)
    g = xp.asarray(group_ids)
    G = stat_TG.shape[1]
    ok = (g >= 0) & (g < G)
    out = xp.take_along_axis(stat_TG, xp.where(ok, g, 0).astype(np.int64), axis=1)
    return xp.where(ok, out, xp.nan)


def _group_sorted(x: Any, group_ids: Any, n_groups: int, mask: Any | None) -> tuple[Any, ...]:
    """Valid entries sorted by (date, group, value): flat positions, keys, values and segment bounds.

    Equal values keep their column order. Row-wise sorts only (they stay in cache): each date by value, then
    stably by group id (int16 keys: a radix sort on NumPy), instead of two stable sorts of all ~9M entries
    (a third of the time at full scale).
    """
    xp = array_namespace(x)
    x = _f64(x)
    T, N = x.shape
    v, key = _group_keys(x, group_ids, n_groups, mask)
    by_value = _argsort_stable(xp, x, axis=1)
    small = np.int16 if n_groups < np.iinfo(np.int16).max else np.int64
    gid = xp.where(v, xp.asarray(group_ids), n_groups).astype(small)  # invalid entries last
    by_group = _argsort_stable(xp, xp.take_along_axis(gid, by_value, axis=1), axis=1)
    order = xp.take_along_axis(by_value, by_group, axis=1)
    first = xp.arange(N)[None, :] < v.sum(axis=1)[:, None]  # each date's valid entries lead its row
    flat = (order + _time_index(xp, x) * N)[first]
    keys = key.ravel()[flat]
    vals = x.ravel()[flat]
    m = keys.shape[0]
    pos = xp.arange(m)
    start = xp.ones(m, dtype=bool)
    if m > 1:
        start[1:] = keys[1:] != keys[:-1]
    seg_first = _cummax(xp, xp.where(start, pos, 0))
    counts = xp.bincount(keys, minlength=x.shape[0] * n_groups) if m else xp.zeros(0, dtype=np.int64)
    n_member = counts[keys] if m else counts
    return flat, keys, vals, start, seg_first, n_member


def group_moments(
    x: Any, group_ids: Any, n_groups: int, mask: Any | None = None, min_count: int = 3
) -> tuple[Any, Any, Any]:
    """[T, G] count, mean and sample std (ddof 1) over valid members, from one pass over the entries.

    Mean and std are NaN with fewer than min_count members (the n >= 3 rule, FEATURES.md §1.7; the std
    needs at least 2). The std uses shifted-data sums around one member's value of each group: accurate
    (deviations are of the group's own spread) and exactly 0 for a flat group, where every deviation is 0.
    """
    xp = array_namespace(x)
    x = _f64(x)
    T = x.shape[0]
    m = T * n_groups
    v, key = _group_keys(x, group_ids, n_groups, mask)
    kv, xv = key[v], x[v]
    n = xp.bincount(kv, minlength=m)
    s = xp.bincount(kv, weights=xv, minlength=m)
    ok_mean = n >= min_count
    mean = xp.where(ok_mean, s / xp.where(ok_mean, n, 1), xp.nan)
    ref = xp.zeros(m)
    ref[kv] = xv  # one member's value per group (which one does not matter)
    d = xv - ref[kv]
    s1 = xp.bincount(kv, weights=d, minlength=m)
    s2 = xp.bincount(kv, weights=d * d, minlength=m)
    nf = n.astype(xp.float64)
    ok = n >= max(min_count, 2)
    var = xp.maximum(s2 - s1 * s1 / xp.where(ok, nf, 1.0), 0.0) / xp.where(ok, nf - 1, 1.0)
    std = xp.where(ok, xp.sqrt(var), xp.nan)
    return n.reshape(T, n_groups), mean.reshape(T, n_groups), std.reshape(T, n_groups)


def group_z(x: Any, group_ids: Any, n_groups: int, mask: Any | None = None, min_count: int = 3) -> Any:
    """[T, N] zG(x) = (x - mean_G) / (std_G + EPS) over valid members; 0 for a flat group; n >= min_count."""
    xp = array_namespace(x)
    x = _f64(x)
    _, mean_TG, std_TG = group_moments(x, group_ids, n_groups, mask, min_count)
    mean, std = group_gather(mean_TG, group_ids), group_gather(std_TG, group_ids)
    z = xp.where(std == 0, 0.0, (x - mean) / (std + EPS))
    return xp.where(_cs_valid(x, mask) & ~xp.isnan(mean), z, xp.nan)


def group_demean(x: Any, group_ids: Any, n_groups: int, mask: Any | None = None, min_count: int = 3) -> Any:
    """[T, N] x - mean_G(x) over valid members (n >= min_count)."""
    xp = array_namespace(x)
    x = _f64(x)
    out = x - group_gather(group_moments(x, group_ids, n_groups, mask, min_count)[1], group_ids)
    return xp.where(_cs_valid(x, mask), out, xp.nan)


def group_median(x: Any, group_ids: Any, n_groups: int, mask: Any | None = None, min_count: int = 3) -> Any:
    """[T, G] median over valid members (mean of the two middle values for an even count)."""
    xp = array_namespace(x)
    T = x.shape[0]
    _, keys, vals, start, seg_first, n_member = _group_sorted(x, group_ids, n_groups, mask)
    out = xp.full(T * n_groups, xp.nan)
    if keys.shape[0]:
        firsts = xp.nonzero(start)[0]
        k = keys[firsts]
        n = n_member[firsts]
        lo = vals[firsts + (n - 1) // 2]
        hi = vals[firsts + n // 2]
        out[k] = xp.where(n >= min_count, 0.5 * (lo + hi), xp.nan)
    return out.reshape(T, n_groups)


def group_rankpct(x: Any, group_ids: Any, n_groups: int, mask: Any | None = None, min_count: int = 3) -> Any:
    """[T, N] rankpct_G = (average rank - 1) / (n - 1) within each (date, group); NaN if n < min_count."""
    xp = array_namespace(x)
    T, N = x.shape
    flat_pos, keys, vals, start, seg_first, n_member = _group_sorted(x, group_ids, n_groups, mask)
    out = xp.full(T * N, xp.nan)
    m = keys.shape[0]
    if m:
        pos = xp.arange(m)
        new_run = start.copy()
        new_run[1:] |= vals[1:] != vals[:-1]
        run_first = _cummax(xp, xp.where(new_run, pos, 0))
        run_end = xp.ones(m, dtype=bool)
        run_end[:-1] = new_run[1:]
        rev = xp.where(run_end, m - 1 - pos, 0)[::-1].copy()
        run_last = (m - 1 - _cummax(xp, rev))[::-1]
        avg_rank0 = 0.5 * (run_first + run_last) - seg_first
        n = n_member.astype(xp.float64)
        pct = avg_rank0 / xp.maximum(n - 1.0, 1.0)
        out[flat_pos] = xp.where(n >= max(min_count, 2), pct, xp.nan)
    return out.reshape(T, N)


# ------------------------------------------------------------------------------------------------ events


def attached_event(T: int, N: int, row_idx: Any, col_idx: Any, xp: ModuleType = np) -> tuple[Any, Any]:
    """The event each (t, i) holds as of t: ([T, N] event index, -1 before the column's first; [T, N] row of
    that event's landing, -1 likewise).

    Event e lands on (row_idx[e], col_idx[e]) and holds until the next event of its column. Rows outside
    [0, T) or columns outside [0, N) are dropped (an event effective after the grid end, a code outside this
    stock chunk). For equal (row, col) keys the last event in the given order wins, so callers sort by their
    tie-break rule first. Only int [T, N] panels are built: each value column is then one gather
    (`scatter_asof`), not a dense [T, N, K] float panel that is forward-filled.
    """
    row = xp.asarray(row_idx).astype(np.int64)
    col = xp.asarray(col_idx).astype(np.int64)
    event = xp.arange(row.shape[0], dtype=np.int64)
    keep = (row >= 0) & (row < T) & (col >= 0) & (col < N)
    row, col, event = row[keep], col[keep], event[keep]
    key = row * N + col
    order = _argsort_stable(xp, key)
    ks = key[order]
    last = xp.ones(ks.shape[0], dtype=bool)
    if ks.shape[0] > 1:
        last[:-1] = ks[1:] != ks[:-1]
    sel = order[last]
    landed = xp.full((T, N), -1, dtype=np.int64)
    landed[row[sel], col[sel]] = event[sel]
    since = last_valid_index(landed >= 0)
    held = xp.take_along_axis(landed, xp.maximum(since, 0), axis=0)
    return xp.where(since >= 0, held, -1), since


def scatter_asof(
    T: int, N: int, row_idx: Any, col_idx: Any, values: Any, xp: ModuleType = np, return_age: bool = False
) -> Any:
    """As-of join: each event's value holds from its row until its column's next event (`attached_event`).

    `values` is [E] (-> one [T, N] panel) or [E, K] (-> a list of K [T, N] panels, each contiguous). An
    event's NaN value is carried like any value (a later empty field replaces an earlier number). With
    `return_age`, also returns the rows since the attached event (NaN before the first one), which staleness
    limits compare against (`where(age <= limit, v, nan)`).
    """
    event, since = attached_event(T, N, row_idx, col_idx, xp)
    vals = xp.asarray(values, dtype=xp.float64)
    has = event >= 0
    pick = xp.maximum(event, 0)

    def take(v_E: Any) -> Any:
        return xp.where(has, v_E[pick], xp.nan) if v_E.shape[0] else xp.full((T, N), xp.nan)

    out = (
        take(vals)
        if vals.ndim == 1
        else [take(xp.ascontiguousarray(vals[:, k])) for k in range(vals.shape[1])]
    )
    if not return_age:
        return out
    age = xp.where(has, (_time_index(xp, has) - since).astype(xp.float64), xp.nan)
    return out, age
