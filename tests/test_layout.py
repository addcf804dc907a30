"""Dependencies point one way, train -> model -> etl: each etl module imports with train and model blocked."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import importlib, pkgutil, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"etl must not import {name}")
        return None

BLOCKED = set(sys.argv[1].split(","))
sys.meta_path.insert(0, Block())
import etl
names = [m.name for m in pkgutil.walk_packages(etl.__path__, "etl.")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def _import_all(package: str, blocked: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.replace("etl", package), blocked],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr.strip().splitlines()[-1]
    return int(out.stdout)


def test_etl_imports_neither_train_nor_model():
    assert _import_all("etl", "train,model") > 30


def test_model_does_not_import_train():
    assert _import_all("model", "train") > 5
