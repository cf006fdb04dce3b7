"""Sweep expansion: cells from grid × draws × seeds, each a validated job with its own run
folder; bad cells and bad axes fail the whole sweep up front (exit 2, cell and field named)."""

from __future__ import annotations

import pytest

from phmscale.spec import JobSpecError
from phmscale.spec.sweep import SweepSpec, expand, grid_from_flags, sample_from_flags
from tests.conftest import ROOT, run_cli

QUICKSTART = str(ROOT / "jobs" / "quickstart.yaml")


def test_grid_seeds_and_draws_expand_to_distinct_validated_cells():
    settings = SweepSpec(job=QUICKSTART, grid=grid_from_flags(["model.n=2,4"]), seeds=2,
                         sample=sample_from_flags(["train.optimizer.lr=loguniform(1e-4,1e-2)"]),
                         trials=2)
    sweep = expand(settings)
    assert len(sweep.cells) == 2 * 2 * 2
    assert sweep.axes == ["model.n", "train.optimizer.lr", "train.seed"]
    assert [c.spec.model.n for c in sweep.cells] == [2] * 4 + [4] * 4
    assert [c.spec.train.seed for c in sweep.cells] == [0, 1] * 4
    lrs = [c.spec.train.optimizer.lr for c in sweep.cells]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs) and lrs[0] == lrs[1] != lrs[2]
    folders = {c.spec.checkpoint_dir for c in sweep.cells}
    assert len(folders) == 8  # a run folder per cell (its fingerprint)
    again = expand(settings)  # the same draws: a resubmitted sweep finds its cells again
    assert [c.spec.fingerprint() for c in again.cells] == [c.spec.fingerprint()
                                                           for c in sweep.cells]
    assert again.sweep_id == sweep.sweep_id and sweep.cells[0].label.startswith("n=2,lr=")


def test_named_checkpoint_dir_gets_a_folder_per_cell(tmp_path):
    sweep = expand(SweepSpec(job=QUICKSTART, grid={"model.n": [2, 4]},
                             set=[f"checkpoint.dir={tmp_path}"]))
    dirs = [c.spec.checkpoint_dir for c in sweep.cells]
    assert dirs == [f"{tmp_path}/{c.spec.fingerprint()}" for c in sweep.cells]


def test_sweep_file_and_flags(tmp_path):
    (tmp_path / "s.yaml").write_text(
        f"sweep:\n  job: {QUICKSTART}\n  grid: {{model.n: [2, 4]}}\n  set: [train.steps=40, checkpoint.every=20]\n")
    shown = run_cli("sweep", str(tmp_path / "s.yaml"), "--seeds", "2", "--dry-run",
                    cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "4 cells" in shown.stderr and "n=4,seed=1" not in shown.stderr  # columns, not labels
    assert shown.stderr.count(" new ") == 4


@pytest.mark.parametrize("args, says", [
    (["--grid", "model.n=2,3"], "sweep cell 1: n=3"),
    (["--grid", "name=a,b"], "name: a sweep cannot vary it"),
    (["--grid", "train.steps=200,300"], "train the same run"),
    (["--grid", "model.nn=2,4"], "model.nn"),
    (["--stop", "asha:accuracy"], "asha:METRIC"),
    (["--sample", "train.optimizer.lr=loguniform(0,1)"], "0 < low < high"),
    (["--grid", "model.n"], "use key=v1,v2"),
])
def test_bad_sweeps_fail_before_anything_starts(tmp_path, args, says):
    result = run_cli("sweep", QUICKSTART, *args, "--dry-run", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_cases_are_named_override_sets_crossed_with_the_grid():
    sweep = expand(SweepSpec(job=QUICKSTART, seeds=2, grid={"model.attention": [
        "standard", "symmetric"]}, cases={"dense": ["model.algebra=real", "model.n=1"],
                                           "phm2": ["model.n=2"]}))
    assert sweep.axes == ["case", "model.attention", "train.seed"]
    assert len(sweep.cells) == 2 * 2 * 2
    assert sweep.cells[0].label == "dense,attention=standard,seed=0"
    assert {(c.values["case"], c.spec.model.algebra, c.spec.model.n) for c in sweep.cells} == {
        ("dense", "real", 1), ("phm2", "phm", 2)}
    with pytest.raises(JobSpecError, match="cases.bad"):
        expand(SweepSpec(job=QUICKSTART, cases={"bad": ["model.n"]}))
    with pytest.raises(JobSpecError, match="a sweep cannot vary it"):
        expand(SweepSpec(job=QUICKSTART, cases={"x": ["name=y"]}))


def test_a_missing_job_and_a_missing_store_are_named(tmp_path):
    (tmp_path / "s.yaml").write_text("sweep:\n  job: nope.yaml\n  grid: {model.n: [2]}\n")
    result = run_cli("sweep", str(tmp_path / "s.yaml"), "--dry-run", cwd=tmp_path)
    assert result.returncode == 2 and "sweep.job: nope.yaml: no such job file" in result.stderr
    shown = run_cli("compare", "--sweep", "x", cwd=tmp_path)
    assert shown.returncode == 2 and "no MLflow store" in shown.stderr, shown.stderr
    assert not (tmp_path / "mlflow.db").exists()  # looking never creates a store
