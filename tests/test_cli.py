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
    for item in ("python", "polars", "jax devices", "cupy (GPU arrays)", "jax GPU (model)"):
        assert item in result.output


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "gogooku"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Usage: gogooku" in result.stdout
