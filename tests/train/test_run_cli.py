"""`phmscale run` end to end through the real CLI on a built-in dataset."""

from __future__ import annotations

import json

from tests.conftest import ROOT, run_cli


def test_run_trains_checkpoints_and_tracks(tmp_path):
    result = run_cli("run", str(ROOT / "jobs/quickstart.yaml"), "--steps", "20",
                     "--set", "checkpoint.every=10", "--set", "train.eval_every=10",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "val_accuracy" in result.stdout and "samples/s" in result.stdout
    (ckpt,) = (tmp_path / "checkpoints" / "quickstart-phm-vit-digits").iterdir()
    assert (ckpt / "step_00000020" / "COMPLETE").is_file()  # in the run's fingerprint folder
    assert ckpt.name == json.loads((ckpt / "run.json").read_text())["fingerprint"]
    assert (tmp_path / "mlflow.db").is_file()  # the embedded default store


def test_dry_run_writes_nothing(tmp_path):
    result = run_cli("run", str(ROOT / "jobs/quickstart.yaml"), "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for needle in ("estimated job wall time", "samples/s", "MFU", "peak memory",
                   "memory per worker"):
        assert needle in result.stdout, needle
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_bench_step_json_is_json_and_writes_nothing(tmp_path):
    """stdout is the JSON alone (DeepSpeed's op-load line goes to stderr); nothing is written."""
    import json

    result = run_cli("bench", "step", str(ROOT / "jobs/quickstart.yaml"), "--steps", "8",
                     "--rounds", "2", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (row,) = json.loads(result.stdout)
    assert row["steps_timed"] == 2 * (8 - 3)  # 2 rounds, 3 warm-up steps each
    for key in ("engine_vs_bare", "engine_mem_vs_bare"):
        assert 0.05 < row[key] < 5, row
    assert 0 <= row["engine_data_wait_frac"] <= 1
    assert row["batches_per_epoch"] == 25  # builtin:digits, 1617 samples, batch 64, one role
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_sigterm_checkpoints_then_the_same_command_resumes(tmp_path):
    """SIGTERM mid-run: exit 130, a checkpoint at the step it stopped at, the MLflow run kept
    (KILLED); the same command then continues from that step into the same run."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    import mlflow

    args = [sys.executable, "-m", "phmscale", "run", str(ROOT / "jobs/quickstart.yaml"),
            "--set", "train.steps=100000", "--set", "checkpoint.every=20"]
    job_dir = tmp_path / "checkpoints" / "quickstart-phm-vit-digits"
    out_file, err_file = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_file.open("w") as out_f, err_file.open("w") as err_f:  # files: a pipe can fill
        proc = subprocess.Popen(args, cwd=tmp_path, stdout=out_f, stderr=err_f,
                                env=dict(os.environ))
        deadline = time.monotonic() + 300
        try:
            while not list(job_dir.glob("*/step_*/COMPLETE")):  # training is under way
                assert proc.poll() is None, err_file.read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint within 300 s"
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    out, err = out_file.read_text(), err_file.read_text()
    assert proc.returncode == 130, out[-3000:] + err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    found = re.search(r"interrupted at step (\d+)", out)
    assert found, out[-3000:]
    stopped = int(found.group(1))
    (ckpt_dir,) = job_dir.iterdir()
    assert (ckpt_dir / f"step_{stopped:08d}" / "COMPLETE").is_file()  # saved where it stopped
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking)
    (run,) = client.search_runs(client.get_experiment_by_name("quickstart").experiment_id)
    assert run.info.status == "KILLED"

    result = run_cli("run", str(ROOT / "jobs/quickstart.yaml"), "--set", "train.steps=100000",
                     "--set", "checkpoint.every=20", "--steps", str(stopped + 10), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "(10 steps this run)" in result.stdout
    (resumed,) = client.search_runs(run.info.experiment_id)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
