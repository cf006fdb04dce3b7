"""`phmscale sweep`: a grid (and seeds, and random draws) of one job, as one Ray job running
Ray Tune; each cell a trial with its own run identity and a child MLflow run."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from phmscale.cli.job import SET_HELP
from phmscale.cli.jobs import ADDRESS_HELP

console = Console()
err = Console(stderr=True)


def sweep(
    job: Path = typer.Argument(..., help="Job YAML file, or a sweep file (a `sweep:` mapping "
                               "naming the job and its axes; flags add to it)."),
    grid: list[str] = typer.Option([], "--grid", help="key=v1,v2,… (repeatable): every "
                                   "combination is a cell."),
    seeds: int | None = typer.Option(None, "--seeds", min=1, help="Seeds per grid point "
                                     "(train.seed = 0 … K-1)."),
    sample: list[str] = typer.Option([], "--sample", help="key=loguniform(a,b) | uniform(a,b) "
                                     "| randint(a,b) | choice(v1,…) (repeatable)."),
    trials: int | None = typer.Option(None, "--trials", min=1, help="Draws of --sample per "
                                      "grid point."),
    max_concurrent: int | None = typer.Option(None, "--max-concurrent", min=1, help="Cells "
                                              "in flight; default: as many as the cluster "
                                              "holds."),
    stop: str | None = typer.Option(None, "--stop", help="asha:METRIC: stop weak cells early "
                                    "(val_accuracy, val_loss, val_bpb, loss)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
    wait: bool = typer.Option(False, "--wait/--no-wait", help="Wait for the sweep to end."),
    follow: bool | None = typer.Option(None, "--follow/--no-follow", help="Print its logs "
                                       "as they come (default on for --address local)."),
    code: str = typer.Option("auto", "--code", help="ship | installed | auto (as submit)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and list the cells; "
                                 "submit nothing."),
    forward_secrets: bool = typer.Option(True, "--forward-secrets/--no-forward-secrets",
                                         help="As for submit."),
) -> None:
    """Run a sweep: every cell validated first, then one Ray job (Ray Tune over the job's
    Ray Train trainer); resubmitting skips finished cells and resumes the others."""
    from phmscale.data.check import check_job_data
    from phmscale.errors import InvalidInputError
    from phmscale.launch.storage import state
    from phmscale.spec.sweep import (
        SweepSpec,
        expand,
        grid_from_flags,
        is_sweep_file,
        read_sweep_file,
        sample_from_flags,
    )

    if is_sweep_file(job):
        settings = read_sweep_file(job)
    else:
        settings = SweepSpec(job=str(job))
    flags = {"grid": {**settings.grid, **grid_from_flags(grid)},
             "sample": {**settings.sample, **sample_from_flags(sample)}}
    for key, value in (("seeds", seeds), ("trials", trials), ("max_concurrent", max_concurrent),
                       ("stop", stop)):
        if value is not None:
            flags[key] = value
    try:
        settings = SweepSpec.model_validate({**settings.model_dump(), **flags})
    except ValueError as error:
        raise InvalidInputError(f"sweep of {job}: {error}") from None
    sweep_ = expand(settings, set_)  # every cell validated: a bad one names itself
    checked: set[str] = set()
    for cell in sweep_.cells:  # the data of each distinct data section, once
        key = cell.spec.data.model_dump_json()
        if key not in checked:
            checked.add(key)
            check_job_data(cell.spec, f"{job} (cell {cell.index}: {cell.label})",
                           world_size=cell.spec.resources.workers)
    states = {c.index: state(c.spec) for c in sweep_.cells}
    _show(sweep_, states)
    if dry_run:
        return
    if all(s in ("finished", "early_stopped") for s in states.values()):
        typer.echo(f"sweep {sweep_.sweep_id}")
        console.print("every cell has finished; nothing to run (`phmscale compare --sweep "
                      f"{sweep_.sweep_id}`)", highlight=False)
        return
    if code not in ("auto", "ship", "installed"):
        raise InvalidInputError(f"--code {code!r}: use auto, ship or installed")
    from phmscale.cli.jobs import is_local, send
    from phmscale.launch.package import build_sweep_submission

    local = is_local(address)
    submission = build_sweep_submission(sweep_, code=code, local=local,  # type: ignore[arg-type]
                                        forward_secrets=forward_secrets)
    typer.echo(f"sweep {sweep_.sweep_id}")  # its id, on a line of its own (scripts read it)
    err.print(f"compare its cells with `phmscale compare --sweep {sweep_.sweep_id}`",
              highlight=False)
    send(submission, address, local, wait, follow)


def _show(sweep_, states: dict[int, str]) -> None:  # noqa: ANN001 (spec.sweep.Sweep)
    table = Table(title=f"sweep {sweep_.sweep_id}: {len(sweep_.cells)} cells",
                  title_justify="left")
    table.add_column("cell", justify="right")
    for axis in sweep_.axes:
        table.add_column(axis)
    table.add_column("state")
    table.add_column("checkpoints", overflow="fold")
    for cell in sweep_.cells:
        values = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in cell.values.values()]
        table.add_row(str(cell.index), *values, states[cell.index],
                      cell.spec.mask(cell.spec.checkpoint_dir))
    err.print(table)


def register(app: typer.Typer) -> None:
    app.command()(sweep)
