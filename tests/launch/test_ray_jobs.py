"""Real Ray on 127.0.0.1 through the real CLI: submit/status/logs/list/stop, resume after a
stop, and a training worker killed mid-run. Tiny jobs: the quickstart with 2 workers."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.launch.conftest import QUICKSTART, TINY

pytestmark = pytest.mark.slow

ACTIVE = {"PENDING", "RUNNING"}


def submit(cluster, env, *sets: str, name: str, ckpt: Path) -> str:
    result = run_cli("submit", QUICKSTART, *TINY, "--set", f"name={name}",
                     "--set", f"checkpoint.dir={ckpt}", *sets, "--address", cluster.url,
                     env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"^submitted (\S+)$", result.stdout, re.M)
    assert match, result.stdout
    return match.group(1)


def status(cluster, env, job_id: str) -> dict:
    result = run_cli("status", job_id, "--json", "--address", cluster.url, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_until(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def checkpoints(ckpt: Path, name: str) -> list[int]:
    """Steps of the complete checkpoints in Ray Train's storage for job `name`."""
    run_dir = ckpt / name
    if not run_dir.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in run_dir.glob("step_*") if (p / "COMPLETE").is_file())


def committed(ckpt: Path, name: str) -> bool:
    """Ray Train has committed a checkpoint of job `name`: its snapshot is in storage. (A
    `step_*` folder shows up when the upload ends, up to one controller poll earlier; a job
    stopped in between has nothing to resume from.)"""
    return (ckpt / name / "checkpoint_manager_snapshot.json").is_file()


def gauge_values(cluster, job_id: str) -> dict[str, float]:
    """phmscale's gauges for one submission, as Ray exports them (`ray_` prefix)."""
    import urllib.request

    text = urllib.request.urlopen(cluster.metrics_url, timeout=5).read().decode()
    found = {}
    for line in text.splitlines():
        match = re.match(r"ray_(phmscale_\w+)\{(.*)\} (\S+)$", line)
        if match and f'submission_id="{job_id}"' in match.group(2):
            found[match.group(1)] = float(match.group(3))
    return found


def mlflow_runs(env, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.`phmscale.job` = '{name}'")
    return client, runs


def assert_logged_once(client, run_id: str, last_step: int) -> None:
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert sorted(steps) == list(range(1, last_step + 1)), steps  # log_every=1: each once


def test_submit_status_logs_list(ray_cluster, job_env, tmp_path):
    name = "ray-basic"
    ckpt = tmp_path / "ck"
    job_id = submit(ray_cluster, job_env, "--set", "train.steps=6", "--set", "checkpoint.every=3",
                    name=name, ckpt=ckpt)
    assert job_id.startswith(name)
    first = status(ray_cluster, job_env, job_id)
    assert first["status"] in ACTIVE | {"SUCCEEDED"}
    assert first["metadata"]["phmscale.job"] == name
    assert first["metadata"]["phmscale.resources"] == "2 workers x 1 CPU"

    # Following from (nearly) the start must still end with the driver's very last line.
    followed = run_cli("logs", job_id, "--follow", "--address", ray_cluster.url, env=job_env,
                       timeout=300)
    assert followed.returncode == 0, followed.stderr
    assert "2 workers, starting from step 0 of 6" in followed.stdout
    assert "[phmscale] step 6/6" in followed.stdout
    assert "[phmscale] completed at step 6/6" in followed.stdout.splitlines()[-1] or \
        "[phmscale] completed at step 6/6" in followed.stdout

    final = status(ray_cluster, job_env, job_id)
    assert final["status"] == "SUCCEEDED", final["message"]
    assert final["end_time"] >= final["start_time"]
    assert checkpoints(ckpt, name)[-1] == 6  # kept in Ray Train storage, engine layout

    client, runs = mlflow_runs(job_env, name)
    assert len(runs) == 1
    run = runs[0]
    assert final["mlflow_run_id"] == run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["phmscale.launcher"] == "ray"
    assert run.data.tags["phmscale.world_size"] == "2"
    assert run.data.tags["phmscale.spec_hash"] == final["metadata"]["phmscale.spec_hash"]
    assert_logged_once(client, run.info.run_id, 6)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"job.yaml", "curves.png"} <= artifacts  # in the store's mlruns, not Ray's temp dir
    assert run.info.artifact_uri.startswith(str(Path(job_env["MLFLOW_TRACKING_URI"][10:]).parent))

    assert followed.stdout.count("[phmscale] step 3/6") == 1  # one line per step, not two

    listed = run_cli("list", "--json", "--address", ray_cluster.url, env=job_env)
    assert listed.returncode == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["job_id"] == job_id)
    assert row["status"] == "SUCCEEDED" and row["mlflow_run_id"] == run.info.run_id
    table = run_cli("list", "--address", ray_cluster.url, env={**job_env, "COLUMNS": "200"})
    assert job_id in table.stdout and "SUCCEEDED" in table.stdout


def test_unknown_job_and_invalid_spec(ray_cluster, job_env):
    result = run_cli("status", "no-such-job", "--address", ray_cluster.url, env=job_env)
    assert result.returncode == 2
    assert "no job 'no-such-job'" in result.stderr and "Traceback" not in result.stderr

    before = json.loads(run_cli("list", "--json", "--all", "--address", ray_cluster.url,
                                env=job_env).stdout)
    bad = run_cli("submit", QUICKSTART, "--set", "resources.workers=0", "--address",
                  ray_cluster.url, env=job_env)
    assert bad.returncode == 2 and "resources.workers" in bad.stderr
    after = json.loads(run_cli("list", "--json", "--all", "--address", ray_cluster.url,
                               env=job_env).stdout)
    assert len(after) == len(before)


def test_stop_then_resubmit_resumes_with_one_mlflow_run(ray_cluster, job_env, tmp_path):
    name = "ray-stop-resume"
    ckpt = tmp_path / "ck"
    sets = ("--set", "train.steps=100", "--set", "checkpoint.every=10")
    job_id = submit(ray_cluster, job_env, *sets, name=name, ckpt=ckpt)
    wait_until(lambda: committed(ckpt, name), 180, "the first committed checkpoint")
    # live metrics: rank 0's gauges reach the node's Prometheus endpoint (the dashboard's source)
    gauges = wait_until(lambda: gauge_values(ray_cluster, job_id), 30, "the dashboard gauges")
    assert {"phmscale_step", "phmscale_loss", "phmscale_samples_per_s"} <= set(gauges)
    assert gauges["phmscale_step"] >= 1 and gauges["phmscale_samples_per_s"] > 0
    # the same job again while this one runs: refused, nothing interleaves in its storage
    twin = run_cli("submit", QUICKSTART, *TINY, "--set", f"name={name}",
                   "--set", f"checkpoint.dir={ckpt}", *sets, "--address", ray_cluster.url,
                   env=job_env, timeout=120)
    assert twin.returncode == 2 and "in use by a live job" in twin.stderr, twin.stderr
    assert "Traceback" not in twin.stderr
    stopped = run_cli("stop", job_id, "--address", ray_cluster.url, env=job_env)
    assert stopped.returncode == 0, stopped.stderr
    assert f"{job_id}: STOPPED" in stopped.stdout
    logs = run_cli("logs", job_id, "--address", ray_cluster.url, env=job_env).stdout
    # The workers checkpointed at the step they were on, not at the last `every` boundary.
    at = re.search(r"\[phmscale\] stopped at step (\d+)/100", logs)
    assert at, "\n".join(line for line in logs.splitlines() if "[phmscale]" in line)[-3000:]
    stop_step = int(at.group(1))
    kept = checkpoints(ckpt, name)
    assert kept and kept[-1] == stop_step < 100
    client, runs = mlflow_runs(job_env, name)
    if len(runs) != 1 or runs[0].info.status != "KILLED":
        said = [line for line in logs.splitlines() if "[phmscale]" in line][-8:]
        pytest.fail(f"after stop: {[r.info.status for r in runs]}\n" + "\n".join(said))

    again = submit(ray_cluster, job_env, *sets, name=name, ckpt=ckpt)
    followed = run_cli("logs", again, "--follow", "--address", ray_cluster.url, env=job_env,
                       timeout=300)
    resumed = re.search(r"resuming from step (\d+) of 100", followed.stdout)
    assert resumed, followed.stdout[-4000:]
    assert int(resumed.group(1)) == stop_step  # committed before the driver exited
    final = status(ray_cluster, job_env, again)
    assert final["status"] == "SUCCEEDED", final["message"]
    client, runs = mlflow_runs(job_env, name)
    assert len(runs) == 1, [r.info.run_id for r in runs]
    assert runs[0].info.status == "FINISHED"
    assert final["mlflow_run_id"] == runs[0].info.run_id
    tags = runs[0].data.tags  # the run names both submissions
    assert f"phmscale.ray_job.{job_id}" in tags and f"phmscale.ray_job.{again}" in tags
    assert_logged_once(client, runs[0].info.run_id, 100)


def test_killed_worker_restarts_from_checkpoint(ray_cluster, job_env, tmp_path):
    from ray.util.state import list_actors

    name = "ray-fault"
    ckpt = tmp_path / "ck"
    job_id = submit(ray_cluster, job_env, "--set", "train.steps=100",
                    "--set", "checkpoint.every=10", name=name, ckpt=ckpt)
    wait_until(lambda: committed(ckpt, name), 180, "the first committed checkpoint")
    ray_job = status(ray_cluster, job_env, job_id)["native_id"]  # the driver's Ray job id
    workers = list_actors(address=ray_cluster.url, detail=True,
                          filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE"),
                                   ("job_id", "=", ray_job)])
    assert len(workers) == 2, workers
    victim = max(workers, key=lambda a: a.pid)  # either rank will do
    os.kill(victim.pid, signal.SIGKILL)

    followed = run_cli("logs", job_id, "--follow", "--address", ray_cluster.url, env=job_env,
                       timeout=300)
    assert re.search(r"resuming from step \d+ of 100", followed.stdout), followed.stdout[-3000:]
    final = status(ray_cluster, job_env, job_id)
    assert final["status"] == "SUCCEEDED", final["message"]
    assert checkpoints(ckpt, name)[-1] == 100
    client, runs = mlflow_runs(job_env, name)
    assert len(runs) == 1, [r.info.run_id for r in runs]
    assert runs[0].info.status == "FINISHED"
    assert_logged_once(client, runs[0].info.run_id, 100)
