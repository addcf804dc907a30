"""The column list: FEATURES.md order pinned, the registry checked against it, the decorators' rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from etl.features import registry
from etl.features.registry import CANONICAL, GRAPH_COLUMNS, NON_GRAPH_COLUMNS, REGISTRY, load_all

REPO = Path(__file__).resolve().parents[1]
# the spec beside the repo (../shared), or beside a folder holding the repo (a git worktree)
FEATURES_MD = next(
    (p / "shared" / "FEATURES.md" for p in REPO.parents if (p / "shared" / "FEATURES.md").exists()),
    REPO.parent / "shared" / "FEATURES.md",
)

ALL_395 = (
    "Code",
    "Date",
    "Section",
    "MarketCode",
    "sector17_code",
    "sector17_name",
    "sector17_id",
    "sector33_code",
    "sector33_name",
    "sector33_id",
    "row_idx",
    "shares_outstanding",
    "Open",
    "High",
    "Low",
    "Close",
    "Volume",
    "TurnoverValue",
    "returns_1d",
    "returns_5d",
    "returns_10d",
    "returns_20d",
    "returns_60d",
    "returns_120d",
    "log_returns_1d",
    "log_returns_5d",
    "log_returns_10d",
    "log_returns_20d",
    "volatility_5d",
    "volatility_10d",
    "volatility_20d",
    "volatility_60d",
    "realized_volatility",
    "pk_vol_60",
    "rs_vol_20",
    "rs_vol_60",
    "yz_vol_20",
    "yz_vol_60",
    "vov_20",
    "vov_60",
    "sma_5",
    "sma_10",
    "sma_20",
    "sma_60",
    "sma_120",
    "ema_5",
    "ema_10",
    "ema_20",
    "ema_60",
    "ema_200",
    "price_to_sma5",
    "price_to_sma20",
    "price_to_sma60",
    "ma_gap_5_20",
    "ma_gap_20_60",
    "ema5_slope",
    "ema20_slope",
    "ema60_slope",
    "dist_to_200ema",
    "z_close_20",
    "high_low_ratio",
    "close_to_high",
    "close_to_low",
    "overnight_gap",
    "intraday_ret",
    "volume_ma_5",
    "volume_ma_20",
    "volume_ratio_5",
    "volume_ratio_20",
    "volume_accel",
    "turnover_rate",
    "dollar_volume",
    "adv_jpy",
    "amihud_20",
    "rsi_2",
    "rsi_14",
    "rsi_delta",
    "macd",
    "macd_signal",
    "macd_histogram",
    "macd_hist_slope",
    "bb_pct_b",
    "bb_position",
    "bb_bw",
    "bb_width",
    "atr_14",
    "natr_14",
    "adx_14",
    "stoch_k",
    "rsi_vol_interact",
    "vol_confirmed_mom",
    "mkt_ret_1d",
    "mkt_ret_5d",
    "mkt_ret_10d",
    "mkt_ret_20d",
    "mkt_ema_5",
    "mkt_ema_20",
    "mkt_ema_60",
    "mkt_ema_200",
    "mkt_dev_20",
    "mkt_gap_5_20",
    "mkt_ema20_slope_3",
    "mkt_vol_20d",
    "mkt_atr_14",
    "mkt_natr_14",
    "mkt_bb_pct_b",
    "mkt_bb_bw",
    "mkt_dd_from_peak",
    "mkt_big_move_flag",
    "mkt_ret_1d_z",
    "mkt_vol_20d_z",
    "mkt_bb_bw_z",
    "mkt_dd_from_peak_z",
    "mkt_bull_200",
    "mkt_trend_up",
    "mkt_high_vol",
    "mkt_squeeze",
    "mkt_bull_20d",
    "mkt_high_vol_regime",
    "beta_60d",
    "beta_20d_raw",
    "beta_rolling",
    "alpha_1d",
    "alpha_5d",
    "rel_strength_5d",
    "idio_vol_ratio",
    "beta_stability_60d",
    "trend_align_mkt",
    "alpha_vs_regime",
    "sec17_onehot_0",
    "sec17_onehot_1",
    "sec17_onehot_2",
    "sec17_onehot_3",
    "sec17_onehot_4",
    "sec17_onehot_5",
    "sec17_onehot_6",
    "sec17_onehot_7",
    "sec17_onehot_8",
    "sec17_onehot_9",
    "sec17_onehot_10",
    "sec17_onehot_11",
    "sec17_onehot_12",
    "sec17_onehot_13",
    "sec17_onehot_14",
    "sec17_onehot_15",
    "sec17_onehot_16",
    "sec17_daily_freq",
    "sec33_daily_freq",
    "sec_ret_1d_eq",
    "sec_ret_5d_eq",
    "sec_ret_20d_eq",
    "sec_ret_1d_mcap",
    "sec_ret_5d_mcap",
    "sec_ret_20d_mcap",
    "sec_mom_20",
    "sec_ema_5",
    "sec_ema_20",
    "sec_gap_5_20",
    "sec_vol_20",
    "sec_vol_20_z",
    "sec_member_cnt",
    "sec_small_flag",
    "rel_to_sec_5d",
    "beta_to_sec_60",
    "alpha_vs_sec_1d",
    "ret_1d_demeaned",
    "z_in_sec_returns_5d",
    "z_in_sec_ma_gap_5_20",
    "ret_prev_1d_vs_sec",
    "ret_prev_1d_in_sec_z",
    "ret_prev_1d_rank_in_sec",
    "ret_prev_5d_vs_sec",
    "ret_prev_5d_in_sec_z",
    "ret_prev_10d_vs_sec",
    "ret_prev_10d_in_sec_z",
    "volume_in_sec_z",
    "volume_rank_in_sec",
    "rv20_in_sec_z",
    "rsi14_in_sec_z",
    "macd_slope_in_sec_z",
    "vcm_in_sec_z",
    "rsi_vol_in_sec_z",
    "te33_sec_target_5d",
    "flow_foreign_net_ratio",
    "flow_individual_net_ratio",
    "flow_proprietary_net_ratio",
    "flow_trust_banks_net_ratio",
    "flow_invest_trusts_net_ratio",
    "flow_business_cos_net_ratio",
    "flow_foreign_share",
    "flow_activity_ratio",
    "flow_activity_rel52",
    "flow_breadth_pos",
    "flow_foreign_net_z",
    "flow_individual_net_z",
    "flow_activity_z",
    "flow_smart_idx",
    "flow_smart_mom4",
    "flow_smart_pos",
    "flow_shock_flag",
    "flow_foreign_net_pos",
    "flow_activity_high",
    "flow_activity_low",
    "flow_foreign_net_ratio_wow",
    "flow_impulse",
    "flow_days_since",
    "margin_long_tot",
    "margin_short_tot",
    "margin_net",
    "margin_total_gross",
    "margin_credit_ratio",
    "margin_imbalance",
    "margin_std_share_long",
    "margin_std_share_short",
    "margin_neg_share_long",
    "margin_neg_share_short",
    "margin_d_long_wow",
    "margin_d_short_wow",
    "margin_d_net_wow",
    "margin_d_ratio_wow",
    "margin_gross_mom4",
    "long_z52",
    "short_z52",
    "margin_gross_z52",
    "ratio_z52",
    "margin_long_to_adv20",
    "margin_short_to_adv20",
    "margin_d_long_to_adv20",
    "margin_d_short_to_adv20",
    "margin_impulse",
    "margin_days_since",
    "margin_issue_type",
    "is_borrowable",
    "dmi_long",
    "dmi_short",
    "dmi_net",
    "dmi_total",
    "dmi_credit_ratio",
    "dmi_imbalance",
    "dmi_short_long_ratio",
    "dmi_std_share_long",
    "dmi_std_share_short",
    "dmi_neg_share_long",
    "dmi_neg_share_short",
    "dmi_d_long_1d",
    "dmi_d_short_1d",
    "dmi_d_net_1d",
    "dmi_d_ratio_1d",
    "dmi_z26_long",
    "dmi_z26_short",
    "dmi_z26_total",
    "dmi_z26_d_short_1d",
    "dmi_long_to_adv20",
    "dmi_short_to_adv20",
    "dmi_total_to_adv20",
    "dmi_d_long_to_adv1d",
    "dmi_d_short_to_adv1d",
    "dmi_d_net_to_adv1d",
    "dmi_reason_restricted",
    "dmi_reason_dailypublication",
    "dmi_reason_monitoring",
    "dmi_reason_restrictedbyjsf",
    "dmi_reason_precautionbyjsf",
    "dmi_reason_unclearorseconalert",
    "dmi_reason_count",
    "dmi_tse_reg_level",
    "dmi_impulse",
    "dmi_days_since_pub",
    "dmi_days_since_app",
    "dmi_application_date",
    "dmi_published_date",
    "stmt_yoy_sales",
    "stmt_yoy_op",
    "stmt_yoy_np",
    "stmt_opm",
    "stmt_npm",
    "stmt_progress_sales",
    "stmt_progress_op",
    "stmt_progress_np",
    "stmt_rev_fore_sales",
    "stmt_rev_fore_op",
    "stmt_rev_fore_np",
    "stmt_rev_fore_eps",
    "stmt_rev_div_fore",
    "stmt_roe",
    "stmt_roa",
    "stmt_equity_ratio",
    "stmt_ep_fore",
    "stmt_bp",
    "stmt_change_in_est",
    "stmt_nc_flag",
    "stmt_imp_statement",
    "stmt_days_since_statement",
    "days_since_earnings",
    "earnings_recent_5d",
    "days_to_earnings",
    "earnings_upcoming_5d",
    "earnings_day_return",
    "earnings_reaction_strength",
    "earnings_momentum_5d",
    "earnings_momentum_10d",
    "earnings_momentum_20d",
    "pead_strength",
    "pre_earnings_volatility",
    "post_earnings_volatility",
    "earnings_event_volatility",
    "ss_sec33_short_share",
    "ss_sec33_restrict_share",
    "ss_sec33_short_turnover",
    "ss_sec33_short_share_d1",
    "ss_sec33_restrict_share_d1",
    "ss_sec33_short_mom5",
    "ss_sec33_short_accel",
    "ss_sec33_short_share_z60",
    "ss_sec33_short_turnover_z252",
    "ss_mkt_short_share",
    "ss_mkt_restrict_share",
    "ss_mkt_short_breadth_q80",
    "ss_rel_short_share",
    "ss_rel_restrict_share",
    "ss_cond_pressure",
    "ss_squeeze_setup",
    "ss_balance_ratio",
    "ss_balance",
    "ss_balance_change",
    "ss_pos_holder_cnt",
    "ss_pos_max_ratio",
    "ss_pos_days_since_report",
    "peer_count",
    "peer_corr_mean",
    "graph_degree",
    "graph_degree_z",
    "graph_comp_id",
    "graph_comp_size",
    "graph_degree_in_comp",
    "graph_degree_z_in_comp",
    "graph_pagerank",
    "graph_pagerank_share_comp",
    "graph_pagerank_z_in_comp",
    "graph_clustering",
    "graph_avg_neigh_deg",
    "graph_core",
    "graph_degree_centrality",
    "graph_closeness",
    "graph_local_density",
    "graph_isolated",
    "x_trend_intensity",
    "x_trend_intensity_g",
    "x_rel_sec_mom",
    "x_z_sec_gap_mom",
    "x_mom_sh_5",
    "x_mom_sh_10",
    "x_mom_sh_5_mktneu",
    "x_rvol5_dir",
    "x_rvol5_bb",
    "x_bbpos_rvol5",
    "x_bbneg_rvol5",
    "x_squeeze_pressure",
    "x_credit_rev_bias",
    "x_pead_effect",
    "x_pead_times_mkt",
    "x_rev_gate",
    "x_bo_gate",
    "x_alpha_meanrev_stable",
    "x_flow_smart_rel",
    "x_foreign_relsec",
    "x_breadth_rel",
    "x_tri_align",
    "x_liquidityshock_mom",
    "x_dmi_impulse_dir",
    "is_rsi2_valid",
    "is_ema5_valid",
    "is_ema10_valid",
    "is_ema20_valid",
    "is_ema200_valid",
    "is_valid_ma",
    "is_mkt_z_valid",
    "is_beta_valid",
    "is_sec_valid",
    "is_flow_valid",
    "is_margin_valid",
    "is_dmi_valid",
    "is_stmt_valid",
    "is_ss_valid",
    "is_graph_valid",
    "target_1d",
    "target_2d",
    "target_3d",
    "target_5d",
    "target_10d",
    "target_1d_binary",
    "target_2d_binary",
    "target_3d_binary",
    "target_5d_binary",
    "target_10d_binary",
)


def test_pinned_list_is_all_395_columns():
    assert len(ALL_395) == 395 and len(set(ALL_395)) == 395
    assert ALL_395[:3] == ("Code", "Date", "Section") and ALL_395[-1] == "target_10d_binary"
    assert [row.name for row in CANONICAL] == list(ALL_395)
    assert [row.number for row in CANONICAL] == list(range(1, 396))
    assert ALL_395[328:346] == GRAPH_COLUMNS and len(GRAPH_COLUMNS) == 18
    assert tuple(NON_GRAPH_COLUMNS) == tuple(c for c in ALL_395 if c not in GRAPH_COLUMNS)


def test_graph_stage_dtypes_are_the_catalog_dtypes():
    from etl.graph.build import GRAPH_COLUMNS as GRAPH_DTYPES

    assert [name for name, _ in GRAPH_DTYPES] == list(GRAPH_COLUMNS)
    assert [dtype for _, dtype in GRAPH_DTYPES] == [
        registry.CANONICAL_BY_NAME[n].dtype for n in GRAPH_COLUMNS
    ]


@pytest.mark.skipif(not FEATURES_MD.exists(), reason="../shared/FEATURES.md not beside the repo")
def test_canonical_table_matches_features_md():
    rows = [
        line
        for line in FEATURES_MD.read_text(encoding="utf-8").splitlines()
        if re.match(r"^\| \d+ \| ", line)
    ]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in rows]
    parsed = [(int(c[0]), c[1], c[6], c[7], c[3], c[5], c[2]) for c in cells]
    ours = [(r.number, r.name, r.dtype, r.role, r.window, r.validity, r.definition) for r in CANONICAL]
    assert ours == parsed
    titles = re.findall(r"^### (4\.\d+) .*\((\d+)\)", FEATURES_MD.read_text(encoding="utf-8"), flags=re.M)
    sizes = [sum(1 for r in CANONICAL if r.group == group) for group in registry.GROUPS]
    assert [int(n) for _, n in titles] == sizes  # each group is one FEATURES.md section, in order


def test_catalog_file_round_trips_as_tab_separated_text():
    text = (Path(registry.__file__).parent / registry.CATALOG_FILE).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0].split("\t") == list(registry.CatalogRow._fields)
    assert lines[1:] == ["\t".join(str(v) for v in row) for row in CANONICAL]
    assert registry.CANONICAL_BY_NAME["sector17_code"].definition == 'as-of Sector17Code ("1".."17", "99")'


def test_catalog_reader_rejects_a_malformed_file():
    header = "\t".join(registry.CatalogRow._fields)
    good = "1\tCode\tidentifiers\tstr\tID\t—\tnever null\t5-char issue code"
    assert registry.read_catalog(f"{header}\n{good}\n")[0].name == "Code"
    bad = {
        "header": f"{header.replace('role', 'kind')}\n{good}\n",
        "fields": f"{header}\n{good}\textra\n",
        "non-empty": f"{header}\n{good.replace('never null', '')}\n",
        "expected 1": f"{header}\n{good.replace('1', '2', 1)}\n",
        "unknown group": f"{header}\n{good.replace('identifiers', 'ids')}\n",
        "twice": f"{header}\n{good}\n{good.replace('1', '2', 1)}\n",
    }
    for message, text in bad.items():
        with pytest.raises(ValueError, match=message):
            registry.read_catalog(text)


def test_registry_holds_every_column_in_features_order():
    load_all()
    assert ["Code", "Date", *REGISTRY] == list(ALL_395)  # Code and Date are written by the store
    from etl.pipeline import build_columns

    assert build_columns() == list(ALL_395[2:])


def test_registered_metadata_equals_features_md():
    load_all()
    for name in REGISTRY:
        spec = REGISTRY[name]
        row = registry.CANONICAL_BY_NAME[name]
        assert (spec.number, spec.group, spec.dtype, spec.role) == (
            row.number,
            row.group,
            row.dtype,
            row.role,
        )
        assert (spec.window, spec.validity, spec.doc) == (row.window, row.validity, row.definition)


def test_decorator_rejects_unknown_mismatched_and_duplicate_columns():
    with pytest.raises(ValueError, match="not a column"):
        registry.feature("returns_7d")(lambda ctx: None)
    with pytest.raises(ValueError, match="dtype"):
        registry._spec("returns_1d", None, False, {"dtype": "f64"})
    with pytest.raises(ValueError, match="key column"):
        registry.feature("Code")(lambda ctx: None)
    load_all()
    with pytest.raises(ValueError, match="registered twice"):
        registry.feature("returns_1d")(lambda ctx: None)


def test_catalog_page_lists_every_column_with_status():
    from etl.store.catalog import render

    page = render()
    lines = {
        line.split("|")[2].strip(" `"): line for line in page.splitlines() if re.match(r"^\| \d+ \| `", line)
    }
    assert list(lines) == [row.name for row in CANONICAL]
    for name, line in lines.items():
        status = line.split("|")[6].strip()
        assert status == "built", name
    assert "| 19 | `returns_1d` | f32 | I | lag 1 | built |" in page


def test_committed_catalog_page_is_the_generated_one(tmp_path):
    from etl.store.catalog import DOC, main, render

    assert DOC.read_text(encoding="utf-8") == render()  # rerun `python -m etl.store.catalog` after edits
    target = tmp_path / "features.md"
    target.write_text("an older page", encoding="utf-8")
    assert main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render()
    assert [p.name for p in tmp_path.iterdir()] == ["features.md"]  # the temporary sibling was renamed
