"""Experiments phmscale creates on a sqlite store keep their artifacts next to the database,
whatever the working directory of the process that created them (Ray/TorchX workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mlflow.tracking import MlflowClient

from phmscale.tracking.experiment import artifact_location, ensure_experiment
from tests.conftest import ROOT, run_cli

# One run through the real hook (start, 3 steps, a checkpoint, the end), as rank 0 does it.
_ONE_RUN = """
import sys
from pathlib import Path
from phmscale.tracking.mlflow_hook import MLflowHook
from phmscale.train.hooks import RunInfo
from phmscale.train.loop import TrainResult
from tests.train._tiny import tiny_spec

uri, name, ckpt = sys.argv[1:4]
spec = tiny_spec(Path(ckpt), **{"name": name, "tracking.experiment": "shared"})
hook = MLflowHook(uri, launcher="test", system_metrics=False)
hook.on_start(RunInfo(spec=spec, rank=0, world_size=1, start_step=0, resumed=False,
                      run_id=None))
for step in (1, 2, 3):
    hook.on_metrics(step, {"loss": 1.0 / step})
hook.on_checkpoint(3, ckpt)
hook.on_end(TrainResult(status="completed", step=3, start_step=0, wall_s=0.1,
                        eval={"val_accuracy": 0.5}, best_quality=0.5))
print(hook.run_id)
"""


def test_location_follows_the_sqlite_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = (tmp_path / "mlruns" / "exp").as_uri()
    assert artifact_location("sqlite:///mlflow.db", "exp") == here  # relative: like sqlite
    assert artifact_location(f"sqlite:///{tmp_path}/mlflow.db", "exp") == here
    assert artifact_location("sqlite:////srv/db/m.db?mode=rw", "a/b c") == \
        "file:///srv/db/mlruns/a_b_c"
    assert artifact_location("sqlite:////srv/m.db", "..") == "file:///srv/mlruns/_"
    for uri in ("http://127.0.0.1:5000", "file:///srv/mlruns", "postgresql://h/db",
                "sqlite:///:memory:"):
        assert artifact_location(uri, "exp") is None


def test_ensure_experiment_is_idempotent(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = ensure_experiment(uri, "exp")
    assert ensure_experiment(uri, "exp") == first
    found = MlflowClient(uri).get_experiment(first)
    assert found.artifact_location == (tmp_path / "mlruns" / "exp").as_uri()


def test_two_working_directories_share_one_artifact_folder(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run_ids = {}
    for name in ("first", "second"):  # the first creates the experiment, in its own cwd
        cwd = tmp_path / name
        cwd.mkdir()
        out = subprocess.run([sys.executable, "-c", _ONE_RUN, uri, name, str(cwd / "ck")],
                             cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        run_ids[name] = out.stdout.split()[-1]
        assert not (cwd / "mlruns").exists() and not (cwd / "mlartifacts").exists()

    client = MlflowClient(uri)
    folder = store / "mlruns" / "shared"
    assert client.get_experiment_by_name("shared").artifact_location == folder.as_uri()
    for run_id in run_ids.values():
        assert (folder / run_id / "artifacts" / "job.yaml").is_file()
        assert {"job.yaml", "curves.png"} <= {a.path for a in client.list_artifacts(run_id)}

    other = tmp_path / "elsewhere"  # compare, from a third directory, sees both runs
    other.mkdir()
    result = run_cli("compare", "-e", "shared", "--format", "json", cwd=other,
                     env={"MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["run_id"] for r in rows} == set(run_ids.values())
    assert {r["name"] for r in rows} == {"first", "second"}
