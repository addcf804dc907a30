"""The CLI runs, explains itself, and reports user errors as one line."""

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from train.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "info" in result.output


def test_info_reports_packages_and_gpu_status():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    for item in ("python", "polars", "jax devices", "cupy (GPU arrays, graphs)", "jax GPU (model)"):
        assert item in result.output
    assert "cugraph" not in result.output.lower()  # nothing uses it (docs/graph.md)


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "gogooku"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Usage: gogooku" in result.stdout


def test_help_points_to_files_in_the_repo():
    for command in ([], ["etl"], ["fetch"], ["synth"], ["info"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "../shared" not in result.output
    assert "docs/features.md" in " ".join(runner.invoke(app, ["etl", "--help"]).output.split())


def test_package_hints_keep_their_brackets(monkeypatch, tmp_path):
    from etl import backend

    monkeypatch.setattr(backend, "cupy_problem", lambda: "CuPy is not installed")
    (tmp_path / "raw").mkdir()
    args = ["--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "feat")]
    result = runner.invoke(app, ["etl", *args, "--device", "gpu"])
    assert result.exit_code == 2 and "pip install -e '.[gpu]'" in result.output


def test_paths_keep_their_brackets_and_the_summary_is_one_line(tmp_path):
    from test_etl_helpers import make_raw

    from etl.sources.raw_store import write_endpoint

    for eid, df in make_raw(n_stocks=3).items():
        write_endpoint(tmp_path / "raw", eid, df)
    out = tmp_path / ("a_rather_long_folder_name_" * 4) / "runs" / "x[ab]" / "feat"
    result = runner.invoke(app, ["etl", "--raw", str(tmp_path / "raw"), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = result.output.strip().splitlines()[-1]
    assert summary.startswith("etl: ") and f"-> {out}: " in summary and "graph_edges.npz (" in summary
    assert "395 columns (Code, Date and 393 features" in summary
    (out / "catalog.json").unlink()  # now a folder that is not a store: the error names the path as given
    (out / "mine.txt").write_text("x")
    result = runner.invoke(app, ["etl", "--raw", str(tmp_path / "raw"), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 2 and f"error: {out} exists and is not a feature store" in result.output


def test_model_summary_keeps_the_brackets_of_its_path(tmp_path):
    folder = tmp_path / "runs" / "x[ab]"
    folder.mkdir(parents=True)
    path = folder / "tiny.yaml"
    path.write_text((Path(__file__).resolve().parents[1] / "configs" / "model" / "tiny.yaml").read_text())
    result = runner.invoke(app, ["info", "--model", str(path)], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "x[ab]" in " ".join(result.output.split())
