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
) -> None:
    """Compare runs: parameters, savings, FLOPs, throughput and quality, one row per run."""
    from phmscale.tracking.compare import COLUMNS, cell, fetch_rows, plot, render
    from phmscale.tracking.uri import resolve_uri

    tracking_uri = uri or resolve_uri()
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


def register(app: typer.Typer) -> None:
    app.command()(compare)
