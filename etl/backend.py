"""Resolve `--device auto|cpu|gpu` into the array namespace, the Polars engine and the JAX device.

Nothing GPU is imported on the CPU path: CuPy and cuDF are only imported after `gpu`/`auto` asks for them,
and only when their packages are installed.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any, Literal

from etl.errors import GogookuError

Device = Literal["auto", "cpu", "gpu"]
GPU_INSTALL_HINT = "install the GPU extra on Linux x86-64 with CUDA 12: pip install -e '.[gpu]'"


class BackendError(GogookuError):
    """The requested device cannot be used."""


@dataclass(frozen=True)
class Backend:
    """Where the work runs: `xp` is numpy or cupy; `polars_engine` goes to `LazyFrame.collect(engine=...)`."""

    device: Literal["cpu", "gpu"]
    xp: ModuleType
    polars_engine: Any

    @property
    def jax_device(self) -> Any:
        """The JAX device of this backend; JAX is imported only here (the ETL never needs it)."""
        import jax

        return jax.devices(self.device)[0]


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@cache
def cupy_problem() -> str | None:
    """None if CuPy is installed and can run a kernel on a CUDA device, else why not."""
    if not _installed("cupy"):
        return "CuPy is not installed"
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return "CuPy found no CUDA device"
        float((cupy.arange(4.0) * 2).sum())  # a real kernel: catches driver/runtime mismatches
    except Exception as err:  # any CUDA failure means "not usable"; the reason is reported, not raised
        return f"CuPy cannot use a CUDA device ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    return None


@cache
def cudf_polars_problem() -> str | None:
    """None if Polars' GPU engine (cudf-polars) is installed and a CUDA device is usable, else why not."""
    if not _installed("cudf_polars"):
        return "cudf-polars is not installed"
    return cupy_problem()


@cache
def jax_gpu_problem() -> str | None:
    """None if JAX sees a GPU, else why not."""
    import jax

    try:
        devices = jax.devices("gpu")
    except RuntimeError:
        return "JAX has no CUDA backend (jax[cuda12] is not installed or found no GPU)"
    return None if devices else "JAX found no GPU"


def resolve_backend(device: Device = "auto", *, notify: Any = None) -> Backend:
    """Pick the backend for `device`.

    `gpu` needs CuPy on a usable CUDA device and a JAX GPU; otherwise one BackendError says what is missing.
    Polars' GPU engine is used only where cudf-polars is usable (without a driver it raises rather than falls
    back, so it is checked first). `auto` falls back to CPU and calls `notify` with a one-line reason.
    """
    if device not in ("auto", "cpu", "gpu"):
        raise BackendError(f"device must be one of auto, cpu, gpu (got {device!r})")
    if device == "cpu":
        return _cpu_backend()
    problem = cupy_problem() or jax_gpu_problem()  # JAX is only imported once CuPy works
    if problem is not None:
        if device == "gpu":
            raise BackendError(f"--device gpu is not usable: {problem}; {GPU_INSTALL_HINT}")
        if notify is not None:
            notify(f"no usable GPU ({problem}); running on CPU")
        return _cpu_backend()
    import cupy

    engine: Any = "cpu"
    if cudf_polars_problem() is None:
        import polars as pl

        engine = pl.GPUEngine(raise_on_fail=False)
    return Backend(device="gpu", xp=cupy, polars_engine=engine)


def _cpu_backend() -> Backend:
    import numpy

    return Backend(device="cpu", xp=numpy, polars_engine="cpu")


def gpu_modules_loaded() -> list[str]:
    """GPU packages present in sys.modules (used by tests to prove the CPU path imports none)."""
    return sorted(m for m in ("cupy", "cudf", "cudf_polars") if m in sys.modules)
