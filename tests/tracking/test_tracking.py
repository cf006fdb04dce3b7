"""MLflow tracking through the real engine and the real CLI; `compare` tables and plots."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from phmscale.tracking import TrackingUnavailable, check_reachable, spec_params
from phmscale.tracking.mlflow_hook import MLflowHook
from tests.conftest import run_cli
from tests.train._tiny import global_batches, tiny_spec, train_one_rank

EXPECTED_METRICS = {"loss", "lr", "samples_per_s", "tokens_per_s", "data_wait_frac",
                    "flops_per_s", "mfu", "val_accuracy", "params", "twin_params",
                    "savings_ratio", "flops_per_sample", "compute_density"}


def _train(spec, uri, batches, **kw):
    hook = MLflowHook(uri, launcher="test", system_metrics=False)
    return hook, train_one_rank(spec, batches, hook, **kw)


def test_one_run_with_params_metrics_artifacts(tmp_path, mlflow_server):
    spec = tiny_spec(tmp_path, **{"tracking.experiment": "t-server", "train.steps": 10,
                                  "checkpoint.every": 5, "tracking.tags.api_token": "x"})
    hook, result = _train(spec, mlflow_server, global_batches(10, 8))
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("t-server")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.params["model.algebra"] == "phm" and run.data.params["train.steps"] == "10"
    assert EXPECTED_METRICS <= set(run.data.metrics), set(run.data.metrics)
    assert run.data.tags["phmscale.launcher"] == "test"
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"job.yaml", "deepspeed_config.json", "model_summary.json", "model_summary.txt",
            "curves.png"} <= arts
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert steps == list(range(1, 11))


def test_resumed_run_logs_every_step_once(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = tiny_spec(tmp_path, **{"train.steps": 20, "checkpoint.every": 5})
    batches = global_batches(20, 8)
    hook1, r1 = _train(spec, uri, batches, max_steps=12)  # stops (and saves) at step 12
    hook2, r2 = _train(spec, uri, batches)
    assert r2.start_step == 12 and hook2.run_id == hook1.run_id
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("phmscale")
    assert len(client.search_runs([exp.experiment_id])) == 1
    steps = sorted(m.step for m in client.get_metric_history(hook1.run_id, "loss"))
    assert steps == list(range(1, 21))  # every step exactly once across the two runs


def test_secrets_redacted(tmp_path):
    spec = tiny_spec(tmp_path, **{"tracking.tags.api_token": "s3cr3t",
                                  "tracking.tags.db_password": "hunter2",
                                  "tracking.tags.team": "hc"})
    params = spec_params(spec)
    assert params["tracking.tags.api_token"] == "***redacted***"
    assert params["tracking.tags.db_password"] == "***redacted***"
    assert params["tracking.tags.team"] == "hc"
    assert "s3cr3t" not in json.dumps(params)


def test_unreachable_server_fails_fast():
    import time

    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="127.0.0.1:9"):
        check_reachable("http://127.0.0.1:9")
    assert time.monotonic() - t0 < 10


def test_run_cli_with_unreachable_uri_exits_before_training(tmp_path):
    result = run_cli("run", "jobs/quickstart.yaml", "--set", "tracking.uri=http://127.0.0.1:9",
                     "--set", f"checkpoint.dir={tmp_path}/ck")
    assert result.returncode == 3, result.stderr
    assert "unreachable" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "ck").exists()


def test_compare_formats_and_plot(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for i, (alg, n) in enumerate([("phm", 2), ("phm", 4), ("real", None)]):
        sets = {"model.algebra": alg, "train.steps": 6, "checkpoint.every": 6,
                "checkpoint.dir": str(tmp_path / f"ck{i}"), "tracking.experiment": "cmp"}
        if n:
            sets["model.n"] = n
        else:
            sets["model.n"] = "null"
        _train(tiny_spec(tmp_path, **sets), uri, global_batches(6, 8))
    env = {"MLFLOW_TRACKING_URI": uri}
    for fmt in ("table", "csv", "json", "markdown"):
        result = run_cli("compare", "--experiment", "cmp", "--format", fmt, env=env)
        assert result.returncode == 0, result.stderr
        assert "phm" in result.stdout
    rows = json.loads(run_cli("compare", "-e", "cmp", "--format", "json", env=env).stdout)
    assert len(rows) == 3 and all(r["params"] for r in rows)
    png = tmp_path / "pareto.png"
    result = run_cli("compare", "-e", "cmp", "--plot", str(png), env=env)
    assert result.returncode == 0, result.stderr
    for path in (png, tmp_path / "pareto-loss.png"):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        from PIL import Image

        with Image.open(path) as image:
            assert image.size[0] > 300
    missing = run_cli("compare", "-e", "nope", env=env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
