"""Daily returns of the synthetic market: a factor model plus planted signals, and the oracle that knows them.

Log return of stock i on session t (all [T, N] arrays, vectorised over stocks; only the scalar GARCH recursion
loops over dates):

    x[t,i] = beta_i m_t + l_i f[t, s(i)] + size_i F_size,t + value_i F_value,t
             + sigma_i (sqrt(1 - p) z[t,i] + sqrt(p) sum_{j in P(i)} z[t,j] / sqrt(5))
             + jump[t,i] + alpha[t,i]

- m_t: market factor, GARCH(1,1) with Student-t(5) shocks; its volatility ratio scales everything else.
- f: 33 sector factors; F_size, F_value: style factors.
- z[t,i]: the stock's own shock, a unit-variance Student-t draw times a persistent stock-level volatility (log
  AR(1)); P(i): its 5 hidden peers. A share p (`peer_spillover`) of the stock-specific variance is the
  peers' shocks of the same day, so peers co-move; the same sum moves the stock again the next day (the
  lead-lag signal).
- jump: the reaction to an earnings surprise on the session the news becomes public.
- alpha[t] = 1e-4 * sum_k strength_k * score_k[t-1]: the planted signals, each a unit-scale score known at the
  close of t-1 (strengths are in basis points per day per unit of score; see docs/synthetic.md).

Every score is linear in shocks up to t (or piecewise constant between known dates), so the oracle
`E_t[x_{t+1} + ... + x_{t+h}]` of the signal part is computed exactly by truncated filters, except for the
short-squeeze score, whose short-interest level is held at its value at t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from etl.sources.synth_universe import Universe, peer_graph

HORIZONS = (1, 2, 3, 5, 10)
REV_KERNEL = np.array([1.0, 0.8, 0.6, 0.4, 0.2]) / np.linalg.norm([1.0, 0.8, 0.6, 0.4, 0.2])
SM_WINDOW = 20
SQ_WINDOW = 10
PEAD_TAU = 15.0
PEAD_SPAN = 60
N_PEERS = 5
FLOW_PHI = 0.6


@dataclass(frozen=True)
class Strengths:
    """Signal strengths, basis points of expected next-day return per unit of score."""

    reversal: float
    sector_momentum: float
    lead_lag: float
    pead: float
    flow: float
    squeeze: float


@dataclass(frozen=True)
class Events:
    """Earnings news: for each event the code index, the first session it is public, and its surprise."""

    code: np.ndarray
    session: np.ndarray
    surprise: np.ndarray


@dataclass(frozen=True)
class Flows:
    """Weekly foreign-flow scores per section slot and the session from which each publication is public."""

    effective: np.ndarray  # [W] session index where publication w takes effect (sorted)
    score: np.ndarray  # [W, 4] AR(1) foreign-flow score per section slot
    slot: np.ndarray  # [T, N] section slot of each stock (-1 = none)


@dataclass(frozen=True)
class Returns:
    x: np.ndarray  # [T, N] log returns
    vol: np.ndarray  # [T, N] conditional daily volatility (for intraday ranges and volume)
    market: np.ndarray  # [T] market factor return
    alpha: np.ndarray  # [T, N] planted expected return of session t (known at t-1)
    oracle: np.ndarray  # [len(HORIZONS), T, N] E_t of the next h sessions' summed log return
    peers: np.ndarray  # [N, m] hidden peer indices
    short_interest: np.ndarray  # [T, N] short positions as a fraction of shares outstanding


def std_t(rng: np.random.Generator, dof: float, shape) -> np.ndarray:
    """Student-t draws scaled to unit variance."""
    return rng.standard_t(dof, size=shape) * np.sqrt((dof - 2.0) / dof)


def garch_market(rng: np.random.Generator, n: int, vol: float = 0.011) -> tuple[np.ndarray, np.ndarray]:
    """GARCH(1,1) market returns and their conditional volatility (a scalar recursion over dates)."""
    a, b = 0.09, 0.89
    omega = vol**2 * (1 - a - b)
    shocks = std_t(rng, 5.0, n)
    ret, sig = np.empty(n), np.empty(n)
    var = vol**2
    for t in range(n):
        sig[t] = np.sqrt(var)
        ret[t] = sig[t] * shocks[t]
        var = omega + a * ret[t] ** 2 + b * var
    return ret, sig


def ar1(rng: np.random.Generator, shape, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) along axis 0 with marginal standard deviation `sd` (vectorised over columns)."""
    e = rng.normal(0.0, sd * np.sqrt(1 - phi**2), shape)
    e[0] = rng.normal(0.0, sd, shape[1:])
    return lfilter([1.0], [1.0, -phi], e, axis=0)


def fir(kernel: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Causal filter along time: out[t] = sum_m kernel[m] x[t-m]."""
    return lfilter(kernel, [1.0], x, axis=0)


def horizon_kernel(kernel: np.ndarray, h: int) -> np.ndarray:
    """c[m] = sum_{j=1..h} kernel[m+j-1]: the part of the next h scores already fixed by shocks up to t."""
    padded = np.concatenate([kernel, np.zeros(h)])
    return np.array([padded[m : m + h].sum() for m in range(len(kernel))])


def last_event_arrays(events: Events, n_sessions: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[T, N] session of the last event on or before t, its surprise, and the session of the next event."""
    big = np.iinfo(np.int64).max // 4
    last = np.full((n_sessions, n), -big, dtype=np.int64)
    sur = np.zeros((n_sessions, n))
    nxt = np.full((n_sessions, n), big, dtype=np.int64)
    ok = (events.session >= 0) & (events.session < n_sessions)
    code, sess, s = events.code[ok], events.session[ok], events.surprise[ok]
    order = np.lexsort((sess, code))
    code, sess, s = code[order], sess[order], s[order]
    last[sess, code] = sess  # a later event on the same session overwrites: the last one counts
    sur[sess, code] = s
    nxt[sess, code] = sess
    idx = np.where(last > -big, np.arange(n_sessions)[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    has = np.maximum.accumulate(last > -big, axis=0)
    cols = np.arange(n)[None, :]
    last = np.where(has, last[idx, cols], -big)
    sur = np.where(has, sur[idx, cols], 0.0)
    # next event strictly after t: reverse cumulative minimum of the event sessions, shifted by one
    nxt_rev = np.minimum.accumulate(nxt[::-1], axis=0)[::-1]
    nxt = np.vstack([nxt_rev[1:], np.full((1, n), big, dtype=np.int64)])
    return last, sur, nxt


def simulate(
    rng_factors: np.random.Generator,
    rng_idio: np.random.Generator,
    uni: Universe,
    n_sessions: int,
    events: Events,
    flows: Flows,
    strengths: Strengths,
    idio_dof: float,
    peer_spillover: float,
) -> Returns:
    """Draw the factor model and the signals; return log returns, volatilities, alpha and the oracle.

    A share `peer_spillover` of each stock's specific variance is its hidden peers' shocks of the day, the
    rest its own shock z (ETFs: all their own).
    """
    T, N = n_sessions, uni.n
    m, msig = garch_market(rng_factors, T)
    v = msig / np.sqrt(np.mean(msig**2))  # market volatility ratio, spreads clustering to all components
    sqv = np.sqrt(v)[:, None]
    n_sec = int(uni.sector_id.max()) + 1
    sec_vol = rng_factors.uniform(0.005, 0.011, n_sec)
    f = sec_vol[None, :] * sqv * std_t(rng_factors, 5.0, (T, n_sec))
    styles = np.array([0.003, 0.0025])[None, :] * sqv * std_t(rng_factors, 5.0, (T, 2))

    h = ar1(rng_idio, (T, N), phi=0.98, sd=0.5)
    idio_scale = np.exp(h - 0.5 * 0.5**2) * sqv
    del h
    z = idio_scale * std_t(rng_idio, idio_dof, (T, N))  # each stock's own shocks, unit scale
    peers = peer_graph(uni.latent, uni.sector_id, N_PEERS)  # never an ETF
    stock_mask = (~uni.is_etf)[None, :]
    # the peers' shocks of the day, unit scale: they move the stock today (spillover), and tomorrow (lead-lag)
    peer_shocks = np.zeros((T, N))
    peer_var = np.zeros((T, N))
    for k in range(peers.shape[1]):
        peer_shocks += z[:, peers[:, k]]
        peer_var += idio_scale[:, peers[:, k]] ** 2
    peer_shocks *= stock_mask / np.sqrt(peers.shape[1])
    peer_var /= peers.shape[1]
    share = np.where(uni.is_etf, 0.0, peer_spillover)

    sid = np.where(uni.sector_id >= 0, uni.sector_id, 0)
    on_sector = (uni.sector_id >= 0).astype(float)
    x = uni.beta[None, :] * m[:, None]
    x += (uni.sector_loading * on_sector)[None, :] * f[:, sid]
    x += uni.size_z[None, :] * styles[:, :1] + uni.value_z[None, :] * styles[:, 1:]
    x += (uni.idio_vol * np.sqrt(1.0 - share))[None, :] * z
    x += (uni.idio_vol * np.sqrt(share))[None, :] * peer_shocks

    # earnings reaction on the first session the news is public
    ok = (events.session >= 0) & (events.session < T)
    jump = np.zeros((T, N))
    np.add.at(
        jump, (events.session[ok], events.code[ok]), 1.5 * uni.idio_vol[events.code[ok]] * events.surprise[ok]
    )
    x += jump
    del jump

    vol = np.sqrt(
        (uni.beta[None, :] * msig[:, None]) ** 2
        + (uni.sector_loading * on_sector)[None, :] ** 2 * (sec_vol[sid][None, :] ** 2) * v[:, None]
        + uni.idio_vol[None, :] ** 2 * ((1.0 - share)[None, :] * idio_scale**2 + share[None, :] * peer_var)
    )
    del idio_scale, peer_var

    # ---- planted signals: scores known at the close of t
    z = np.where(uni.is_etf[None, :], 0.0, z)
    si = short_interest(rng_idio, uni, T)
    six = np.clip((si - 0.025) / 0.025, 0.0, 2.0)
    last_ev, last_sur, next_ev = last_event_arrays(events, T, N)
    t_idx = np.arange(T)[:, None]
    pub = np.searchsorted(flows.effective, np.arange(T), side="right") - 1  # active publication at t

    def sector_momentum(kernel: np.ndarray) -> np.ndarray:
        ff = fir(kernel, f / sec_vol[None, :]) / np.sqrt(SM_WINDOW)
        ff -= ff.mean(axis=1, keepdims=True)
        return np.where(stock_mask, ff[:, sid], 0.0)

    # post-earnings drift: decays from the last event; flows: the active publication's score x size
    age = t_idx - last_ev  # >= 0, or huge where no event yet
    score_pead = np.where(
        age < PEAD_SPAN, 2.0 * last_sur * np.exp(-np.minimum(age, PEAD_SPAN) / PEAD_TAU), 0.0
    )
    active = (pub >= 0)[:, None] & (flows.slot >= 0)
    score_flow = np.where(active, flows.score[np.maximum(pub, 0)[:, None], np.maximum(flows.slot, 0)], 0.0)
    score_flow *= uni.size_z[None, :] * stock_mask

    box_sq = np.ones(SQ_WINDOW) / np.sqrt(SQ_WINDOW)
    box_sm = np.ones(SM_WINDOW)
    score_rev = -fir(REV_KERNEL, z)
    score_sm = sector_momentum(box_sm)
    score_ll = peer_shocks
    score_sq = six * fir(box_sq, z)
    s = strengths
    signal = (
        s.reversal * score_rev
        + s.sector_momentum * score_sm
        + s.lead_lag * score_ll
        + s.pead * score_pead
        + s.flow * score_flow
        + s.squeeze * score_sq
    ) * 1e-4
    alpha = np.zeros((T, N))
    alpha[1:] = signal[:-1]
    x += alpha

    # ---- the oracle: E_t of the next h sessions' signal part, exactly from the same linear recursions
    oracle = np.empty((len(HORIZONS), T, N))
    decay = np.exp(-1.0 / PEAD_TAU)
    newer = [
        np.searchsorted(flows.effective, np.arange(T) + j, side="right") - 1 - pub
        for j in range(max(HORIZONS))
    ]
    for k, hz in enumerate(HORIZONS):
        # drift runs on for L more sessions: until its 60-session span ends or the next scheduled document
        left = np.clip(np.minimum(np.minimum(PEAD_SPAN - age, next_ev - t_idx), hz), 0, hz)
        pead_sum = score_pead * ((1.0 - decay**left) / (1.0 - decay))
        # the flow score decays by FLOW_PHI with each publication that will replace it
        flow_weight = sum(FLOW_PHI ** np.maximum(newer[j], 0) for j in range(hz))
        part = s.lead_lag * score_ll  # the lead-lag score only moves the next session
        part -= s.reversal * fir(horizon_kernel(REV_KERNEL, hz), z)
        part += s.sector_momentum * sector_momentum(horizon_kernel(box_sm, hz))
        part += s.squeeze * six * fir(horizon_kernel(box_sq, hz), z)
        part += s.pead * pead_sum
        part += s.flow * score_flow * flow_weight[:, None]
        oracle[k] = part * 1e-4
    return Returns(x=x, vol=vol, market=m, alpha=alpha, oracle=oracle, peers=peers, short_interest=si)


def short_interest(rng: np.random.Generator, uni: Universe, n_sessions: int) -> np.ndarray:
    """[T, N] short positions / shares outstanding: a slow log-AR(1) around a stock-level base."""
    base = np.clip(np.exp(rng.normal(np.log(0.008), 0.8, uni.n)), 0.0005, 0.05)
    u = ar1(rng, (n_sessions, uni.n), phi=0.99, sd=0.5)
    return base[None, :] * np.exp(u - 0.125)
