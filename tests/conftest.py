"""Shared fixtures. Expensive ones (a Ray cluster, an MLflow server) are session-scoped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `phmscale` console entry point in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "phmscale", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 90.0) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.5)


class ServerURI(str):
    """The server's URI, which also knows where the server keeps everything (`store_root`)."""

    store_root: Path


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend, for the whole session."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )
    uri = ServerURI(f"http://127.0.0.1:{port}")
    uri.store_root = root
    try:
        wait_http(uri + "/health")
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """builtin: datasets are packed once per test session, into a temp cache every test and
    subprocess shares (subprocesses inherit the environment)."""
    os.environ["PHMSCALE_CACHE"] = str(tmp_path_factory.mktemp("phmscale-cache"))
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    yield


@pytest.fixture(autouse=True)
def _no_leaked_tracking_uri(monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI into this process's environment;
    without this, one in-process tracking test would redirect every later CLI subprocess."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
