"""`phmscale submit JOB --address local`: the README's embedded default. A Ray cluster starts
in the submitting process (dashboard on 127.0.0.1, token auth on as Ray's `ray.init` default,
the token kept out of the environment and out of ~/.ray), runs the job, and ends with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.launch.conftest import QUICKSTART, TINY, base_env

pytestmark = pytest.mark.slow


def test_submit_local_runs_to_the_end(tmp_path, mlflow_db):
    home_token = Path.home() / ".ray" / "auth_token"
    had_token = home_token.exists()
    env = base_env(MLFLOW_TRACKING_URI=mlflow_db)
    result = run_cli("submit", QUICKSTART, *TINY, "--set", "name=local-job",
                     "--set", "train.steps=4", "--set", "checkpoint.every=2",
                     "--set", f"checkpoint.dir={tmp_path / 'ck'}", "--address", "local",
                     env=env, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[phmscale] completed at step 4/4" in result.stdout  # followed by default
    assert "SUCCEEDED" in result.stdout
    assert (tmp_path / "ck" / "local-job" / "step_00000004" / "COMPLETE").is_file()
    assert home_token.exists() == had_token  # Ray would have written one
