"""`phmscale export` and `phmscale eval`: a trained job's checkpoint as a model to take away,
and its validation figures again."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from phmscale.cli.job import SET_HELP
from phmscale.spec import load_job

console = Console()
CHECKPOINT_HELP = ("A step_* folder, or a folder holding them; default the newest save of the "
                   "job's run (the job and --set values name the run, as for `run`).")


def export(
    job: Path = typer.Argument(..., help="Job YAML file the run was trained from."),
    out: Path = typer.Option(..., "--out", help="Export folder to write."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    checkpoint: str | None = typer.Option(None, "--checkpoint", help=CHECKPOINT_HELP),
    fold_dense: bool = typer.Option(
        False, "--fold-dense", help="Fold every PHM layer into the dense layer it equals "
        "(plain nn.Linear / nn.Conv weights, the dense twin's size)."),
    to_mlflow: bool = typer.Option(
        False, "--mlflow", help="Also log the export as an MLflow model on the job's run and "
        "register it in the Model Registry under the job's name (a new version each time)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Consolidate a checkpoint (any ZeRO stage, any worker count) into model.safetensors,
    with the job (secrets as ***) and a model card; load it with
    `phmscale.models.load_pretrained(DIR)`."""
    from dataclasses import asdict

    from phmscale.train.export import export as run_export

    spec = load_job(job, set_)
    result = run_export(spec, out, checkpoint, fold_dense)
    registered: dict[str, object] = {}
    if to_mlflow:
        from phmscale.tracking.model_registry import log_export

        model_uri, version = log_export(spec, out, result.run_id)
        registered = {"model_uri": model_uri, "version": version}
    if as_json:
        typer.echo(json.dumps({**asdict(result), **registered}, indent=2))
        return
    what = "dense (folded)" if result.folded else f"{spec.model.algebra}, n = {spec.model.algebra_dim}"
    console.print(f"exported step {result.step} of {spec.name} ({what}, {result.params:,} "
                  f"parameters; dense twin {result.twin_params:,}) to {out}", highlight=False)
    if registered:
        console.print(f"registered {registered['model_uri']} (logged on run {result.run_id}; "
                      f"load with mlflow.pyfunc.load_model)", highlight=False)


def eval_(
    job: Path = typer.Argument(..., help="Job YAML file the run was trained from."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    checkpoint: str | None = typer.Option(None, "--checkpoint", help=CHECKPOINT_HELP),
    split: str = typer.Option("val", "--split", help="val or train."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Evaluate a checkpoint as the training loop does (loss and accuracy or bits/byte)."""
    from phmscale.errors import InvalidInputError
    from phmscale.train.export import evaluate_checkpoint

    if split not in ("val", "train"):
        raise InvalidInputError(f"--split {split!r}: use val or train")
    spec = load_job(job, set_)
    ref, metrics = evaluate_checkpoint(spec, checkpoint, split)
    if as_json:
        typer.echo(json.dumps({"step": ref.step, "checkpoint": spec.mask(str(ref.path)),
                               **metrics}, indent=2))
        return
    console.print(f"{spec.name} at step {ref.step} ({split}): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), highlight=False)


def generate_(
    folder: Path = typer.Argument(..., help="An export folder (`phmscale export`)."),
    prompt: str = typer.Option(..., "--prompt", help="Text to continue."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0,
                                      help="0: greedy, deterministic."),
    top_k: int | None = typer.Option(None, "--top-k", min=1),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler (temperature > 0)."),
) -> None:
    """Continue a prompt with an exported causal LM (KV cache; PHM layers take their few-row
    decode path). Text becomes ids through the export's tokenizer.json when it has one (a job
    with data.tokenizer), else as UTF-8 bytes."""
    import torch

    from phmscale.data.tokenizer import export_tokenizer
    from phmscale.errors import InvalidInputError
    from phmscale.models import decode_bytes, encode_bytes, generate, load_pretrained
    from phmscale.models.pretrained import read_manifest

    try:
        manifest = read_manifest(folder)
    except FileNotFoundError as error:
        raise InvalidInputError(str(error)) from None
    if manifest.get("task") != "causal_lm":
        raise InvalidInputError(f"{folder} holds a {manifest.get('task')} model: generate "
                                "needs a causal_lm export")
    model = load_pretrained(folder)
    tokenizer = export_tokenizer(folder)
    prompt_ids = (torch.tensor([tokenizer.encode(prompt)], dtype=torch.int64)  # (1, T)
                  if tokenizer else encode_bytes(prompt))
    try:
        out = generate(model, prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k,
                       generator=torch.Generator().manual_seed(seed))
    except ValueError as error:  # past the model's context (seq_len), a bad argument
        raise InvalidInputError(str(error)) from None
    typer.echo(tokenizer.decode(out[0].tolist()) if tokenizer else decode_bytes(out[0]))


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command(name="eval")(eval_)
    app.command(name="generate")(generate_)
