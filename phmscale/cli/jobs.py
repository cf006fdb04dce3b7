"""Cluster jobs: `submit`, `status`, `logs`, `stop`, `list` (Ray job ids and TorchX handles)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from phmscale.cli.job import SET_HELP

console = Console()
err = Console(stderr=True)

ADDRESS_HELP = ("Ray dashboard URL (http://HEAD:8265); default $RAY_ADDRESS. For submit, "
                "'local' starts a Ray cluster in this process for the job.")


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "–"


def _duration(record) -> str:  # noqa: ANN001 (JobRecord)
    if not record.start_time:
        return "–"
    seconds = (record.end_time or time.time()) - record.start_time
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _short(message: str, limit: int = 300) -> str:
    """Ray puts the log tail of a failed job in its message: the logs verb shows those."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return first if len(first) <= limit else first[:limit] + "…"


_STYLE = {"SUCCEEDED": "green", "FAILED": "red", "STOPPED": "yellow", "RUNNING": "cyan",
          "PENDING": "dim"}


def _status_table(record) -> Table:  # noqa: ANN001
    table = Table(title=f"{record.job_id}", show_header=False, title_justify="left")
    table.add_column("field", style="bold cyan")
    table.add_column("value", overflow="fold")
    style = _STYLE.get(record.status, "")
    table.add_row("status", f"[{style}]{record.status}[/]" if style else record.status)
    if record.message:
        table.add_row("message", _short(record.message))
    table.add_row("job", record.name or "(not a phmscale job)")
    meta = record.metadata
    for key, label in (("phmscale.spec_hash", "spec hash"), ("phmscale.resources", "resources"),
                       ("phmscale.steps", "steps"), ("phmscale.checkpoint", "checkpoints"),
                       ("phmscale.mlflow_uri", "MLflow store"),
                       ("phmscale.mlflow_experiment", "MLflow experiment")):
        if key in meta:
            table.add_row(label, meta[key])
    table.add_row("MLflow run", record.mlflow_run_id or "– (known once training starts)")
    if record.mlflow_url:
        table.add_row("MLflow link", record.mlflow_url)
    table.add_row("started", _when(record.start_time))
    table.add_row("ended", _when(record.end_time))
    table.add_row("duration", _duration(record))
    if record.dashboard_url:
        table.add_row("dashboard", record.dashboard_url)
    return table


def _print_json(obj) -> None:  # noqa: ANN001
    typer.echo(json.dumps(obj, indent=2, default=str))


def submit(
    job: Path = typer.Argument(..., help="Job YAML file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    wait: bool = typer.Option(False, "--wait/--no-wait",
                              help="Wait for the job to end; exit 1 unless it SUCCEEDED "
                              "(always on for --address local)."),
    follow: bool | None = typer.Option(None, "--follow/--no-follow",
                                       help="Print the job's logs as they come (implies "
                                       "--wait; default on for --address local)."),
    code: str = typer.Option("auto", "--code",
                             help="How the phmscale code reaches the cluster: ship (as a "
                             "py_module), installed (the cluster's image has it), auto (ship "
                             "unless --address local)."),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="torchx:<local_cwd|local_docker|kubernetes|slurm>: submit "
        "through TorchX (torchrun on every node) instead of Ray."),
    scheduler_args: list[str] = typer.Option(
        [], "--scheduler-arg", help="k=v for the TorchX scheduler (repeatable); unknown keys "
        "are errors."),
    dryrun: bool = typer.Option(False, "--dryrun", help="With --scheduler: print the exact "
                                "scheduler request and submit nothing."),
    forward_secrets: bool = typer.Option(
        True, "--forward-secrets/--no-forward-secrets",
        help="Pass the job's secret ${VARS} (and MLflow credentials) to the workers in their "
        "environment: Ray's dashboard and the scheduler's job description show it. With "
        "--no-forward-secrets the cluster's own environment must define them."),
) -> None:
    """Submit a job to a Ray cluster: Ray Train runs resources.workers workers with DeepSpeed."""
    from phmscale.data.check import check_job_data
    from phmscale.errors import InvalidInputError
    from phmscale.spec import load_job

    # Everything that can be wrong with the job is found here, before any cluster is touched.
    spec = load_job(job, set_)
    check_job_data(spec, str(job), world_size=spec.resources.workers)
    if not dryrun:  # a folder of another run, or in use: refused now, not in a worker's log
        from phmscale.train.run_folder import probe

        probe(spec, spec.checkpoint_dir)
    if scheduler is not None:
        _submit_torchx(spec, scheduler, scheduler_args, dryrun, follow, forward_secrets)
        return
    if dryrun or scheduler_args:
        raise InvalidInputError("--dryrun and --scheduler-arg need --scheduler torchx:<name>")
    if code not in ("auto", "ship", "installed"):
        raise InvalidInputError(f"--code {code!r}: use auto, ship or installed")
    from phmscale.launch.package import build_submission

    local = is_local(address)
    send(build_submission(spec, code=code, local=local,  # type: ignore[arg-type]
                          forward_secrets=forward_secrets), address, local, wait, follow)


def is_local(address: str | None) -> bool:
    return address == "local" or (address is None and os.environ.get("RAY_ADDRESS") == "local")


def send(submission, address: str | None, local: bool, wait: bool,  # noqa: ANN001 (Submission)
         follow: bool | None) -> None:
    """Submit a packaged job (or sweep) to a local cluster or `address`, then remove its
    temporary working dir."""
    from phmscale.tracking.uri import check_reachable

    try:
        # An MLflow server that is down: say so now. (The experiment is made by rank 0's hook,
        # with its artifacts next to a sqlite store: tracking.experiment.ensure_experiment.)
        check_reachable(submission.tracking_uri)
        if local:
            _submit_local(submission, follow is not False)
        else:
            _submit_remote(submission, address, wait, bool(follow))
    finally:
        shutil.rmtree(submission.workdir, ignore_errors=True)


def _submit_torchx(spec, scheduler: str, scheduler_args: list[str],  # noqa: ANN001
                   dryrun: bool, follow: bool | None, forward_secrets: bool) -> None:
    """TorchX path. local_cwd ranks are children of this process, so it follows to the end."""
    from phmscale.launch import torchx_jobs as tx

    sched = tx.parse_scheduler(scheduler)
    result = tx.submit(spec, sched, scheduler_args, dryrun=dryrun,
                       forward_secrets=forward_secrets)
    if dryrun:  # the request as sent, less the values that ride in its environment
        from phmscale.spec.secrets import mask_values
        from phmscale.tracking.uri import PASSWORD_ENV, TOKEN_ENV, resolve_uri, split_credentials

        creds = [*split_credentials(resolve_uri(spec))[1].values(),
                 *(os.environ.get(k, "") for k in (PASSWORD_ENV, TOKEN_ENV))]
        typer.echo(mask_values(str(result), creds))
        return
    console.print(f"submitted {result}", highlight=False)
    if sched == "local_cwd" or follow:
        for line in tx.logs(result, follow=True):
            typer.echo(line)
        final = tx.wait(result)
        console.print(f"{result}: {final['state']}", highlight=False)
        if not final.get("succeeded"):
            raise typer.Exit(1)


def _submit_remote(submission, address: str | None, wait: bool, follow: bool) -> None:  # noqa: ANN001
    from phmscale.launch.ray_jobs import RayJobs

    backend = RayJobs.connect(address)
    job_id = backend.submit(submission)
    typer.echo(f"submitted {job_id}")
    flag = f" --address {backend.url}" if address else ""
    err.print(f"to {backend.url} (dashboard: {backend.url}/#/jobs/{job_id})\n"
              f"  phmscale status {job_id}{flag}\n  phmscale logs {job_id}{flag} --follow\n"
              f"  phmscale stop {job_id}{flag}", highlight=False)
    if follow:
        record = backend.follow(job_id, lambda text: (sys.stdout.write(text), sys.stdout.flush()))
    elif wait:
        record = backend.wait(job_id)
    else:
        return
    _finish(record)


def _submit_local(submission, follow: bool) -> None:  # noqa: ANN001
    from phmscale.launch.local import LocalCluster
    from phmscale.launch.ray_jobs import RayJobs

    r = submission.spec.resources
    need = r.workers * r.cpus_per_worker
    err.print("starting a local Ray cluster (dashboard on 127.0.0.1)…", highlight=False)
    cluster = LocalCluster(num_cpus=max(float(os.cpu_count() or 1), need))
    with cluster as url:
        backend = RayJobs.connect(url)
        job_id = backend.submit(submission)
        typer.echo(f"submitted {job_id}")
        err.print(f"to the local cluster; dashboard {url}/#/jobs/{job_id} while this runs "
                  "(Ctrl-C stops the job; submit again to resume)", highlight=False)
        try:
            if follow:
                record = backend.follow(
                    job_id, lambda text: (sys.stdout.write(text), sys.stdout.flush()))
            else:
                record = backend.wait(job_id)
                if record.status != "SUCCEEDED":  # the logs go with the cluster: show them now
                    sys.stdout.write(backend.logs(job_id)[-8000:])
        except KeyboardInterrupt:
            err.print("[yellow]stopping the job…[/]")
            record = backend.stop(job_id)
        if record.status != "SUCCEEDED":
            cluster.keep_logs = True
            err.print(f"the local cluster's logs stay in {cluster.temp_dir}/session_latest/logs",
                      highlight=False)
    _finish(record)


def _finish(record) -> None:  # noqa: ANN001
    from phmscale.launch.errors import JobDidNotSucceed

    console.print(_status_table(record))
    if record.status != "SUCCEEDED":
        raise JobDidNotSucceed(f"job {record.job_id} ended {record.status}"
                               + (f": {_short(record.message)}" if record.message else ""))


def status(
    job_id: str = typer.Argument(..., help="Job id (as `submit` printed it)."),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A job's state, times, checkpoints and MLflow run."""
    from phmscale.launch.backend import backend_for

    record = backend_for(job_id, address).status(job_id)
    if as_json:
        _print_json(dataclasses.asdict(record))
    else:
        console.print(_status_table(record))


def logs(
    job_id: str = typer.Argument(..., help="Job id."),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job "
                                "ends (the last lines included)."),
) -> None:
    """Print a job's logs (driver and workers)."""
    from phmscale.launch.backend import backend_for

    backend = backend_for(job_id, address)
    if follow:
        backend.follow(job_id, lambda text: (sys.stdout.write(text), sys.stdout.flush()))
    else:
        sys.stdout.write(backend.logs(job_id))


def stop(
    job_id: str = typer.Argument(..., help="Job id."),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
) -> None:
    """Stop a job. Its last checkpoint and MLflow run stay; submitting the job again resumes."""
    from phmscale.launch.backend import backend_for

    record = backend_for(job_id, address).stop(job_id)
    console.print(f"{record.job_id}: {record.status}", highlight=False)


def list_jobs(
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    everything: bool = typer.Option(False, "--all", help="Also jobs phmscale did not submit."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="torchx:<name>: list that "
                                         "TorchX scheduler's apps instead of Ray's jobs."),
) -> None:
    """The cluster's jobs: state, start time, duration and MLflow run."""
    from phmscale.launch.backend import backend_named

    backend = backend_named(scheduler, address)
    records = backend.list(everything=everything)
    progress = {r.job_id: _sweep_progress(r) for r in records
                if r.metadata.get("phmscale.kind") == "sweep"}
    if as_json:
        _print_json([{**dataclasses.asdict(r), **({"sweep_progress": progress[r.job_id]}
                                                  if r.job_id in progress else {})}
                     for r in records])
        return
    where = scheduler or getattr(backend, "url", backend.name)
    table = Table(title=f"{len(records)} job(s) at {where}", title_justify="left")
    table.add_column("job id (phmscale ids start with the job name)", no_wrap=True)
    for column in ("status", "started", "duration"):
        table.add_column(column)
    table.add_column("MLflow run", no_wrap=True)
    if progress:
        table.add_column("sweep cells")
    for r in records:
        style = _STYLE.get(r.status, "")
        cells = [_progress_text(progress.get(r.job_id))] if progress else []
        table.add_row(r.job_id, f"[{style}]{r.status}[/]" if style else r.status,
                      _when(r.start_time), _duration(r), r.mlflow_run_id or "–", *cells)
    console.print(table)


def _sweep_progress(record) -> dict[str, int] | None:  # noqa: ANN001 (JobRecord)
    """A sweep's cells by state, from its MLflow child runs (None: store not readable)."""
    from phmscale.tracking.sweep_runs import progress

    meta = record.metadata
    try:
        return progress(meta.get("phmscale.mlflow_uri", ""), meta["phmscale.sweep_id"],
                        int(meta.get("phmscale.cells", 0)))
    except Exception:  # noqa: BLE001 - a store this machine cannot read: the list still shows
        return None


def _progress_text(counts: dict[str, int] | None) -> str:
    if counts is None:
        return "–"
    shown = [f"{v} {k}" for k, v in counts.items() if v or k == "done"]
    return ", ".join(shown)


def register(app: typer.Typer) -> None:
    app.command()(submit)
    app.command()(status)
    app.command()(logs)
    app.command()(stop)
    app.command(name="list")(list_jobs)
