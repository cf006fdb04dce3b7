"""TorchX's local_cwd scheduler for real: a 2-rank job trains, checkpoints and logs one MLflow
run; status/logs/stop/list work on the handle, here and from another process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phmscale.errors import InvalidInputError
from phmscale.launch import torchx as tx
from phmscale.launch import torchx_jobs as txj

ROOT = Path(__file__).resolve().parents[2]


def _shell_app(name: str, script: str):
    from torchx import specs

    return specs.AppDef(name=name, roles=[specs.Role(
        name=tx.ROLE, image="", entrypoint="bash", args=["-c", script], num_replicas=1,
        resource=specs.Resource(cpu=1, gpu=0, memMB=64))])


def _run_here(name: str, script: str) -> str:
    cfg, _ = txj.parse_scheduler_args("local_cwd", [])
    return txj.runner().run(_shell_app(name, script), "local_cwd", cfg=cfg)


def test_status_logs_list_of_a_finished_app():
    handle = _run_here("echoes", "echo first; echo second; exit 0")
    info = txj.wait(handle, timeout=60, poll_s=0.2)
    assert info["state"] == "SUCCEEDED" and info["terminal"] and info["succeeded"]
    assert info["scheduler"] == "local_cwd" and handle.endswith(info["app_id"])
    assert list(txj.logs(handle)) == ["first", "second"]
    assert list(txj.logs(handle, follow=True)) == ["first", "second"]
    listed = {job["handle"]: job["state"] for job in txj.list_jobs("torchx:local_cwd")}
    assert listed[handle] == "SUCCEEDED"
    record = txj.backend_for(handle).status(handle)
    assert (record.status, record.terminal, record.backend) == ("SUCCEEDED", True, "torchx:local_cwd")
    assert record.name == "echoes"

    # Another process sees what TorchX left in the log directory.
    code = ("import json, sys; from phmscale.launch import torchx_jobs as txj; h = sys.argv[1]; "
            "print(json.dumps([txj.status(h)['state'], list(txj.logs(h))]))")
    out = subprocess.run([sys.executable, "-c", code, handle], capture_output=True, text=True,
                         timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["SUCCEEDED", ["first", "second"]]


def test_follow_and_stop_a_running_app():
    handle = _run_here("sleeper", "echo started; sleep 120; echo never")
    deadline = time.monotonic() + 30
    while txj.status(handle)["state"] != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    txj.stop(handle)
    info = txj.status(handle)
    assert info["state"] == "CANCELLED" and info["terminal"] and not info["succeeded"]
    assert txj.backend_for(handle).status(handle).status == "STOPPED"
    assert "never" not in list(txj.logs(handle))


def test_local_apps_end_with_the_process_that_started_them(tmp_path):
    """A submitter that exits without waiting takes its local_cwd ranks with it."""
    marker = tmp_path / "alive"
    code = ("import sys; from phmscale.launch import torchx_jobs as txj; from torchx import specs; "
            "cfg, _ = txj.parse_scheduler_args('local_cwd', []); "
            "app = specs.AppDef('orphan', [specs.Role('trainer', image='', entrypoint='bash', "
            f"args=['-c', 'while true; do touch {marker}; sleep 0.2; done'])]); "
            "h = txj.runner().run(app, 'local_cwd', cfg=cfg); "
            "import time, pathlib; m = pathlib.Path(sys.argv[1]); "
            "[time.sleep(0.1) for _ in range(300) if not m.exists()]; print(h)")
    out = subprocess.run([sys.executable, "-c", code, str(marker)], capture_output=True,
                         text=True, timeout=120, check=True)
    handle = out.stdout.strip().splitlines()[-1]
    time.sleep(1.0)
    before = marker.stat().st_mtime
    time.sleep(1.5)
    assert marker.stat().st_mtime == before, "the app outlived its submitter"
    assert txj.status(handle)["state"] in ("CANCELLED", "UNKNOWN", "SUCCEEDED", "FAILED")


def test_unknown_handles_are_input_errors():
    with pytest.raises(InvalidInputError, match="no such TorchX app"):
        txj.status("local_cwd://torchx/nothing-here")
    with pytest.raises(InvalidInputError, match="no such TorchX app"):
        txj.stop("local_cwd://torchx/nothing-here")
    with pytest.raises(InvalidInputError, match="not a TorchX handle"):
        txj.status("quickstart-20250101-120000-ab12")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_ranks_train_checkpoint_and_log_one_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from phmscale.spec import load_job
    from phmscale.train.checkpoint import list_checkpoints

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sets = ["train.steps=10", "train.schedule.warmup_steps=2", "train.eval_every=5",
            "checkpoint.every=5", f"checkpoint.dir={tmp_path}/ckpt", "data.loader_workers=0",
            "resources.workers=2", f"tracking.uri={uri}", "tracking.experiment=torchx-e2e"]
    job = "jobs/quickstart.yaml"
    spec = load_job(ROOT / job, sets)
    began = time.monotonic()
    handle = txj.submit(spec, "torchx:local_cwd", [])
    assert handle.startswith("local_cwd://torchx/quickstart-phm-vit-digits-")
    try:
        info = txj.wait(handle, timeout=270, poll_s=1.0)
    finally:
        if not txj.status(handle)["terminal"]:
            txj.stop(handle)  # never leave ranks behind
    log = "\n".join(txj.logs(handle))
    assert info["state"] == "SUCCEEDED", log[-6000:]
    assert time.monotonic() - began < 270

    assert [c.step for c in list_checkpoints(tmp_path / "ckpt")] == [5, 10]
    assert "phmscale: quickstart-phm-vit-digits completed at step 10/10" in log
    assert "[default0]" in log and "[default1]" in log  # both ranks ran (torchrun's prefixes)

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("torchx-e2e")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # rank 0 only, one run
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["phmscale.launcher"] == "torchx"
    assert run.data.tags["phmscale.torchx.handle"] == handle
    assert run.data.tags["phmscale.world_size"] == "2"
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [10]  # log_every=10: one window, logged once
    assert "final_val_accuracy" in run.data.metrics


def _wait_for(handle, what, predicate, timeout=240.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert not txj.status(handle)["terminal"], "\n".join(txj.logs(handle))[-4000:]
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.5)


def _run_id(ckpt: Path) -> str | None:
    """Rank 0 records its MLflow run in run.json right before its first step."""
    path = ckpt / "run.json"
    return json.loads(path.read_text()).get("run_id") if path.is_file() else None


def _sets(tmp_path: Path, every: int) -> list[str]:
    return ["train.steps=100000", "train.schedule.warmup_steps=2", "train.eval_every=100000",
            f"checkpoint.every={every}", f"checkpoint.dir={tmp_path}/ckpt",
            "data.loader_workers=0", "resources.workers=2", "resources.max_failures=-1",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "tracking.experiment=torchx-stop"]


def _stopped_run(tmp_path: Path, run_id: str):
    """The job's only MLflow run, once the stopped ranks have closed it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (only,) = client.search_runs([client.get_experiment_by_name("torchx-stop").experiment_id])
    assert only.info.run_id == run_id
    deadline = time.monotonic() + 60  # torchrun's children may still be saving
    while client.get_run(run_id).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    return client.get_run(run_id)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_stop_checkpoints_both_ranks_at_the_current_step(tmp_path):
    """`phmscale stop` on a TorchX handle: SIGTERM reaches every rank (and torchrun, which
    passes it on again); the ranks agree on a step, save there and end the MLflow run KILLED.
    No save is scheduled before step 100000, so any checkpoint is the stop's."""
    from phmscale.spec import load_job
    from phmscale.train.checkpoint import list_checkpoints

    ckpt = tmp_path / "ckpt"
    spec = load_job(ROOT / "jobs/quickstart.yaml", _sets(tmp_path, every=100000))
    handle = txj.submit(spec, "torchx:local_cwd", [])
    try:
        _wait_for(handle, "training", lambda: _run_id(ckpt))
        time.sleep(3)  # some steps
    finally:
        txj.stop(handle)
    assert _stopped_run(tmp_path, _run_id(ckpt)).info.status == "KILLED"
    (saved,) = list_checkpoints(ckpt)
    assert 0 < saved.step < 100000
    shards = sorted(p.name for p in saved.path.glob("*optim_states.pt"))
    assert len(shards) == 2, shards  # both ranks' ZeRO-1 optimizer shards
