"""The feature store: chunked Parquet writes (feature_store) and catalog.json / docs/features.md (catalog)."""
