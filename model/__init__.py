"""ATFT-GAT-FAN: small Flax Linen modules assembled into one functional model.

Entry points: `model.config.load_model_config`, `model.batch.Batch` (the batch contract),
`model.atft_gat_fan.ATFTGATFAN` / `init_params`, `model.losses.total_loss`.
"""
