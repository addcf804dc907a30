"""ATFT-GAT-FAN: small Flax Linen modules assembled into one functional model."""
