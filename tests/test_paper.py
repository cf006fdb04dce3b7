"""`phmscale bench paper`: the plan, the seed statistics, the markdown, and two tiny cells end
to end on the launch tests' shared Ray cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phmscale.bench.paper_plan import ATTN, LM, PHM, PRUNE, QUICK_SETS, RESNET, Cell, plan
from phmscale.bench.paper_report import section_attn, section_phm, section_prune, table
from phmscale.bench.paper_run import cell_overrides
from phmscale.bench.paper_stats import Group, fmt_mean_std, group_rows, mean_std
from phmscale.spec import load_job
from phmscale.tracking.compare import RunRow
from tests.conftest import ROOT
from tests.launch.conftest import mlflow_db, ray_cluster  # noqa: F401 (fixtures)

PAPER_JOBS = sorted((ROOT / "jobs" / "paper").glob("*.yaml"))


def test_full_plan_fits_the_budget_and_every_cell_validates(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    cells = plan()
    assert len(cells) == 51  # ~51 cells fit in under an hour on 2 cores, 2 in flight
    assert len({c.key for c in cells}) == len(cells)
    counts = {s: sum(c.section == s for c in cells) for s in (PHM, ATTN, RESNET, LM, PRUNE)}
    assert counts == {PHM: 2 * 4 * 3, ATTN: 6 * 2, RESNET: 6, LM: 3, PRUNE: 2 * 3}
    names = set()
    for cell in cells:
        spec = load_job(Path(cell.job), cell_overrides(cell, "t", tmp_path, "sqlite:///x.db"))
        assert spec.train.seed == cell.seed
        assert spec.resources.workers == 1 and spec.resources.cpus_per_worker == 1
        assert spec.tracking.tags["paper_group"] == cell.group
        assert spec.checkpoint_dir.endswith(spec.name)  # its own dir: cells never resume
        names.add(spec.name)
    assert len(names) == len(cells)
    first_phm = next(c for c in cells if c.section == PHM)
    dense = load_job(Path(first_phm.job), first_phm.overrides())
    assert first_phm.group == "phm-digits-n1" and dense.model.algebra == "real"
    pruned = [load_job(Path(c.job), c.overrides()) for c in cells if c.section == PRUNE]
    assert sorted({s.train.prune.sparsity for s in pruned}) == [0.5, 0.75, 0.9]
    assert {s.model.algebra for s in pruned} == {"real", "quaternion"}


@pytest.mark.parametrize("job", PAPER_JOBS, ids=lambda p: p.name)
def test_paper_jobs_validate(job):
    load_job(job)


def test_quick_plan_is_tiny():
    cells = plan(quick=True)
    assert {c.section for c in cells} == {PHM, RESNET, LM}
    assert all("train.steps=20" in c.sets for c in cells)


def test_mean_std():
    assert mean_std([]) == (None, None)
    assert mean_std([0.5]) == (0.5, None)
    mean, std = mean_std([0.9, 0.92, 0.94])
    assert mean == pytest.approx(0.92) and std == pytest.approx(0.02)  # sample std (n − 1)
    assert fmt_mean_std([0.9, 0.92, 0.94], 100) == "92.0 ± 2.0"
    assert fmt_mean_std([0.97], 100) == "97.0"
    assert fmt_mean_std([]) == "–"


def _row(name: str, params: float, acc: float | None) -> RunRow:
    return RunRow(run_id=f"id-{name}", name=name, model="phm_transformer", algebra="phm", n=4,
                  params=params, savings=2.0, flops_per_sample=1e6, samples_per_s=100.0,
                  best_quality=acc, final_quality=acc, quality_metric="val_accuracy",
                  status="FINISHED")


def _entry(cell: Cell, status: str = "SUCCEEDED") -> dict:
    return {"cell": {"section": cell.section, "group": cell.group, "label": cell.label,
                     "seed": cell.seed}, "status": status, "seconds": 50.0}


RECORD = {"suite": "s", "tracking_uri": "sqlite:///m.db"}


def test_group_rows_and_phm_table():
    cells = [Cell(PHM, f"phm-digits-n{n}", f"digits n={n}", "j", (), seed)
             for n in (1, 4) for seed in (0, 1)]
    accs = {"phm-digits-n1": [0.96, 0.98], "phm-digits-n4": [0.95, 0.93]}
    rows = [_row(f"paper-s-{c.key}", 40000 if c.group.endswith("n1") else 10000,
                 accs[c.group][c.seed]) for c in cells]
    entries = [_entry(c) for c in cells]
    entries[-1]["status"] = "FAILED"  # n=4 seed 1: reported as failed, left out of the mean
    groups = group_rows(rows, entries, "s")
    assert list(groups) == ["phm-digits-n1", "phm-digits-n4"]
    assert groups["phm-digits-n4"].quality == [0.95]
    assert groups["phm-digits-n4"].failed == ["phm-digits-n4-s1"]
    text = section_phm(list(groups.values()), RECORD)
    assert "| digits n=1 | 40,000 | 1.00× | 97.0 ± 1.4 | +0.0 | 2 | 50 |" in text
    assert "| digits n=4 | 10,000 | 4.00× | 95.0 (1 failed: phm-digits-n4-s1) | -2.0 | 1/2 |" in text
    assert "it does not hold for n=4 (-2.0)" in text
    assert "tags.paper_section = 'phm'" in text


def test_attn_verdict_names_the_largest_cut_within_a_point():
    def group(key: str, label: str, params: float, acc: float) -> Group:
        g = Group(f"attn-{key}", label, ATTN, seconds=[1.0])
        g.rows.append(_row(key, params, acc))
        return g

    groups = [group("full", "full (MLP)", 10000, 0.95), group("nomlp", "no MLP", 6000, 0.948),
              group("minimal", "minimal", 1000, 0.90)]
    text = section_attn(groups, RECORD)
    assert "**no MLP**, 40% fewer parameters (short of the paper's ~90%)" in text
    assert "| minimal | 1,000 | 90% | 90.0 | -5.0 | 1 |" in text


def test_prune_table_uses_the_unpruned_resnet_as_zero():
    def group(key: str, label: str, section: str, acc: float, left: float | None = None) -> Group:
        g = Group(key, label, section, seconds=[1.0])
        g.rows.append(_row(key, 1000.0, acc))
        g.rows[0].params_nonzero = left
        return g

    resnet = [group("resnet-real", "ℝ (real)", RESNET, 0.99),
              group("resnet-quaternion", "ℍ (quaternion)", RESNET, 0.99)]
    prune = [group("prune-real-50", "ℝ (real) 50%", PRUNE, 0.98, 600),
             group("prune-real-90", "ℝ (real) 90%", PRUNE, 0.90, 200),
             group("prune-quaternion-50", "ℍ (quaternion) 50%", PRUNE, 0.99, 550),
             group("prune-quaternion-90", "ℍ (quaternion) 90%", PRUNE, 0.97, 150)]
    text = section_prune(prune, resnet, RECORD)
    assert "| algebra | params (unpruned) | 0% pruned | 50% pruned | 90% pruned |" in text
    assert "| ℝ (real) | 1,000 | 99.0 | 98.0 | 90.0 | 200 at 90% |" in text
    assert "| ℍ (quaternion) | 1,000 | 99.0 | 99.0 | 97.0 | 150 at 90% |" in text
    assert "ℍ (quaternion) keeps more than ℝ (real), as AlgebraNets report" in text
    assert "tags.paper_section = 'prune'" in text
    failed = section_prune(prune[:-1], resnet, RECORD)  # ℍ's 90% cell did not finish
    assert "| ℍ (quaternion) | 1,000 | 99.0 | 99.0 | – | 550 at 50% |" in failed
    assert "stop at different sparsities" in failed


def test_table_markdown():
    assert table(["a", "b"], [["x", "1"]]) == "| a | b |\n|:---|---:|\n| x | 1 |\n"


TINY = (*QUICK_SETS, "train.steps=4", "train.eval_every=4", "checkpoint.every=4",
        "model.dim=16", "model.depth=1", "model.heads=2", "data.loader_workers=0",
        "data.batch_size=16", "train.eval_batches=1")


@pytest.mark.slow
def test_two_tiny_cells_end_to_end(ray_cluster, mlflow_db, tmp_path, monkeypatch):  # noqa: F811
    """Both cells through the Jobs API on the shared cluster, tables from MLflow (~45 s)."""
    from phmscale.bench.paper import run_suite

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cells = [Cell(PHM, f"phm-digits-n{n}", f"digits n={n}", "jobs/paper/phm-vit-digits.yaml",
                  (("model.algebra=real", "model.n=1") if n == 1 else
                   ("model.algebra=phm", f"model.n={n}")) + TINY) for n in (1, 4)]
    out = tmp_path / "results.md"
    record_path = run_suite(out, store=tmp_path / "store", address=ray_cluster.url,
                            tracking_uri=mlflow_db, cells=cells, benchmarks=False,
                            log=lambda _: None)
    record = json.loads(record_path.read_text())
    assert [c["status"] for c in record["cells"]] == ["SUCCEEDED", "SUCCEEDED"]
    text = out.read_text()
    assert "| digits n=1 |" in text and "| digits n=4 |" in text
    for cell in record["cells"]:
        assert cell["run_id"] and f"`{cell['run_id']}`" in text
    assert (tmp_path / "results" / "pareto.png").stat().st_size > 0
