"""A sweep in MLflow: one parent run (its axes, cell count, progress, status) and a nested child
run per cell (the cell's usual run, tagged `mlflow.parentRunId`, so the UI groups them).

The parent is found again by its tag `phmscale.sweep` (the sweep id): a resubmitted sweep
reopens its parent run instead of starting a second one.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from phmscale.tracking.experiment import ensure_experiment

SWEEP_TAG, PARENT_TAG, CELL_TAG, AXIS_TAG = (
    "phmscale.sweep", "phmscale.sweep_parent", "phmscale.cell", "phmscale.axis.")


WALL_METRICS = ("wall_s", "cell_wall_s_sum", "overhead_ratio")


def find_parent(client: Any, experiment_ids: list[str], sweep_id: str,
                newest: bool = False) -> Any | None:
    """The sweep's parent run: the oldest (the one `open_parent` reopens), or the newest
    where the same sweep ran in more than one experiment of the store."""
    runs = client.search_runs(
        experiment_ids, filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_id}' and "
                                      f"tags.`{PARENT_TAG}` = '1'",
        order_by=[f"attributes.start_time {'DESC' if newest else 'ASC'}"], max_results=1)
    return runs[0] if runs else None


def open_parent(uri: str, experiment: str, sweep_id: str, name: str, axes: list[str],
                cells: int, settings: dict[str, Any]) -> str:
    """The sweep's parent run id (reopened RUNNING if it exists), its params logged once."""
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment_id = ensure_experiment(uri, experiment)
    found = find_parent(client, [experiment_id], sweep_id)
    if found is not None:
        client.update_run(found.info.run_id, status="RUNNING")
        return found.info.run_id
    run = client.create_run(experiment_id, run_name=name, tags={
        SWEEP_TAG: sweep_id, PARENT_TAG: "1", "phmscale.job": name})
    params = {"sweep.axes": ", ".join(axes), "sweep.cells": str(cells),
              **{f"sweep.{k}": str(v) for k, v in settings.items() if v not in (None, [], {})}}
    client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in params.items()],
                     tags=[RunTag("mlflow.note.content", f"sweep {sweep_id}: {cells} cells over "
                                  f"{', '.join(axes) or 'no axes'}")])
    return run.info.run_id


def child_tags(parent_run_id: str, sweep_id: str, index: int, label: str,
               values: dict[str, Any]) -> dict[str, str]:
    return {"mlflow.parentRunId": parent_run_id, SWEEP_TAG: sweep_id, CELL_TAG: label,
            "phmscale.cell_index": str(index),
            **{AXIS_TAG + k: str(v) for k, v in values.items()}}


def children(client: Any, parent: Any) -> list[Any]:
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                              order_by=["attributes.start_time ASC"])


def progress(uri: str, sweep_id: str, cells: int) -> dict[str, int] | None:
    """{done, running, failed, killed, left} of a sweep's cells from its child runs (the
    newest run per cell), or None when the store has no parent run for it."""
    from mlflow.tracking import MlflowClient

    from phmscale.tracking.uri import store_exists

    if not store_exists(uri):
        return None
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    parent = find_parent(client, ids, sweep_id) if ids else None
    if parent is None:
        return None
    latest: dict[str, str] = {}
    for run in children(client, parent):
        latest[run.data.tags.get(CELL_TAG, run.info.run_id)] = run.info.status
    counts = Counter(latest.values())
    out = {"done": counts["FINISHED"], "running": counts["RUNNING"],
           "failed": counts["FAILED"], "killed": counts["KILLED"]}
    out["left"] = max(0, cells - sum(out.values()))
    return out


def close_parent(uri: str, run_id: str, status: str, counts: dict[str, float]) -> None:
    """End the parent run with its figures: cells_<state> counts, and the sweep's wall time
    against its cells' (`overhead_ratio`, where measured)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[
        Metric(k if k in WALL_METRICS else f"cells_{k}", float(v), now, 0)
        for k, v in counts.items()])
    client.set_terminated(run_id, status=status)


def close_stale_children(uri: str, parent_run_id: str) -> int:
    """Mark KILLED the child runs still RUNNING once no cell is (a trial Ray Tune stopped
    early, or killed, never ended its run). Returns how many."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    stale = [r for r in children(client, parent) if r.info.status == "RUNNING"]
    for run in stale:
        client.set_terminated(run.info.run_id, status="KILLED")
    return len(stale)
