"""`phmscale compare --sweep ID`: a sweep's cells as rows with the swept fields as columns,
mean ± std over seeds, and the Pareto plot of quality against parameters and FLOPs.

Rows come from the child runs of the sweep's parent run (the newest run per cell), through the
same `fetch_rows` as `phmscale compare`.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from phmscale.errors import InvalidInputError
from phmscale.tracking.compare import RunRow, fetch_rows
from phmscale.tracking.sweep_runs import (
    AXIS_TAG,
    CELL_TAG,
    PARENT_TAG,
    SWEEP_TAG,
    children,
    find_parent,
)
from phmscale.tracking.uri import store_exists

SEED = "train.seed"
FIGURES = ("params", "flops_per_sample", "samples_per_s", "best_quality", "final_quality")


def _parent(client: Any, sweep_id: str) -> Any:
    ids = [e.experiment_id for e in client.search_experiments()]
    found = find_parent(client, ids, sweep_id, newest=True) if ids else None
    if found is not None:
        return found
    parents = client.search_runs(ids, filter_string=f"tags.`{PARENT_TAG}` = '1'") if ids else []
    known = sorted({r.data.tags.get(SWEEP_TAG, "") for r in parents})
    raise InvalidInputError(f"--sweep {sweep_id}: no such sweep in this store; sweeps: "
                            f"{', '.join(known) or 'none'} (`phmscale sweep` prints the id)")


def sweep_rows(uri: str, sweep_id: str, metric: str | None = None
               ) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """(axes, one row per cell, one row per group of cells that differ only in the seed)."""
    from mlflow.tracking import MlflowClient

    if not store_exists(uri):
        raise InvalidInputError(f"--sweep {sweep_id}: no MLflow store at {uri} (not creating "
                                "one): pass --tracking-uri, or run where the sweep logged")
    client = MlflowClient(uri)
    parent = _parent(client, sweep_id)
    newest: dict[str, Any] = {}
    for run in children(client, parent):  # oldest first: a cell's later run replaces it
        newest[run.data.tags.get(CELL_TAG, run.info.run_id)] = run
    runs = sorted(newest.values(), key=lambda r: int(r.data.tags.get("phmscale.cell_index", 0)))
    axes = [k[len(AXIS_TAG):] for k in (runs[0].data.tags if runs else {})
            if k.startswith(AXIS_TAG)]
    by_id = {r.run_id: r for r in fetch_rows(uri, [r.info.run_id for r in runs], metric=metric)}
    cells = []
    for run in runs:
        row: RunRow = by_id[run.info.run_id]
        values = {a: run.data.tags.get(AXIS_TAG + a) for a in axes}
        cells.append({"cell": run.data.tags.get(CELL_TAG), **values,
                      **{k: getattr(row, k) for k in FIGURES},
                      "quality_metric": row.quality_metric, "status": row.status,
                      "run_id": row.run_id})
    return axes, cells, _groups(axes, cells)


def _groups(axes: list[str], cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = [a for a in axes if a != SEED]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault(tuple(cell[k] for k in keys), []).append(cell)
    out = []
    for values, members in groups.items():
        row: dict[str, Any] = dict(zip(keys, values, strict=True))
        row["seeds"] = len(members)
        # a failed or stopped cell's last figures are not its result: averaged only where no
        # cell of the group finished (an ASHA-stopped group), to show how far it got
        finished = [m for m in members if m["status"] == "FINISHED"] or members
        for figure in FIGURES:
            xs = [m[figure] for m in finished if m[figure] is not None]
            row[figure] = statistics.fmean(xs) if xs else None
            row[figure + "_std"] = statistics.stdev(xs) if len(xs) > 1 else None
        row["quality_metric"] = members[0]["quality_metric"]
        row["finished"] = sum(m["status"] == "FINISHED" for m in members)
        out.append(row)
    return out


def mean_std(row: dict[str, Any], figure: str) -> str:
    from phmscale.tracking.compare import cell

    mean, std = row.get(figure), row.get(figure + "_std")
    if mean is None:
        return "–"
    return cell(mean) + (f" ± {cell(std)}" if std else "")


def pareto(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats (fewer x and better y), by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0],
                   -points[i][1] if higher_is_better else points[i][1]))
    front, best = [], None
    for i in order:
        y = points[i][1]
        if best is None or (y > best if higher_is_better else y < best):
            front.append(i)
            best = y
    return front


def plot_sweep(groups: list[dict[str, Any]], axes: list[str], out: Path) -> Path:
    """Quality (mean ± std over seeds) against parameters and against FLOPs per sample, the
    Pareto front of each drawn as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [a for a in axes if a != SEED]
    metric = groups[0]["quality_metric"] if groups else "quality"
    higher = metric != "val_bpb" and "loss" not in metric
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, panels = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, x_key, label in zip(panels, ("params", "flops_per_sample"),
                                ("parameters", "FLOPs per sample"), strict=True):
        pts = [(g[x_key], g["final_quality"], g) for g in groups
               if g[x_key] and g["final_quality"] is not None]
        for x, y, g in pts:
            ax.errorbar(x, y, yerr=g.get("final_quality_std") or 0, fmt="o", capsize=3)
            ax.annotate(",".join(f"{k.rsplit('.', 1)[-1]}={g[k]}" for k in keys), (x, y),
                        fontsize=7, alpha=0.8)
        front = [pts[i] for i in pareto([(x, y) for x, y, _ in pts], higher)]
        if front:
            ax.plot([p[0] for p in front], [p[1] for p in front], "--", alpha=0.5,
                    label="Pareto front")
            ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"final {metric}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metric} against size and compute")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def as_json(axes: list[str], cells: list[dict[str, Any]], groups: list[dict[str, Any]]
            ) -> dict[str, Any]:
    return {"axes": axes, "cells": cells, "groups": groups}

