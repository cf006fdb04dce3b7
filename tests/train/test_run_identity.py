"""Runs a user can trust, through `phmscale run` against real DeepSpeed checkpoints and MLflow
on SQLite: a changed job never resumes another job's checkpoint, raising train.steps extends
the same run, one folder serves one live job, a fresh start keeps its own saves, and secrets
from the environment reach no file and no output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

QUICKSTART = str(ROOT / "jobs/quickstart.yaml")
SHORT = ["--set", "train.steps=10", "--set", "checkpoint.every=5", "--set", "train.eval_every=5",
         "--set", "train.log_every=5", "--set", "train.schedule.warmup_steps=0"]


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None, job: str = QUICKSTART):
    return run_cli("run", job, *SHORT, *args, cwd=tmp_path, env=env)


def ok(result) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result.stdout


def runs(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    return client, client.search_runs([experiment.experiment_id])


def test_seed_and_n_variants_train_runs_of_their_own(tmp_path):
    ok(run(tmp_path))
    seed = ok(run(tmp_path, "--set", "train.seed=1"))
    assert "(10 steps this run)" in seed  # not the first run's final checkpoint, 0 steps
    n2 = ok(run(tmp_path, "--set", "model.n=2"))  # not a DeepSpeed state-dict traceback
    assert "(10 steps this run)" in n2
    folders = sorted((tmp_path / "checkpoints" / "quickstart-phm-vit-digits").iterdir())
    assert len(folders) == 3
    records = [json.loads((f / "run.json").read_text()) for f in folders]
    assert {r["fingerprint"] for r in records} == {f.name for f in folders}
    client, found = runs(tmp_path)
    assert len(found) == 3 and {r.info.status for r in found} == {"FINISHED"}
    # each MLflow run is the one its folder records, tagged with the folder's fingerprint
    by_id = {r.info.run_id: r for r in found}
    for record in records:
        assert by_id[record["run_id"]].data.tags["phmscale.fingerprint"] == record["fingerprint"]


def test_named_folder_refuses_another_run_and_more_steps_extend_it(tmp_path):
    named = ["--set", f"checkpoint.dir={tmp_path / 'mine'}"]
    ok(run(tmp_path, *named))
    changed = run(tmp_path, *named, "--set", "train.optimizer.lr=0.01")
    assert changed.returncode == 2, changed.stdout[-2000:] + changed.stderr[-2000:]
    assert "Traceback" not in changed.stderr
    assert "train.optimizer.lr: 0.01 / 0.003" in changed.stderr  # the field, both values
    assert "checkpoint.dir" in changed.stderr  # and what to do
    longer = ok(run(tmp_path, *named, "--set", "train.steps=15"))
    assert "completed at step 15/15" in longer and "(5 steps this run)" in longer
    client, found = runs(tmp_path)
    (only,) = found  # resumed into the run whose fingerprint matches
    assert only.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(only.info.run_id, "loss"))
    assert steps == [5, 10, 15]  # each window logged once


def test_a_second_live_job_on_the_folder_is_refused(tmp_path):
    args = [sys.executable, "-m", "phmscale", "run", QUICKSTART, *SHORT,
            "--set", "train.steps=100000", "--set", "checkpoint.every=50"]
    job_dir = tmp_path / "checkpoints" / "quickstart-phm-vit-digits"
    with (tmp_path / "out.txt").open("w") as out, (tmp_path / "err.txt").open("w") as err:
        first = subprocess.Popen(args, cwd=tmp_path, stdout=out, stderr=err, env=dict(os.environ))
        try:
            deadline = time.monotonic() + 300
            while not list(job_dir.glob("*/step_*/COMPLETE")):  # the first one is training
                assert first.poll() is None, (tmp_path / "err.txt").read_text()[-3000:]
                assert time.monotonic() < deadline
                time.sleep(0.2)
            second = run(tmp_path)  # the same job: the same folder
            assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
            assert "in use by a live job (pid" in second.stderr
            assert "Traceback" not in second.stderr
        finally:
            first.send_signal(signal.SIGTERM)
            first.wait(timeout=120)
    assert first.returncode == 130  # it checkpointed and stopped, untouched by the second
    # The lock dies with its process: the same job now resumes where the first one stopped.
    resumed = run(tmp_path, "--set", "train.steps=100000", "--set", "checkpoint.every=50",
                  "--steps", "1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_a_fresh_start_keeps_its_own_saves(tmp_path):
    ok(run(tmp_path, "--set", "train.steps=20", "--set", "checkpoint.keep=1"))
    (folder,) = (tmp_path / "checkpoints" / "quickstart-phm-vit-digits").iterdir()
    assert sorted(p.name for p in folder.glob("step_*")) == ["step_00000020"]
    # steps=20 again but resume=false: its saves (5, 10, … 20) are the newest, by save time,
    # and keep=1 keeps the newest — never the higher-numbered save of the old run.
    ok(run(tmp_path, "--set", "train.steps=20", "--set", "checkpoint.keep=1",
           "--set", "checkpoint.resume=false", "--steps", "10"))
    assert sorted(p.name for p in folder.glob("step_*")) == ["step_00000010"]
    client, found = runs(tmp_path)
    assert len(found) == 2  # a fresh start is a new MLflow run
    again = ok(run(tmp_path, "--set", "train.steps=20", "--set", "checkpoint.keep=1"))
    assert "(10 steps this run)" in again  # resumed the fresh start's step 10


SECRET, PASSWORD = "hf_s3cr3t_Xq9Zt7", "pw_Kq8Lm2Vn"


def test_env_secrets_reach_no_file_and_no_output(tmp_path, mlflow_server):
    job = yaml.safe_load(Path(QUICKSTART).read_text())
    job["tracking"]["uri"] = mlflow_server.replace("http://", "http://alice:${PHM_PASS}@")
    job["tracking"]["tags"] = {"source": "token ${PHM_TOKEN}", "root": "${PHM_ROOT}"}
    job["tracking"]["run_name"] = "run-${PHM_TOKEN}"
    job["train"]["deepspeed"] = {"comet": {"enabled": False, "api_key": "${PHM_TOKEN}"}}
    job["checkpoint"]["dir"] = str(tmp_path / "ck")
    job["public_env"] = ["PHM_ROOT"]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    env = {"PHM_TOKEN": SECRET, "PHM_PASS": PASSWORD, "PHM_ROOT": "/data/root"}

    validated = run_cli("validate", str(path), env=env, cwd=tmp_path)
    trained = run(tmp_path, env=env, job=str(path))
    for result in (validated, trained):
        ok(result)
        for secret in (SECRET, PASSWORD):
            assert secret not in result.stdout + result.stderr
    assert "http://127.0.0.1" in validated.stdout  # shown, without its userinfo

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)  # a server without auth ignores the password
    (found,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id],
                                  filter_string="tags.root = '/data/root'")
    assert found.data.tags["source"] == "token ***"
    assert found.data.tags["root"] == "/data/root"  # public_env: logged as it is
    assert found.data.params["train.deepspeed.comet.api_key"] != SECRET
    store = Path(mlflow_server.store_root)
    files = [p for p in [*store.rglob("*"), *(tmp_path / "ck").rglob("*")] if p.is_file()]
    assert any(p.suffix == ".pt" for p in files) and any(p.name == "job.yaml" for p in files)
    for file in files:
        data = file.read_bytes()
        for secret in (SECRET, PASSWORD):
            assert secret.encode() not in data, f"{secret} in {file}"
