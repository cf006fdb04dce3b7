"""`phmscale compare`: a table of MLflow runs and the Pareto/loss plots."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def compare(
    run_ids: list[str] = typer.Argument(None, help="Run ids (default: all runs matching)."),
    experiment: str | None = typer.Option(None, "--experiment", "-e", help="Experiment name."),
    filter_: str = typer.Option("", "--filter", help="MLflow filter, e.g. \"tags.`phmscale."
                                "algebra` = 'quaternion'\"."),
    metric: str | None = typer.Option(None, "--metric", help="Quality metric (default "
                                      "val_accuracy, or val_bpb for language models)."),
    plot_out: Path | None = typer.Option(None, "--plot", help="Write the Pareto plot here "
                                         "(and the loss curves next to it, *-loss.png)."),
    fmt: str = typer.Option("table", "--format", help="table | csv | json | markdown"),
    uri: str | None = typer.Option(None, "--tracking-uri", help="Default: $MLFLOW_TRACKING_URI"
                                   " or sqlite:///mlflow.db."),
    sweep: str | None = typer.Option(None, "--sweep", help="A sweep id (`phmscale sweep` "
                                     "prints it): one row per cell, the swept fields as "
                                     "columns, mean ± std over seeds; --plot: the Pareto plot "
                                     "against parameters and FLOPs."),
) -> None:
    """Compare runs: parameters, savings, FLOPs, throughput and quality, one row per run."""
    from phmscale.tracking.compare import COLUMNS, cell, fetch_rows, plot, render
    from phmscale.tracking.uri import resolve_uri

    tracking_uri = uri or resolve_uri()
    if sweep is not None:
        _compare_sweep(tracking_uri, sweep, metric, fmt, plot_out)
        return
    rows = fetch_rows(tracking_uri, run_ids or None, experiment, filter_, metric)
    if fmt == "table":
        table = Table(title=f"{len(rows)} run(s) at {tracking_uri}", title_justify="left")
        for column in COLUMNS:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(cell(getattr(row, c)) for c in COLUMNS))
        console.print(table)
    else:
        typer.echo(render(rows, fmt), nl=False)
    if plot_out is not None:
        for path in plot(rows, tracking_uri, plot_out):
            console.print(f"wrote {path}", style="dim")


def _compare_sweep(uri: str, sweep: str, metric: str | None, fmt: str,
                   plot_out: Path | None) -> None:
    import json

    from phmscale.errors import InvalidInputError
    from phmscale.tracking.compare import cell
    from phmscale.tracking.sweep_compare import (
        FIGURES,
        as_json,
        mean_std,
        plot_sweep,
        sweep_rows,
    )

    axes, cells, groups = sweep_rows(uri, sweep, metric)
    if fmt == "json":
        typer.echo(json.dumps(as_json(axes, cells, groups), indent=2))
    elif fmt == "table":
        quality = cells[0]["quality_metric"] if cells else "quality"
        table = Table(title=f"sweep {sweep}: {len(cells)} cell(s) ({quality})",
                      title_justify="left")
        for column in ("cell", *axes, *FIGURES, "status"):
            table.add_column(column, overflow="fold")
        for row in cells:
            table.add_row(*(cell(row[c]) for c in ("cell", *axes, *FIGURES, "status")))
        console.print(table)
        keys = [a for a in axes if a != "train.seed"]
        table = Table(title="mean ± std over seeds", title_justify="left")
        for column in (*keys, "seeds", *FIGURES):
            table.add_column(column, overflow="fold")
        for row in groups:
            table.add_row(*(cell(row[k]) for k in (*keys, "seeds")),
                          *(mean_std(row, f) for f in FIGURES))
        console.print(table)
    else:
        raise InvalidInputError(f"--format {fmt!r} with --sweep: use table or json")
    if plot_out is not None:
        console.print(f"wrote {plot_sweep(groups, axes, plot_out)}", style="dim")


def register(app: typer.Typer) -> None:
    app.command()(compare)
