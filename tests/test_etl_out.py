"""Nothing lost: `gogooku etl` builds beside `--out` and swaps the store in when complete. An error, Ctrl-C or
SIGKILL leaves the old store as it was, files the store did not write survive a rebuild, and the next run
needs no cleanup."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_etl_helpers import make_raw
from typer.testing import CliRunner

from etl.sources.raw_store import write_endpoint
from etl.store import feature_store as store
from train.cli import app

DQ = "prices_daily_quotes"


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    for eid, df in make_raw(n_stocks=6).items():
        write_endpoint(raw, eid, df)
    return raw


def _etl(raw: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["etl", "--raw", str(raw), "--out", str(out), "--device", "cpu", *extra])


def _digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path -> sha256): the whole store as it is on disk."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _add_user_files(out: Path) -> None:
    """A note, a checkpoint folder and a file inside a year partition: none of them the store's."""
    (out / "notes.txt").write_text("my notes")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "step_100.bin").write_bytes(b"\x00\x01")
    (next(out.glob("year=*")) / "README.md").write_text("about this year")


def test_rebuild_keeps_files_the_store_did_not_write(tmp_path, raw_dir):
    out = tmp_path / "feat"
    assert _etl(raw_dir, out).exit_code == 0
    _add_user_files(out)
    mine = {k: v for k, v in _digest(out).items() if not store.is_store_file(Path(k))}
    assert len(mine) == 3
    result = _etl(raw_dir, out)
    assert result.exit_code == 0, result.output
    after = _digest(out)
    assert {k: after[k] for k in mine} == mine  # moved into the new store, unchanged
    assert store.scan(out).collect().height > 0 and _siblings(out) == []


def test_a_failed_rebuild_leaves_the_old_store_and_nothing_beside_it(tmp_path, raw_dir):
    out = tmp_path / "feat"
    assert _etl(raw_dir, out).exit_code == 0
    _add_user_files(out)
    before = _digest(out)
    bad = tmp_path / "bad_raw"
    for eid, df in make_raw(n_stocks=6).items():
        write_endpoint(bad, eid, df)
    (bad / DQ / "zz.parquet").write_bytes(b"PAR1 cut short")
    result = _etl(bad, out)
    assert result.exit_code == 2 and "not a readable Parquet file" in result.output
    assert _digest(out) == before and _siblings(out) == []
    (tmp_path / "feat2").mkdir()
    assert _etl(bad, tmp_path / "feat2").exit_code == 2
    assert not (tmp_path / "feat2").exists() or not any((tmp_path / "feat2").iterdir())


def test_a_folder_that_is_not_a_store_is_refused_untouched(tmp_path, raw_dir):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("chapter 1")
    result = _etl(raw_dir, out)
    assert result.exit_code == 2 and "is not a feature store" in " ".join(result.output.split())
    assert _digest(out) == {"thesis.tex": hashlib.sha256(b"chapter 1").hexdigest()}
    assert _siblings(out) == []


def test_leftovers_of_a_killed_swap_are_finished_by_the_next_run(tmp_path, raw_dir):
    """A kill after the old store was moved aside: the next run puts it back (new store never arrived) or
    hands its other files to the new store (it had), before it builds."""
    out = tmp_path / "feat"
    assert _etl(raw_dir, out).exit_code == 0
    _add_user_files(out)
    before = _digest(out)
    dead = 2**22 + 7  # above the default pid_max: no such process
    aside = tmp_path / f".feat.gogooku-old-{dead}"
    out.rename(aside)
    store.recover(out)
    assert _digest(out) == before and not aside.exists()
    # the new store arrived, the old one still holds the user's files
    assert _etl(raw_dir, tmp_path / "new").exit_code == 0
    out.rename(aside)
    (tmp_path / "new").rename(out)
    result = _etl(raw_dir, out)
    assert result.exit_code == 0, result.output
    after = _digest(out)
    assert all(after[k] == v for k, v in before.items() if not store.is_store_file(Path(k)))
    assert _siblings(out) == []


def _start_build(raw: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """`gogooku etl` in a real process, one stock per chunk; returns once its first part is written."""
    cmd = [sys.executable, "-m", "train", "etl", "--raw", str(raw), "--out", str(out), "--device", "cpu"]
    proc = subprocess.Popen(
        [*cmd, "--chunk", "1", "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    build = out.parent / f".{out.name}.gogooku-build-{proc.pid}"
    deadline = time.monotonic() + 120
    while not list(build.glob("year=*/part-*.parquet")):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the build never wrote a part"
        time.sleep(0.02)
    return proc, build


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_a_killed_build_keeps_the_old_store_and_the_rerun_works(tmp_path, raw_dir, sig):
    out = tmp_path / "feat"
    assert _etl(raw_dir, out).exit_code == 0
    _add_user_files(out)
    before = _digest(out)
    proc, build = _start_build(raw_dir, out)
    os.kill(proc.pid, sig)
    output = proc.communicate(timeout=120)[0]
    assert _digest(out) == before
    if sig == signal.SIGINT:
        assert proc.returncode == 2 and "interrupted" in output and "Traceback" not in output, output
        assert _siblings(out) == []
    else:
        assert build.exists()  # nothing ran to clean up
    result = _etl(raw_dir, out)
    assert result.exit_code == 0, result.output
    after = _digest(out)
    assert all(after[k] == v for k, v in before.items() if not store.is_store_file(Path(k)))
    assert _siblings(out) == []
