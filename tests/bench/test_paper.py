"""`phmscale bench paper`: the suite's sweep files, the report's tables and verdicts, and one
tiny sweep end to end through `phmscale sweep`'s path on the launch tests' shared Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phmscale.bench.paper import SWEEPS, placement, suite_sweeps
from phmscale.bench.paper_groups import Group, label
from phmscale.bench.paper_report import section_attn, section_phm, section_prune, table
from phmscale.spec import load_job
from phmscale.spec.sweep import SweepSpec, expand, read_sweep_file
from tests.conftest import ROOT
from tests.launch.conftest import mlflow_db, ray_cluster  # noqa: F401 (fixtures)

SWEEP_FILES = sorted((ROOT / SWEEPS).glob("*.yaml"))
RECORD = {"tracking_uri": "sqlite:///m.db", "sweeps": [
    {"stem": s, "sweep_id": f"{s}-0000"} for s in ("phm-digits", "attn-digits", "prune-resnet")]}


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_every_sweep_file_expands(path, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    settings = read_sweep_file(path.relative_to(ROOT))
    sweep = expand(settings, placement(tmp_path, "sqlite:///x.db", settings.name))
    assert sweep.name.startswith("paper-") and sweep.cells
    for cell in sweep.cells:  # one-CPU cells, each in its own folder under the sweep's
        assert cell.spec.resources.workers == 1 and cell.spec.resources.cpus_per_worker == 1
        assert cell.spec.checkpoint_dir.startswith(str(tmp_path / "checkpoints" / sweep.name))
        assert cell.spec.tracking.experiment == "paper"


def test_the_suite_is_the_papers_51_cells(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    sweeps = {stem: expand(s) for stem, s in suite_sweeps().items()}
    assert {stem: len(s.cells) for stem, s in sweeps.items()} == {
        "phm-digits": 4 * 3, "phm-mnist1d": 4 * 3, "attn-digits": 6 * 2, "resnet-digits": 6,
        "lm-pystdlib": 3, "prune-resnet": 2 * 3}
    assert len({s.sweep_id for s in sweeps.values()}) == len(sweeps)
    dense = sweeps["phm-digits"].cells[0]
    assert dense.values == {"case": "n1", "train.seed": 0} and dense.spec.model.algebra == "real"
    assert [c.spec.train.steps for c in sweeps["lm-pystdlib"].cells] == [800] * 3
    pruned = [c.spec for c in sweeps["prune-resnet"].cells]
    assert sorted({s.train.prune.sparsity for s in pruned}) == [0.5, 0.75, 0.9]
    assert {s.model.algebra for s in pruned} == {"real", "quaternion"}
    assert {(s.train.prune.start_step, s.train.prune.end_step) for s in pruned} == {(50, 200)}
    labels = [label("resnet-digits", c.values["case"], c.spec)
              for c in sweeps["resnet-digits"].cells]
    assert labels[0] == "ℝ (real)" and labels[-1] == "PHC n=4 (learned)"


def test_quick_suite_is_three_tiny_cells_of_other_sweeps(monkeypatch):
    monkeypatch.chdir(ROOT)
    full = {stem: expand(s).sweep_id for stem, s in suite_sweeps().items()}
    quick = {stem: expand(s) for stem, s in suite_sweeps(quick=True).items()}
    assert set(quick) == {"phm-digits", "resnet-digits", "lm-pystdlib"}
    for stem, sweep in quick.items():
        assert len(sweep.cells) == 1 and sweep.cells[0].spec.train.steps == 20
        assert sweep.sweep_id != full[stem]  # never resumes (or skips) the real suite's cells


def group(stem: str, case: str, mean: float | None, params: float, std: float | None = None,
          seeds: int = 1, failed: int = 0, sets: tuple[str, ...] = ()) -> Group:
    job = {"phm-digits": "phm-vit-digits", "attn-digits": "attn-digits"}.get(
        stem, "resnet20-digits")
    spec = load_job(ROOT / "jobs" / "paper" / f"{job}.yaml", list(sets))
    planned = [f"{case},seed={s}" for s in range(seeds)]
    cells = [{"cell": c, "status": "FINISHED", "run_id": f"id-{c}"}
             for c in planned[:seeds - failed]]
    stats = {"final_quality": mean, "final_quality_std": std, "params": params}
    if spec.train.prune.sparsity:
        stats["train.prune.sparsity"] = str(spec.train.prune.sparsity)
    return Group(stem, case, label(stem, case, spec), spec, stats, cells, planned)


def test_phm_table_and_verdict():
    groups = [group("phm-digits", "n1", 0.97, 40000, 0.014142, seeds=2, sets=(
                  "model.algebra=real", "model.n=1")),
              group("phm-digits", "n4", 0.95, 10000, seeds=2, failed=1)]
    text = section_phm(groups, RECORD)
    assert "| digits n=1 | 40,000 | 1.00× | 97.0 ± 1.4 | +0.0 | 2 |" in text
    assert "| digits n=4 | 10,000 | 4.00× | 95.0 (1 failed: n4,seed=1) | -2.0 | 1/2 |" in text
    assert "it does not hold for n=4 (-2.0)" in text
    assert "400 steps; validation: 180 samples (one = 0.56 points)" in text  # from the job
    assert "`phmscale compare --sweep phm-digits-0000 --tracking-uri sqlite:///m.db`" in text


def test_attn_verdict_names_the_largest_cut_within_a_point():
    groups = [group("attn-digits", "full", 0.95, 10000), group("attn-digits", "nomlp", 0.948, 6000),
              group("attn-digits", "minimal", 0.90, 1000)]
    text = section_attn(groups, RECORD)
    assert "**no MLP**, 40% fewer parameters (short of the paper's ~90%)" in text
    assert "| minimal (QK, no VO) | 1,000 | 90% | 90.0 | -5.0 | 1 |" in text
    assert "(4·64² here)" in text


def test_prune_table_uses_the_unpruned_resnet_as_zero():
    def pruned(case: str, pct: int, acc: float, left: float) -> Group:
        g = group("prune-resnet", case, acc, 1000, sets=(
            f"model.algebra={case}", "train.prune.start_step=50", "train.prune.end_step=200",
            f"train.prune.sparsity={pct / 100}"))
        g.params_nonzero = left
        return g

    resnet = [group("resnet-digits", c, 0.99, 1000) for c in ("real", "quaternion")]
    prune = [pruned("real", 50, 0.98, 600), pruned("real", 90, 0.90, 200),
             pruned("quaternion", 50, 0.99, 550), pruned("quaternion", 90, 0.97, 150)]
    text = section_prune(prune, resnet, RECORD)
    assert "| algebra | params (unpruned) | 0% pruned | 50% pruned | 90% pruned |" in text
    assert "| ℝ (real) | 1,000 | 99.0 | 98.0 | 90.0 | 200 at 90% |" in text
    assert "| ℍ (quaternion) | 1,000 | 99.0 | 99.0 | 97.0 | 150 at 90% |" in text
    assert "ℍ (quaternion) keeps more than ℝ (real), as AlgebraNets report" in text
    assert "from step 50 to 200 of 300" in text  # the schedule, from the cells' job
    failed = section_prune(prune[:-1], resnet, RECORD)  # ℍ's 90% cell did not finish
    assert "| ℍ (quaternion) | 1,000 | 99.0 | 99.0 | – | 550 at 50% |" in failed
    assert "stop at different sparsities" in failed


def test_table_markdown():
    assert table(["a", "b"], [["x", "1"]]) == "| a | b |\n|:---|---:|\n| x | 1 |\n"


TINY = ["train.steps=4", "train.eval_every=4", "checkpoint.every=4", "train.log_every=2",
        "train.schedule.warmup_steps=0", "model.dim=16", "model.depth=1", "model.heads=2",
        "data.loader_workers=0", "data.batch_size=16", "train.eval_batches=1"]


@pytest.mark.slow
def test_a_tiny_suite_end_to_end(ray_cluster, mlflow_db, tmp_path, monkeypatch):  # noqa: F811
    """One sweep (dense and n = 4) as one Ray job on the shared cluster, the report from its
    MLflow runs, then `--suite` re-rendering it from the record (~1 min)."""
    from phmscale.bench.paper import run_suite, write_report

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    full = read_sweep_file(SWEEPS / "phm-digits.yaml")
    tiny = SweepSpec(job=full.job, name="paper-test-tiny", cases={
        k: v for k, v in full.cases.items() if k in ("n1", "n4")}, set=TINY)
    out = tmp_path / "results.md"
    record_path = run_suite(out, store=tmp_path / "store", address=ray_cluster.url,
                            tracking_uri=mlflow_db, sweeps={"phm-digits": tiny},
                            benchmarks=False, log=lambda _: None)
    record = json.loads(record_path.read_text())
    (entry,) = record["sweeps"]
    assert entry["status"] == "SUCCEEDED" and entry["cells"] == 2, entry
    text = out.read_text()
    assert "| digits n=1 |" in text and "| digits n=4 |" in text
    assert "2 cells (2 finished)" in text
    ids = [line for line in text.splitlines() if line.startswith("| digits n=")]
    assert all("`" in line for line in ids[-2:])  # the appendix names each row's run
    assert (tmp_path / "results" / "pareto.png").stat().st_size > 0
    again = tmp_path / "again" / "results.md"  # the same stem: the same image links
    again.parent.mkdir()
    write_report(Path(record_path), again)
    assert again.read_text() == text
