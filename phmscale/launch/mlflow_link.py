"""Which MLflow run belongs to which cluster job.

The run id is born on rank 0 once training starts, long after `submit` returned, and a Ray
job's metadata cannot change after submission. So the link is kept on the MLflow side: rank 0
tags its run `phmscale.ray_job.<submission id>` (one tag per submission, so a run resumed by
three submissions names all three), and `status`/`list` look the tag up in the store the job's
metadata names. One search per tracking store and experiment, whatever the number of jobs.
"""

from __future__ import annotations

from phmscale.launch.record import JobRecord
from phmscale.tracking.uri import store_exists

TAG_PREFIX = "phmscale.ray_job."


def job_tag(submission_id: str) -> str:
    return TAG_PREFIX + submission_id


def run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """A browser link for HTTP tracking servers; None for file and database stores."""
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return None


def attach_runs(records: list[JobRecord]) -> None:
    """Fill `mlflow_run_id`/`mlflow_url` of phmscale jobs in place; best effort (a store that
    does not answer leaves them empty)."""
    groups: dict[tuple[str, str], list[JobRecord]] = {}
    for record in records:
        uri = record.metadata.get("phmscale.mlflow_uri")
        experiment = record.metadata.get("phmscale.mlflow_experiment")
        if uri and experiment and store_exists(uri):
            groups.setdefault((uri, experiment), []).append(record)
    if not groups:
        return
    from phmscale.tracking.uri import check_reachable

    for (uri, experiment), members in groups.items():
        try:
            check_reachable(uri, timeout=3.0)
            found = _runs_by_job(uri, experiment)
        except Exception:  # noqa: BLE001 - a link is a convenience, never a failure
            continue
        for record in members:
            hit = found.get(record.job_id)
            if hit:
                record.mlflow_run_id, record.mlflow_url = hit


def _runs_by_job(uri: str, experiment: str) -> dict[str, tuple[str, str | None]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`phmscale.launcher` = 'ray'",
                              max_results=5000)
    out: dict[str, tuple[str, str | None]] = {}
    for run in runs:
        for key in run.data.tags:
            if key.startswith(TAG_PREFIX):
                out[key[len(TAG_PREFIX):]] = (
                    run.info.run_id, run_url(uri, exp.experiment_id, run.info.run_id))
    return out
