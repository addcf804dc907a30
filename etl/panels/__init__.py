"""Panels: the trading calendar, the [date x stock] grid and the as-of event machinery (scatter + forward
fill)."""
