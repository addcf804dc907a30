"""Data sources that fill the raw store (docs/raw_store.md): the synthetic market and the J-Quants client."""
