"""Shared test setup: GPU tests are skipped where no usable CUDA device is found."""

import pytest


def pytest_collection_modifyitems(config, items):
    if not any("gpu" in item.keywords for item in items):
        return
    from etl.backend import cupy_problem

    problem = cupy_problem()
    if problem is None:
        return
    skip = pytest.mark.skip(reason=f"no usable GPU: {problem}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
