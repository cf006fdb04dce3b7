"""`phmscale sweep` on a real Ray cluster on 127.0.0.1, through the CLI: a 2×2 grid ends with
one MLflow parent and four FINISHED child runs that `compare --sweep` shows and `list` counts;
a resubmitted finished sweep runs nothing; a sweep stopped mid-cell resumes that cell (one
cell: the stop path is per cell, and each cell costs ~40 s of start-up on 2 cores)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.launch.conftest import QUICKSTART, TINY
from tests.launch.test_ray_jobs import checkpoints, committed, status, wait_until

pytestmark = pytest.mark.slow

ONE_WORKER = [*TINY, "--set", "resources.workers=1", "--set", "train.eval_every=10"]


def sweep(cluster, env, ckpt: Path, *args: str, timeout: float = 600):
    return run_cli("sweep", QUICKSTART, *ONE_WORKER, "--set", f"checkpoint.dir={ckpt}",
                   *args, "--address", cluster.url, env=env, timeout=timeout)


def sweep_id(result) -> str:
    match = re.search(r"^sweep (\S+)$", result.stdout, re.M)
    assert match, result.stderr[-3000:]
    return match.group(1)


def runs_of(env, sweep: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, filter_string=f"tags.`phmscale.sweep` = '{sweep}'")
    parents = [r for r in runs if r.data.tags.get("phmscale.sweep_parent") == "1"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_grid_sweep_compare_list_and_resubmit(ray_cluster, job_env, tmp_path):
    ckpt = tmp_path / "ck"
    args = ("--grid", "model.n=2,4", "--seeds", "2", "--set", "train.steps=20",
            "--set", "checkpoint.every=10", "--max-concurrent", "2", "--wait")
    done = sweep(ray_cluster, job_env, ckpt, *args)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    sid = sweep_id(done)
    parents, children = runs_of(job_env, sid)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["cells_finished"] == 4
    assert parents[0].data.metrics["overhead_ratio"] > 0
    assert sorted(r.data.tags["phmscale.cell"] for r in children) == [
        "n=2,seed=0", "n=2,seed=1", "n=4,seed=0", "n=4,seed=1"]
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.params["model.n"] for r in children} == {"2", "4"}

    shown = run_cli("compare", "--sweep", sid, "--format", "json", "--plot",
                    str(tmp_path / "pareto.png"), env=job_env)
    assert shown.returncode == 0, shown.stderr
    table = json.loads(shown.stdout[:shown.stdout.rindex("}") + 1])
    assert table["axes"] == ["model.n", "train.seed"] and len(table["cells"]) == 4
    groups = {g["model.n"]: g for g in table["groups"]}
    assert set(groups) == {"2", "4"} and groups["4"]["seeds"] == 2
    assert groups["4"]["params"] < groups["2"]["params"]  # 1/n parameters
    assert (tmp_path / "pareto.png").stat().st_size > 0

    listed = run_cli("list", "--json", "--address", ray_cluster.url, env=job_env)
    (record,) = [r for r in json.loads(listed.stdout)
                 if r["metadata"].get("phmscale.sweep_id") == sid]
    assert record["sweep_progress"]["done"] == 4 and record["sweep_progress"]["left"] == 0

    again = sweep(ray_cluster, job_env, ckpt, *args)  # every cell finished: nothing submitted
    assert again.returncode == 0 and "nothing to run" in again.stdout, again.stderr[-2000:]
    assert "submitted" not in again.stdout
    assert len(runs_of(job_env, sid)[1]) == 4


def test_stopped_sweep_resumes_its_cell(ray_cluster, job_env, tmp_path):
    ckpt = tmp_path / "ck"
    # long enough (~10 s of steps) that the stop lands inside the first cell
    # (a checkpoint, each committed through Ray Train, costs ~0.5 s: every 100 steps)
    args = ("--grid", "model.n=2", "--set", "train.steps=1500", "--set",
            "checkpoint.every=100", "--set", "train.eval_every=100", "--set",
            "train.log_every=50", "--max-concurrent", "1")
    started = sweep(ray_cluster, job_env, ckpt, *args, "--no-wait")
    assert started.returncode == 0, started.stderr[-3000:]
    job_id = re.search(r"^submitted (\S+)$", started.stdout, re.M).group(1)
    folders = lambda: [p for p in ckpt.iterdir() if p.is_dir()] if ckpt.is_dir() else []  # noqa: E731
    cell = wait_until(lambda: next((p for p in folders()
                                    if committed(p, "quickstart-phm-vit-digits")), None),
                      240, "the first cell's first committed checkpoint")
    stopped = run_cli("stop", job_id, "--address", ray_cluster.url, env=job_env, timeout=200)
    assert stopped.returncode == 0, stopped.stderr
    kept = checkpoints(cell, "quickstart-phm-vit-digits")
    assert kept and kept[-1] < 1500
    sid = sweep_id(started)
    parents, children = runs_of(job_env, sid)
    if parents[0].info.status != "KILLED":
        said = run_cli("logs", job_id, "--address", ray_cluster.url, env=job_env).stdout
        pytest.fail(f"parent {parents[0].info.status}:\n" + "\n".join(
            line for line in said.splitlines() if "phmscale" in line or "rror" in line)[-5000:])
    assert [r.info.status for r in children] == ["KILLED"]

    resumed = sweep(ray_cluster, job_env, ckpt, *args, "--wait")
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    logs = run_cli("logs", re.search(r"^submitted (\S+)$", resumed.stdout, re.M).group(1),
                   "--address", ray_cluster.url, env=job_env).stdout
    assert f"resuming from step {kept[-1]} of 1500" in logs, logs[-4000:]
    assert "(0 finished before, 1 to resume)" in logs
    parents, children = runs_of(job_env, sid)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 1 and children[0].info.status == "FINISHED"  # the same run
    assert status(ray_cluster, job_env, job_id)["status"] == "STOPPED"
