"""One-screen model summary for `gogooku info --model CONFIG`: sizes and parameter counts from shapes only."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from model.atft_gat_fan import summary_rows
from model.config import load_model_config, resolve_model_config_path


def model_summary_table(name_or_path: str) -> Table:
    """A Rich table: the config's main sizes, then each block's parameter count (computed with eval_shape)."""
    cfg = load_model_config(name_or_path)
    rows = summary_rows(cfg)
    total = sum(count for _, count, _ in rows)
    path = escape(str(resolve_model_config_path(name_or_path)))  # a user's path may hold brackets
    table = Table(title=f"ATFT-GAT-FAN: {path}", show_header=True)
    table.add_column("block")
    table.add_column("parameters", justify="right")
    table.add_column("what")
    table.add_row(
        "input",
        "",
        f"x [B, L={cfg.lookback}, Npad, F={cfg.n_features}], hidden {cfg.hidden}, "
        f"dropout {cfg.dropout}, compute {cfg.compute_dtype}",
    )
    for name, count, text in rows:
        table.add_row(escape(name), f"{count:,}", escape(text))
    table.add_row(
        "[bold]total[/]",
        f"[bold]{total:,}[/]",
        f"output [B, Npad, {len(cfg.horizons)}, {len(cfg.quantiles)}]",
    )
    lc = cfg.loss
    table.add_row(
        "loss",
        "",
        f"pinball x {lc.pinball_weight} + (1 - IC) x {lc.ic_weight} + (1 - soft Spearman) x "
        f"{lc.spearman_weight}; horizon weights {list(lc.horizon_weights)}",
    )
    return table
