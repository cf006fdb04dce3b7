"""Real Ray clusters on 127.0.0.1 for the launch tests.

`ray_cluster` (session): `ray start --head --block` with 4 logical CPUs (2 workers of 1 CPU and
a driver fit on a 2-core machine), its own temp dir, token auth explicitly off. It is ended by
signalling the `ray start` process we started (its SIGTERM handler stops the node's processes)
and, failing that, its own process group — never `ray stop`, which kills every Ray process on
the machine by name, other people's clusters included.

`token_cluster` (module): the same with RAY_AUTH_MODE=token and a token in a private file.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
# The job's entrypoint runs `python`: make it ours through a directory holding only that name.
# Prepending the whole venv bin would also switch `ninja` (the venv's pip ninja 1.13 vs the
# system's 1.11 here), and ninja versions disagree on .ninja_log hashes, so DeepSpeed's JIT op
# cache (~/.cache/torch_extensions) would be rebuilt, a minute each time, whenever processes with
# the two PATHs alternate.
SHIM = Path(tempfile.mkdtemp(prefix="phmscale-python-"))
(SHIM / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
(SHIM / "python").chmod(0o755)
atexit.register(shutil.rmtree, SHIM, True)


@dataclass
class Cluster:
    url: str  # the dashboard: what --address takes
    env: dict[str, str]  # the environment a CLI subprocess should run with
    temp_dir: Path
    metrics_url: str = ""  # the node's Prometheus endpoint (where the dashboard's charts read)
    token: str | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN",
                        "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")}
    env["PATH"] = f"{SHIM}{os.pathsep}{env.get('PATH', '')}"  # the job's `python` is ours
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    # Ray Train's controller polls its workers every 2 s by default; a checkpoint is committed
    # (and a dead worker noticed) at the next poll. Tiny jobs checkpoint every few steps.
    env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.5"
    env["RAY_metrics_report_interval_ms"] = "1000"  # dashboard gauges show up within ~1 s
    env.update(extra)
    return env


def _wait_jobs_api(url: str, headers: dict[str, str], proc: subprocess.Popen,
                   log: Path, timeout: float = 120.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if requests.get(url + "/api/jobs/", headers=headers, timeout=3).status_code == 200:
                return
        except requests.exceptions.RequestException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Ray dashboard {url} not ready in {timeout} s:\n"
                               f"{log.read_text()[-3000:]}")
        time.sleep(0.5)


def start_cluster(env: dict[str, str], num_cpus: int = 4,
                  headers: dict[str, str] | None = None) -> Cluster:
    # A short temp dir: Ray's unix socket paths must stay under ~107 characters.
    temp_dir = Path(tempfile.mkdtemp(prefix="phmray-", dir="/tmp"))
    port, dash, metrics = free_port(), free_port(), free_port()
    log = temp_dir / "ray-start.log"
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--num-cpus={num_cpus}",
         "--num-gpus=0", f"--temp-dir={temp_dir}", "--include-dashboard=true",
         "--disable-usage-stats", f"--dashboard-agent-listen-port={free_port()}",
         f"--metrics-export-port={metrics}"],
        env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
        cwd=temp_dir,
    )
    url = f"http://127.0.0.1:{dash}"
    cluster = Cluster(url, env, temp_dir, f"http://127.0.0.1:{metrics}/metrics", proc=proc)
    try:
        _wait_jobs_api(url, headers or {}, proc, log)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    proc = cluster.proc
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
        try:
            proc.wait(timeout=5)  # a graceful stop can take 30 s; the tests do not need one
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we created for it, nothing else
            proc.wait(timeout=10)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Cluster]:
    cluster = start_cluster(base_env(RAY_AUTH_MODE="disabled"))
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory) -> Iterator[Cluster]:
    token = secrets.token_hex(32)
    token_file = tmp_path_factory.mktemp("token") / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = base_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
    cluster = start_cluster(env, num_cpus=2, headers={"Authorization": f"Bearer {token}"})
    cluster.token = token
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory) -> str:
    """One SQLite MLflow store for the session, created (schema migrated, seconds) up front
    instead of by the first job's rank 0. Tests tell their runs apart by job name."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    # The quickstart's experiment, with its artifacts in this session's tmp dir (`submit`
    # would create it in the CLI's working directory, the repository, if it did not exist).
    MlflowClient(uri).create_experiment("quickstart", artifact_location=str(root / "mlruns"))
    return uri


@pytest.fixture
def job_env(mlflow_db: str) -> dict[str, str]:
    """A CLI environment logging to the session's MLflow store, token auth off."""
    return base_env(RAY_AUTH_MODE="disabled", MLFLOW_TRACKING_URI=mlflow_db)


TINY = [  # the quickstart, shrunk: 2 workers, a one-block model, a checkpoint every few steps
    "--set", "resources.workers=2", "--set", "resources.cpus_per_worker=1",
    "--set", "model.dim=16", "--set", "model.depth=1", "--set", "model.heads=2",
    "--set", "data.loader_workers=0", "--set", "train.log_every=1",
    "--set", "train.eval_every=1000", "--set", "data.batch_size=16",
    "--set", "train.schedule.warmup_steps=0",
]
QUICKSTART = str(ROOT / "jobs" / "quickstart.yaml")
