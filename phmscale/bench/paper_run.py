"""Submitting the suite's cells to one Ray cluster, a few at a time, through the submit path.

Each cell goes exactly where `phmscale submit` sends a job: load_job(file, overrides) →
check_job_data → build_submission → the Jobs API (`RayJobs.submit`). What
differs is only that one cluster serves every cell (a local one costs ~10 s to start) and that
`parallel` cells are in flight at once: on 2 cores, two one-CPU cells keep both busy while each
driver's start-up (~8 s of imports) overlaps the other cell's training.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from phmscale.bench.paper_plan import Cell

POLL_S = 2.0


@dataclass
class CellResult:
    cell: Cell
    job_id: str
    status: str  # Ray's final job status: SUCCEEDED, FAILED, STOPPED
    seconds: float
    run_id: str | None = None


def cell_overrides(cell: Cell, suite: str, store: Path, uri: str) -> list[str]:
    """The cell's own overrides plus what makes it unique and findable: a job name of its own
    (so its own checkpoint dir: cells never resume each other), the store, and the tags the
    report groups by."""
    name = f"paper-{suite}-{cell.key}"
    return [*cell.overrides(), f"name={name}", f"checkpoint.dir={store / 'checkpoints' / name}",
            f"tracking.uri={uri}", "tracking.experiment=paper",
            "tracking.tags={" + f"paper_suite: '{suite}', paper_section: {cell.section}, "
            f"paper_group: {cell.group}, paper_seed: '{cell.seed}'" + "}"]


def submission_for(cell: Cell, suite: str, store: Path, uri: str, local: bool):  # noqa: ANN201
    """Validate the cell like `phmscale submit` does and package it (nothing is sent yet)."""
    from phmscale.cli.job import check_job_data
    from phmscale.launch.package import build_submission
    from phmscale.spec import load_job

    spec = load_job(Path(cell.job), cell_overrides(cell, suite, store, uri))
    check_job_data(spec, cell.job, world_size=spec.resources.workers)
    return build_submission(spec, code="auto", local=local)


@contextmanager
def cluster(address: str | None, num_cpus: float) -> Iterator[tuple[str, bool]]:
    """(dashboard URL, is_local): the given cluster, or one LocalCluster for the whole suite."""
    if address and address != "local":
        yield address, False
        return
    from phmscale.launch.local import LocalCluster

    # Ray Train polls its workers every 2 s by default; a finished cell is noticed at the next
    # poll. At 45 cells, 0.5 s saves about a minute of wall time.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with LocalCluster(num_cpus=num_cpus) as url:
        yield url, True


def _poll(backend, job_id: str):  # noqa: ANN001, ANN202 (RayJobs → JobRecord | None)
    """A job's status; None when the dashboard does not answer this once. With two cells
    training on two cores it can miss the 5 s window; a 40-minute suite must not die of it."""
    from phmscale.errors import PhmscaleError

    try:
        return backend.status(job_id, mlflow=False)
    except PhmscaleError:
        return None


def run_cells(cells: list[Cell], url: str, local: bool, suite: str, store: Path, uri: str,
              parallel: int = 2, log: Callable[[str], None] = print) -> list[CellResult]:
    """Submit every cell, keeping `parallel` in flight; return when all have ended.

    A failed cell does not stop the suite: its Ray log is saved to <store>/logs/<key>.log and
    the report marks it.
    """
    from phmscale.launch.ray_jobs import RayJobs
    from phmscale.tracking.experiment import ensure_experiment
    from phmscale.tracking.uri import check_reachable

    backend = RayJobs.connect(url)
    check_reachable(uri)
    # Made once, here, before two cells race to make it: on the suite's sqlite store its
    # artifacts go to <store>/mlruns/paper, beside the database.
    ensure_experiment(uri, "paper")
    pending = list(cells)
    running: dict[str, tuple[Cell, float]] = {}
    results: list[CellResult] = []
    t_start = time.monotonic()
    while pending or running:
        while pending and len(running) < parallel:
            cell = pending.pop(0)
            submission = submission_for(cell, suite, store, uri, local)
            try:
                job_id = backend.submit(submission)
            finally:  # the runtime env is uploaded by submit: the temp dir is done with
                shutil.rmtree(submission.workdir, ignore_errors=True)
            running[job_id] = (cell, time.monotonic())
        time.sleep(POLL_S)
        for job_id in list(running):
            record = _poll(backend, job_id)
            if record is None or not record.terminal:
                continue
            cell, t0 = running.pop(job_id)
            record = backend.status(job_id)  # now with the MLflow run id
            result = CellResult(cell, job_id, record.status, time.monotonic() - t0,
                                record.mlflow_run_id)
            results.append(result)
            if record.status != "SUCCEEDED":
                logs = store / "logs"
                logs.mkdir(parents=True, exist_ok=True)
                (logs / f"{cell.key}.log").write_text(backend.logs(job_id))
            done, total = len(results), len(cells)
            log(f"[{done:>2}/{total}] {cell.key:<34} {record.status:<9} {result.seconds:5.0f} s"
                f"  (elapsed {(time.monotonic() - t_start) / 60:.1f} min)")
    return results
