"""`phmscale compare`: one row per MLflow run, and the plots the papers draw.

Rows come from MLflow (tags, run-level metrics logged at start, final metrics at the end);
plots are quality against parameters (the Pareto view) and the loss curves.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from phmscale.errors import InvalidInputError

COLUMNS = ["run_id", "name", "model", "algebra", "n", "params", "savings", "flops_per_sample",
           "samples_per_s", "sparsity", "params_nonzero", "best_quality", "final_quality",
           "status"]


@dataclass
class RunRow:
    run_id: str
    name: str
    model: str
    algebra: str
    n: int | None
    params: float | None
    savings: float | None
    flops_per_sample: float | None
    samples_per_s: float | None
    best_quality: float | None
    final_quality: float | None
    quality_metric: str
    status: str
    sparsity: float | None = None  # element sparsity of a pruned run (train.prune), else None
    params_nonzero: float | None = None  # parameters left after pruning


def _quality_key(metrics: dict[str, float], wanted: str | None) -> str:
    if wanted:
        return wanted
    return "val_bpb" if "val_bpb" in metrics else "val_accuracy"


def fetch_rows(uri: str, run_ids: list[str] | None = None, experiment: str | None = None,
               filter_string: str = "", metric: str | None = None) -> list[RunRow]:
    """Runs by id, or by experiment (all experiments when None) and an MLflow filter."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        if run_ids:
            runs = [client.get_run(rid) for rid in run_ids]
        else:
            if experiment:
                found = client.get_experiment_by_name(experiment)
                if found is None:
                    names = [e.name for e in client.search_experiments()]
                    raise InvalidInputError(
                        f"--experiment {experiment!r} does not exist at {uri}; "
                        f"experiments: {', '.join(names) or 'none'}"
                    )
                ids = [found.experiment_id]
            else:
                ids = [e.experiment_id for e in client.search_experiments()]
            runs = client.search_runs(ids, filter_string=filter_string,
                                      order_by=["attributes.start_time ASC"])
    except MlflowException as error:
        raise InvalidInputError(f"MLflow at {uri}: {error.message}") from None
    rows = []
    for run in runs:
        m, t = run.data.metrics, run.data.tags
        key = _quality_key(m, metric)
        rows.append(RunRow(
            run_id=run.info.run_id,
            name=run.info.run_name or t.get("phmscale.job", ""),
            model=t.get("phmscale.model.kind", ""),
            algebra=t.get("phmscale.algebra", ""),
            n=int(t["phmscale.n"]) if "phmscale.n" in t else None,
            params=m.get("params"),
            savings=m.get("savings_ratio"),
            flops_per_sample=m.get("flops_per_sample"),
            samples_per_s=m.get("samples_per_s"),
            best_quality=m.get("best_quality", m.get(key)),
            final_quality=m.get("final_" + key, m.get(key)),
            quality_metric=key,
            status=run.info.status,
            sparsity=m.get("element_sparsity"),
            params_nonzero=m.get("params_nonzero"),
        ))
    return rows


def cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def render(rows: list[RunRow], fmt: str) -> str:
    """csv | json | markdown as text ('table' is drawn by the CLI with rich)."""
    records = [{c: getattr(r, c) for c in COLUMNS} for r in rows]
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(records)
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(cell(rec[c]) for c in COLUMNS) + " |" for rec in records]
        return "\n".join(lines) + "\n"
    raise InvalidInputError(f"--format {fmt!r}: use table, csv, json or markdown")


def plot(rows: list[RunRow], uri: str, out: Path, loss_key: str = "loss") -> list[Path]:
    """Write `out` (quality vs parameters, log x) and `<out stem>-loss.png` (loss curves)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for algebra in sorted({r.algebra for r in rows}):
        pts = [(r.params, r.best_quality, r.name) for r in rows
               if r.algebra == algebra and r.params and r.best_quality is not None]
        if pts:
            xs, ys, names = zip(*pts, strict=True)
            ax.scatter(xs, ys, label=algebra, s=40)
            for x, y, name in pts:
                ax.annotate(name, (x, y), fontsize=6, alpha=0.7)
    ax.set_xscale("log")
    _finish(plt, fig, ax, out, "parameters", rows[0].quality_metric if rows else "quality",
            "quality against parameters", legend=bool(rows))

    client = MlflowClient(uri)
    loss_out = out.with_name(out.stem + "-loss.png")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        points = sorted((p.step, p.value) for p in client.get_metric_history(r.run_id, loss_key))
        if points:
            ax.plot(*zip(*points, strict=True), label=r.name)
    _finish(plt, fig, ax, loss_out, "step", loss_key, "training loss", legend=bool(rows))
    return [out, loss_out]


def _finish(plt: Any, fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str,
            legend: bool) -> None:
    """Label, grid, legend, save at 120 dpi and close: the same for both plots."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
