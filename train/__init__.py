"""Training, walk-forward evaluation, the LightGBM baseline, reports and the `gogooku` CLI."""
