"""Backend resolution on a machine without a GPU (CI): auto -> cpu, gpu -> one clear error."""

import numpy as np
import pytest

from etl import backend
from etl.backend import BackendError, resolve_backend
from etl.ops import to_host

no_gpu = pytest.mark.skipif(backend.cupy_problem() is None, reason="a usable GPU is present")


def test_cpu_backend_uses_numpy_and_imports_nothing_gpu():
    be = resolve_backend("cpu")
    assert be.device == "cpu" and be.xp is np and be.polars_engine == "cpu"
    assert be.jax_device.platform == "cpu"
    assert backend.gpu_modules_loaded() == []


@no_gpu
def test_auto_falls_back_to_cpu_with_one_line_notice():
    notices = []
    be = resolve_backend("auto", notify=notices.append)
    assert be.device == "cpu"
    assert len(notices) == 1 and "running on CPU" in notices[0] and "\n" not in notices[0]


@no_gpu
def test_gpu_without_gpu_is_a_clear_error():
    with pytest.raises(BackendError) as err:
        resolve_backend("gpu")
    message = str(err.value)
    assert "--device gpu is not usable" in message
    assert "pip install -e '.[gpu]'" in message


def test_missing_cupy_is_reported(monkeypatch):
    monkeypatch.setattr(backend, "_installed", lambda name: False)
    backend.cupy_problem.cache_clear()
    try:
        assert backend.cupy_problem() == "CuPy is not installed"
        assert backend.cudf_polars_problem.__wrapped__() == "cudf-polars is not installed"
    finally:
        backend.cupy_problem.cache_clear()


def test_unknown_device():
    with pytest.raises(BackendError, match="device must be one of auto, cpu, gpu"):
        resolve_backend("tpu")


@pytest.mark.gpu
def test_gpu_backend_uses_cupy():
    be = resolve_backend("gpu")
    assert be.device == "gpu" and be.xp.__name__ == "cupy"
    host = to_host(be.xp.arange(3.0))
    assert type(host) is np.ndarray and np.allclose(host, [0, 1, 2])
