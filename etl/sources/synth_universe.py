"""The synthetic market's cross-section: codes, names, sectors, market segments, listings, hidden peers.

Sector and market vocabularies are the real J-Quants ones (`../shared/jquants_api.md` §4). Every draw comes
from the generator passed in, so the universe is a pure function of (config, seed).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

# Sector33Code -> (Japanese name as the API spells it, Sector17Code, approximate number of listed stocks)
SECTOR33: dict[str, tuple[str, str, int]] = {
    "0050": ("水産・農林業", "1", 12),
    "1050": ("鉱業", "2", 6),
    "2050": ("建設業", "3", 160),
    "3050": ("食料品", "1", 125),
    "3100": ("繊維製品", "4", 50),
    "3150": ("パルプ・紙", "4", 25),
    "3200": ("化学", "4", 210),
    "3250": ("医薬品", "5", 70),
    "3300": ("石油･石炭製品", "2", 10),
    "3350": ("ゴム製品", "6", 18),
    "3400": ("ガラス･土石製品", "3", 55),
    "3450": ("鉄鋼", "7", 45),
    "3500": ("非鉄金属", "7", 35),
    "3550": ("金属製品", "3", 90),
    "3600": ("機械", "8", 230),
    "3650": ("電気機器", "9", 240),
    "3700": ("輸送用機器", "6", 90),
    "3750": ("精密機器", "9", 50),
    "3800": ("その他製品", "10", 110),
    "4050": ("電気･ガス業", "11", 25),
    "5050": ("陸運業", "12", 65),
    "5100": ("海運業", "12", 15),
    "5150": ("空運業", "12", 5),
    "5200": ("倉庫･運輸関連業", "12", 40),
    "5250": ("情報･通信業", "10", 550),
    "6050": ("卸売業", "13", 310),
    "6100": ("小売業", "14", 340),
    "7050": ("銀行業", "15", 80),
    "7100": ("証券､商品先物取引業", "16", 40),
    "7150": ("保険業", "16", 15),
    "7200": ("その他金融業", "16", 35),
    "8050": ("不動産業", "17", 150),
    "9050": ("サービス業", "10", 530),
}
OTHER_SECTOR33 = ("9999", "その他", "99")
SECTOR17_NAMES = {
    "1": "食品",
    "2": "エネルギー資源",
    "3": "建設・資材",
    "4": "素材・化学",
    "5": "医薬品",
    "6": "自動車・輸送機",
    "7": "鉄鋼・非鉄",
    "8": "機械",
    "9": "電機・精密",
    "10": "情報通信・サービスその他",
    "11": "電気・ガス",
    "12": "運輸・物流",
    "13": "商社・卸売",
    "14": "小売",
    "15": "銀行",
    "16": "金融（除く銀行）",
    "17": "不動産",
    "99": "その他",
}
MARKET_NAMES = {
    "0101": "東証一部",
    "0102": "東証二部",
    "0104": "マザーズ",
    "0105": "TOKYO PRO MARKET",
    "0106": "JASDAQ スタンダード",
    "0107": "JASDAQ グロース",
    "0109": "その他",
    "0111": "プライム",
    "0112": "スタンダード",
    "0113": "グロース",
}
RESTRUCTURING = dt.date(2022, 4, 4)  # the first session of Prime / Standard / Growth
MARGIN_NAMES = {"1": "信用", "2": "貸借", "3": "その他"}

SECTOR_CODES = list(SECTOR33)
_NAME_HEADS = [
    "東邦",
    "日本",
    "大和",
    "三和",
    "中央",
    "昭和",
    "明治",
    "北陸",
    "関西",
    "太平洋",
    "富士",
    "東洋",
]
_NAME_HEADS += [
    "新日本",
    "丸栄",
    "双葉",
    "青葉",
    "光陽",
    "朝日",
    "平和",
    "共栄",
    "北斗",
    "瑞穂",
    "高砂",
    "若葉",
]
_NAME_HEADS_EN = [
    "Toho",
    "Nippon",
    "Daiwa",
    "Sanwa",
    "Chuo",
    "Showa",
    "Meiji",
    "Hokuriku",
    "Kansai",
    "Taiheiyo",
]
_NAME_HEADS_EN += [
    "Fuji",
    "Toyo",
    "Shin-Nippon",
    "Maruei",
    "Futaba",
    "Aoba",
    "Koyo",
    "Asahi",
    "Heiwa",
    "Kyoei",
]
_NAME_HEADS_EN += ["Hokuto", "Mizuho", "Takasago", "Wakaba"]
_NAME_TAILS = ["", "ホールディングス", "工業", "産業", "グループ"]
_NAME_TAILS_EN = [" Co.,Ltd.", " Holdings,Inc.", " Industries,Ltd.", " Corporation", " Group,Inc."]


@dataclass(frozen=True)
class Universe:
    """Per-code attributes (arrays of length N) and listing spans as session indices (inclusive)."""

    codes: np.ndarray  # str, 5 characters
    name_ja: np.ndarray
    name_en: np.ndarray
    sector33: np.ndarray  # str codes ("0050" ...), "9999" for ETFs
    sector_id: np.ndarray  # int 0..32, -1 for ETFs
    is_etf: np.ndarray  # bool
    market_pre: np.ndarray  # MarketCode before the April 2022 restructuring
    market_post: np.ndarray  # MarketCode from 2022-04-04
    scale: np.ndarray  # ScaleCategory
    margin_code: np.ndarray  # "1" / "2"
    first: np.ndarray  # int: first listed session index
    last: np.ndarray  # int: last listed session index
    mcap0: np.ndarray  # float: initial market cap, yen
    price0: np.ndarray  # float: initial price, yen
    shares: np.ndarray  # float: shares outstanding in units of the start (economic units)
    fy_end_month: np.ndarray  # int 1..12
    accounting: np.ndarray  # TypeOfDocument suffix ("Consolidated_JP" ...)
    size_z: np.ndarray  # standardised log market cap
    value_z: np.ndarray  # value exposure
    beta: np.ndarray  # market beta
    sector_loading: np.ndarray
    idio_vol: np.ndarray  # daily idiosyncratic volatility
    latent: np.ndarray  # [N, K] hidden business characteristics (unit vectors): peers are nearest

    @property
    def n(self) -> int:
        return len(self.codes)

    def listed(self, n_sessions: int) -> np.ndarray:
        """[T, N] bool: the code is listed on session t."""
        t = np.arange(n_sessions)[:, None]
        return (t >= self.first[None, :]) & (t <= self.last[None, :])


def lookup(keys: np.ndarray, mapping: dict, default: object) -> np.ndarray:
    """Map an array of keys through a dict with one Python call per distinct key, not per element."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    return np.array([mapping.get(k, default) for k in uniq.tolist()])[inverse].reshape(np.shape(keys))


def _largest_remainder(total: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    base = np.full(len(weights), minimum if total >= minimum * len(weights) else 0)
    rest = total - base.sum()
    share = weights / weights.sum() * rest
    counts = np.floor(share).astype(int)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: rest - counts.sum()]] += 1
    return base + counts


def build_universe(rng: np.random.Generator, n: int, n_sessions: int, restructure_idx: int) -> Universe:
    """Draw N codes: ~1% ETFs, the rest common stocks over the 33 sectors weighted like the real market."""
    n_etf = max(1, round(n * 0.01))
    n_eq = n - n_etf
    weights = np.array([v[2] for v in SECTOR33.values()], dtype=float)
    counts = _largest_remainder(n_eq, weights, minimum=2 if n_eq >= 66 else 1)
    sector_id = np.repeat(np.arange(len(SECTOR33)), counts)
    # codes rise with the sector order, as real codes roughly do; ETFs take the 13xx-16xx block
    eq_codes = np.sort(rng.choice(np.arange(1700, 9990), size=n_eq, replace=False))
    etf_codes = np.sort(rng.choice(np.arange(1305, 1700), size=n_etf, replace=False))
    number = np.concatenate([eq_codes, etf_codes])
    codes = np.array([f"{c:04d}0" for c in number])
    sector_id = np.concatenate([sector_id, np.full(n_etf, -1)])
    is_etf = sector_id < 0
    sector33 = np.array([SECTOR_CODES[s] if s >= 0 else OTHER_SECTOR33[0] for s in sector_id])

    log_mcap = rng.normal(np.log(4e10), 1.5, n)
    log_mcap[is_etf] = rng.normal(np.log(2e11), 0.5, n_etf)
    price0 = np.exp(rng.normal(np.log(1500.0), 0.8, n)).clip(120.0, 40000.0)
    mcap0 = np.exp(log_mcap)
    shares = np.round(mcap0 / price0, -2)
    size_z = (log_mcap - log_mcap[~is_etf].mean()) / log_mcap[~is_etf].std()

    # market segments: big stocks on the 1st section, the rest spread over 2nd / JASDAQ / Mothers
    score = size_z + rng.normal(0, 0.5, n)
    rank = np.argsort(np.argsort(-np.where(is_etf, -np.inf, score)))
    first_section = rank < 0.55 * n_eq
    other = rng.choice(np.array(["0102", "0106", "0104", "0107"]), size=n, p=[0.3, 0.35, 0.27, 0.08])
    market_pre = np.where(first_section, "0101", other)
    market_pre[is_etf] = "0109"
    prime_cut = np.quantile(score[first_section], 0.16) if first_section.any() else 0.0
    market_post = np.select(
        [is_etf, first_section & (score >= prime_cut), first_section, np.isin(market_pre, ["0104", "0107"])],
        ["0109", "0111", "0112", "0113"],
        default="0112",
    )

    # listings and delistings inside the period (never an ETF)
    eq_idx = np.flatnonzero(~is_etf)
    n_ipo, n_del = round(0.06 * n_eq), round(0.05 * n_eq)
    picked = rng.choice(eq_idx, size=n_ipo + n_del, replace=False)
    ipo, dead = picked[:n_ipo], picked[n_ipo:]
    first = np.zeros(n, dtype=np.int64)
    last = np.full(n, n_sessions - 1, dtype=np.int64)
    lo, hi = int(0.05 * n_sessions), max(int(0.95 * n_sessions), int(0.05 * n_sessions) + 2)
    first[ipo] = rng.integers(lo, hi, n_ipo)
    last[dead] = rng.integers(lo, hi, n_del)
    # IPOs are small growth companies: Mothers / JASDAQ Growth before the restructuring, Growth after
    size_z[ipo] -= 1.0
    market_pre[ipo] = np.where(rng.random(n_ipo) < 0.8, "0104", "0107")
    market_post[ipo] = "0113"
    late_ipo = ipo[first[ipo] >= restructure_idx]
    market_pre[late_ipo] = "0113"  # listed straight onto Growth: the same code both sides of the date
    mcap0[ipo] *= np.exp(-1.0)

    # TOPIX scale categories by size among 1st-section stocks (Core30 / Large70 / Mid400 / Small 1 / Small 2)
    scale = np.full(n, "-", dtype=object)
    members = np.flatnonzero(market_pre == "0101")
    order = members[np.argsort(-mcap0[members], kind="stable")]
    bounds = np.cumsum([0.014, 0.032, 0.184, 0.36]) * len(order)
    names = ["TOPIX Core30", "TOPIX Large70", "TOPIX Mid400", "TOPIX Small 1", "TOPIX Small 2"]
    pos = np.searchsorted(bounds, np.arange(len(order)), side="right")
    scale[order] = np.array(names, dtype=object)[pos]
    scale = scale.astype(str)
    margin_code = np.where((market_pre == "0101") & (size_z > -0.3) | is_etf, "2", "1")

    fy_end_month = rng.choice(
        np.array([3, 12, 9, 6, 2, 5, 8, 11]), size=n, p=[0.65, 0.15, 0.05, 0.05] + [0.025] * 4
    )
    accounting = rng.choice(
        np.array(["Consolidated_JP", "Consolidated_IFRS", "Consolidated_US", "NonConsolidated_JP"]),
        size=n,
        p=[0.78, 0.12, 0.02, 0.08],
    )

    heads = rng.integers(0, len(_NAME_HEADS), n)
    tails = rng.integers(0, len(_NAME_TAILS), n)
    stems = np.array([SECTOR33[s][0][:2] if s in SECTOR33 else "" for s in sector33])
    name_ja = np.array(
        [f"{_NAME_HEADS[h]}{s}{_NAME_TAILS[t]}" for h, s, t in zip(heads, stems, tails, strict=True)]
    )
    name_en = np.array([f"{_NAME_HEADS_EN[h]}{_NAME_TAILS_EN[t]}" for h, t in zip(heads, tails, strict=True)])
    etf_pos = np.flatnonzero(is_etf)
    name_ja[etf_pos] = [f"上場インデックスファンド{c[:4]}" for c in codes[etf_pos]]
    name_en[etf_pos] = [f"Listed Index Fund {c[:4]}" for c in codes[etf_pos]]

    value_z = rng.normal(0, 1, n)
    beta = np.clip(rng.normal(1.0, 0.3, n), 0.3, 1.8)
    beta[is_etf] = 1.0
    sector_loading = np.clip(rng.normal(1.0, 0.3, n), 0.2, 2.0)
    sector_loading[is_etf] = 0.0
    idio_vol = np.clip(0.018 * np.exp(-0.25 * size_z + rng.normal(0, 0.25, n)), 0.007, 0.05)
    idio_vol[is_etf] = 0.002
    k = 8
    latent = rng.normal(0, 1, (n, k))
    latent /= np.linalg.norm(latent, axis=1, keepdims=True)

    uni = Universe(
        codes=codes,
        name_ja=name_ja,
        name_en=name_en,
        sector33=sector33,
        sector_id=sector_id,
        is_etf=is_etf,
        market_pre=market_pre,
        market_post=market_post,
        scale=scale,
        margin_code=margin_code,
        first=first,
        last=last,
        mcap0=mcap0,
        price0=price0,
        shares=shares,
        fy_end_month=fy_end_month,
        accounting=accounting,
        size_z=size_z,
        value_z=value_z,
        beta=beta,
        sector_loading=sector_loading,
        idio_vol=idio_vol,
        latent=latent,
    )
    return sort_by_code(uni)


def sort_by_code(uni: Universe) -> Universe:
    """The same universe with every per-code array in code order (the order of every table)."""
    perm = np.argsort(uni.codes, kind="stable")
    return Universe(**{k: getattr(uni, k)[perm] for k in Universe.__dataclass_fields__})


def peer_graph(latent: np.ndarray, sector_id: np.ndarray, m: int) -> np.ndarray:
    """[N, m] hidden peers of each stock: the m nearest neighbours in latent space, same sector preferred.

    A stock's shocks spill over to the stocks it is a peer of (synth_returns.py), so peers' returns
    correlate; the correlation graph finds part of them (`graph_recovery` in synthetic.json).
    """
    sim = latent @ latent.T + 0.35 * (sector_id[:, None] == sector_id[None, :])
    np.fill_diagonal(sim, -np.inf)
    sim[:, sector_id < 0] = -np.inf  # no ETF is anybody's peer
    m = min(m, latent.shape[0] - 1)
    top = np.argpartition(-sim, m, axis=1)[:, :m]
    order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)
