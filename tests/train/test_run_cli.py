"""`phmscale run` end to end through the real CLI on a built-in dataset."""

from __future__ import annotations

from tests.conftest import ROOT, run_cli


def test_run_trains_checkpoints_and_tracks(tmp_path):
    result = run_cli("run", str(ROOT / "jobs/quickstart.yaml"), "--steps", "20",
                     "--set", "checkpoint.every=10", "--set", "train.eval_every=10",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "val_accuracy" in result.stdout and "samples/s" in result.stdout
    ckpt = tmp_path / "checkpoints" / "quickstart-phm-vit-digits"
    assert (ckpt / "step_00000020" / "COMPLETE").is_file()
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
    assert row["read_inline"] is True  # digits fits in memory and the step runs on the CPU
    assert sorted(p.name for p in tmp_path.iterdir()) == []
