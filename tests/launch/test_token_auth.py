"""A Ray cluster with token authentication (RAY_AUTH_MODE=token, Ray 2.60): the CLI works with
the token from $RAY_AUTH_TOKEN or $RAY_AUTH_TOKEN_PATH, and fails clearly without it or with a
wrong one. The token appears in no runtime_env, job log or CLI output."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import run_cli
from tests.launch.conftest import QUICKSTART, TINY, base_env

pytestmark = pytest.mark.slow


@pytest.fixture
def client_env(tmp_path, mlflow_db):
    """A client with no token anywhere: no variables, and a HOME without ~/.ray/auth_token."""
    home = tmp_path / "home"
    home.mkdir()
    return base_env(HOME=str(home), MLFLOW_TRACKING_URI=mlflow_db)


def test_missing_and_wrong_tokens_fail_clearly(token_cluster, client_env, tmp_path):
    result = run_cli("list", "--address", token_cluster.url, env=client_env)
    assert result.returncode == 4, result.stderr
    assert "requires token authentication" in result.stderr
    assert "RAY_AUTH_TOKEN" in result.stderr and "~/.ray/auth_token" in result.stderr
    assert "Traceback" not in result.stderr

    wrong = {**client_env, "RAY_AUTH_TOKEN": "0" * 64}
    result = run_cli("status", "any-job", "--address", token_cluster.url, env=wrong)
    assert result.returncode == 4, result.stderr
    assert "rejected the authentication token" in result.stderr
    assert "$RAY_AUTH_TOKEN" in result.stderr and "0" * 64 not in result.stderr
    assert "Traceback" not in result.stderr

    # an invalid job is still rejected first, without a token and without the cluster
    result = run_cli("submit", QUICKSTART, "--set", "train.steps=0", "--address",
                     token_cluster.url, env=client_env)
    assert result.returncode == 2


def test_submit_with_token(token_cluster, client_env, tmp_path):
    token = token_cluster.token
    path = tmp_path / "token"
    path.write_text(token + "\n")
    by_path = {**client_env, "RAY_AUTH_TOKEN_PATH": str(path)}
    listed = run_cli("list", "--json", "--address", token_cluster.url, env=by_path)
    assert listed.returncode == 0, listed.stderr

    by_env = {**client_env, "RAY_AUTH_TOKEN": token}
    submitted = run_cli("submit", QUICKSTART, *TINY, "--set", "name=token-job",
                        "--set", "train.steps=4", "--set", "checkpoint.every=4",
                        "--set", f"checkpoint.dir={tmp_path / 'ck'}",
                        "--address", token_cluster.url, env=by_env, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    job_id = re.search(r"^submitted (\S+)$", submitted.stdout, re.M).group(1)
    status = run_cli("status", job_id, "--json", "--address", token_cluster.url, env=by_env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] in ("PENDING", "RUNNING", "SUCCEEDED")

    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(token_cluster.url, headers={"Authorization": f"Bearer {token}"})
    info = client.get_job_info(job_id)
    assert token not in json.dumps(info.runtime_env) and token not in info.entrypoint

    stopped = run_cli("stop", job_id, "--address", token_cluster.url, env=by_env)
    assert stopped.returncode == 0, stopped.stderr
    logs = run_cli("logs", job_id, "--address", token_cluster.url, env=by_env)
    assert logs.returncode == 0 and "Running entrypoint" in logs.stdout
    for output in (submitted, status, stopped, logs):
        assert token not in output.stdout + output.stderr
