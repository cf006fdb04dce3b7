"""launch/ without a cluster: token lookup, job-id dispatch, what a submission carries, and the
errors a user can cause before (or instead of) reaching a cluster."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from phmscale.errors import InvalidInputError
from phmscale.launch import auth
from phmscale.launch.backend import backend_for, is_handle
from phmscale.launch.errors import (
    ClusterAuthError,
    ClusterUnreachable,
    NoClusterAddress,
    UnknownJob,
)
from phmscale.launch.package import (
    absolute_tracking_uri,
    build_submission,
    public_uri,
    resolve_for_cluster,
)
from phmscale.launch.ray_jobs import resolve_address
from phmscale.spec import load_job
from tests.conftest import ROOT, free_port, run_cli
from tests.launch.conftest import QUICKSTART, base_env


@pytest.fixture
def no_token_env(monkeypatch, tmp_path):
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS",
                "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_token_lookup_follows_rays_order(no_token_env, monkeypatch):
    home = no_token_env / "home"
    assert auth.find_token() is None
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("from-default-file\n")
    assert auth.find_token().value == "from-default-file"
    path = no_token_env / "tok"
    path.write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert auth.find_token().value == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    token = auth.find_token()
    assert token.value == "from-env" and token.source == "$RAY_AUTH_TOKEN"
    assert "from-env" not in repr(token) and "from-env" not in str(token)


def test_unreadable_token_path_is_a_clear_error(no_token_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(no_token_env / "missing"))
    with pytest.raises(ClusterAuthError, match="RAY_AUTH_TOKEN_PATH names .*missing"):
        auth.find_token()


def test_job_handles_dispatch():
    assert not is_handle("quickstart-20250101-000000-ab12")
    assert not is_handle("http://127.0.0.1:8265")
    assert is_handle("kubernetes://session/app-123")
    with pytest.raises(UnknownJob, match="'nosuch' is not a TorchX scheduler"):
        backend_for("nosuch://session/app-123", None)


def test_addresses(no_token_env, monkeypatch):
    with pytest.raises(NoClusterAddress, match="--address"):
        resolve_address(None)
    assert resolve_address("127.0.0.1:8265") == "http://127.0.0.1:8265"
    assert resolve_address("http://head:8265/") == "http://head:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://from-env:8265")
    assert resolve_address(None) == "http://from-env:8265"
    assert resolve_address("http://flag:8265") == "http://flag:8265"  # the flag wins
    with pytest.raises(NoClusterAddress, match="Ray Client"):
        resolve_address("ray://head:10001")


def test_nothing_listening_is_unreachable():
    with pytest.raises(ClusterUnreachable, match="no Ray cluster answers"):
        auth.cluster_auth_mode(f"http://127.0.0.1:{free_port()}")


def test_spec_resolved_on_the_submitting_side(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # where the user typed `phmscale submit`
    spec = load_job(QUICKSTART, ["data.train=shards/train-{000000..000003}.tar",
                                 "data.val=s3://bucket/val-000000.tar"])
    resolved, env = resolve_for_cluster(spec, cwd=tmp_path)
    assert resolved.tracking.uri == f"sqlite:///{tmp_path}/mlflow.db" and env == {}
    assert resolved.checkpoint_dir == f"{tmp_path}/checkpoints/{spec.name}/{spec.fingerprint()}"
    assert resolved.fingerprint() == spec.fingerprint()  # the same run, wherever it runs
    assert resolved.data.train == f"{tmp_path}/shards/train-{{000000..000003}}.tar"
    assert resolved.data.val == "s3://bucket/val-000000.tar"
    assert absolute_tracking_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"
    assert absolute_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert public_uri("https://user:pw@mlflow.example:443/x") == "https://mlflow.example:443/x"


def test_submission_carries_job_and_code_but_no_secret(tmp_path, monkeypatch):
    secret = "s3cr3t-token-value"
    monkeypatch.setenv("RAY_AUTH_TOKEN", secret)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:pw@mlflow.example:5000")
    spec = load_job(QUICKSTART, ["resources.workers=2"])
    sub = build_submission(spec, code="ship", cwd=tmp_path)
    try:
        job_yaml = Path(sub.runtime_env["working_dir"]) / "job.yaml"
        assert load_job(job_yaml).name == spec.name
        assert sub.runtime_env["py_modules"][0].endswith("phmscale")
        assert "phmscale.launch.ray_entry" in sub.entrypoint
        assert sub.submission_id in sub.entrypoint and sub.spec_hash == spec.spec_hash()
        sent = json.dumps([sub.runtime_env, sub.metadata, sub.entrypoint]) + job_yaml.read_text()
        assert secret not in sent
        assert "pw@" not in json.dumps(sub.metadata)
        assert all(isinstance(v, str) and len(v) <= 512 for v in sub.metadata.values())
        assert sub.metadata["phmscale.job"] == spec.name
    finally:
        import shutil

        shutil.rmtree(sub.workdir)
    installed = build_submission(spec, code="installed", cwd=tmp_path)
    assert "py_modules" not in installed.runtime_env
    import shutil

    shutil.rmtree(installed.workdir)


def test_submit_side_imports_neither_torch_nor_mlflow():
    """Validating and packaging a job (what `phmscale submit` does before the Jobs API call)
    must not pay for torch, webdataset or MLflow (~2.5 s on 2 cores): the cluster does."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from phmscale.data.check import check_job_data\n"
        "from phmscale.launch.package import build_submission\n"
        "from phmscale.launch.ray_jobs import RayJobs\n"
        "from phmscale.spec import load_job\n"
        "spec = load_job(Path('jobs/quickstart.yaml'))\n"
        "check_job_data(spec, 'q', 1)\n"
        "import shutil\n"
        "shutil.rmtree(build_submission(spec, code='ship', local=False).workdir)\n"
        "print(sorted(m for m in ('torch', 'webdataset', 'mlflow', 'deepspeed') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


class _Listener:
    """A TCP port that counts who connects (to prove nobody did)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self.done.set()
        self.thread.join()
        self.sock.close()


def test_invalid_job_never_reaches_the_cluster():
    listener = _Listener()
    try:
        result = run_cli("submit", QUICKSTART, "--set", "model.dim=63",
                         "--address", f"http://127.0.0.1:{listener.port}", env=base_env())
    finally:
        listener.close()
    assert result.returncode == 2, result.stderr
    assert "model" in result.stderr and "Traceback" not in result.stderr
    assert listener.connections == 0


def test_cluster_errors_are_messages_not_tracebacks():
    dead = f"http://127.0.0.1:{free_port()}"
    result = run_cli("status", "some-job", "--address", dead, env=base_env())
    assert result.returncode == 3, result.stderr
    assert "no Ray cluster answers" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("list", env=base_env())
    assert result.returncode == 2 and "RAY_ADDRESS" in result.stderr


def test_secrets_travel_in_the_environment_never_in_the_job(tmp_path, monkeypatch):
    """A ${VAR} secret ships as the reference (job.yaml) and its value in env_vars, or
    nowhere with --no-forward-secrets; MLflow credentials leave the URI for MLflow's own
    variables; the metadata shows neither."""
    secret, password = "tok_9Qx7Lw3Rz", "pw_4Hn8Jc2Kd"
    monkeypatch.setenv("PHM_TOKEN", secret)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{password}@mlflow.example:5000")
    job = tmp_path / "job.yaml"
    job.write_text(Path(QUICKSTART).read_text().replace(
        "  experiment: quickstart", "  experiment: quickstart\n  tags: {auth: 'Bearer ${PHM_TOKEN}'}"))
    spec = load_job(job)
    assert spec.public_dump()["tracking"]["tags"] == {"auth": "Bearer ***"}
    for forward in (True, False):
        sub = build_submission(spec, code="installed", cwd=tmp_path, forward_secrets=forward)
        try:
            shipped = (Path(sub.runtime_env["working_dir"]) / "job.yaml").read_text()
            env = sub.runtime_env["env_vars"]
        finally:
            import shutil

            shutil.rmtree(sub.workdir)
        assert secret not in shipped and password not in shipped
        assert "Bearer ${PHM_TOKEN}" in shipped and "http://mlflow.example:5000" in shipped
        assert secret not in json.dumps(sub.metadata) and password not in json.dumps(sub.metadata)
        if forward:
            assert env["PHM_TOKEN"] == secret
            assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == (
                "alice", password)
        else:
            assert not {"PHM_TOKEN", "MLFLOW_TRACKING_PASSWORD"} & set(env)
    monkeypatch.delenv("PHM_TOKEN")  # on a cluster without it, the driver says so (exit 2)
    with pytest.raises(InvalidInputError, match=r"\$\{PHM_TOKEN\} is not set"):
        load_job(job)
