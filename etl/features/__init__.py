"""Feature modules, one per FEATURES.md group; each registers its columns in `etl.features.registry`.

`registry.load_all()` imports every module of this package, so a new group module needs no edit here.
"""
