"""A run's checkpoint → an export folder (see `phmscale.models.pretrained`).

The checkpoint of any ZeRO stage and worker count is consolidated with DeepSpeed's own
utility (`zero_to_fp32`: the fp32 master weights gathered from every rank's optimizer shards;
stage 0 keeps whole weights in its model-states file). The export is written aside and renamed
into place, like a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from phmscale.errors import InvalidInputError
from phmscale.spec import JobSpec
from phmscale.train.checkpoint import MARKER, CheckpointRef, list_checkpoints, owner


@dataclass
class ExportResult:
    out: str
    checkpoint: str
    step: int
    folded: bool
    params: int
    twin_params: int
    savings_ratio: float
    run_id: str | None
    fingerprint: str
    metrics: dict[str, float] | None  # the run's last value of each metric (None: no store)


def find_checkpoint(spec: JobSpec, given: str | None = None) -> CheckpointRef:
    """`given` (a `step_*` folder, or a folder holding them), else the newest save of the
    job's run: `phmscale run` keeps them in its run folder, Ray Train in `<folder>/<name>`."""
    if given is not None:
        path = Path(given)
        if (path / MARKER).is_file():
            return CheckpointRef(path.parent, path.name, int(path.name.split("_")[-1]))
        folders = [path]
    else:
        folders = [Path(spec.checkpoint_dir), Path(spec.checkpoint_dir) / spec.name]
    refs = [ref for folder in folders for ref in list_checkpoints(folder)]
    if not refs:
        where = " or ".join(str(f) for f in folders)
        hint = ""
        if given is None and spec.resources.workers != 1 and spec.checkpoint.dir is None:
            local = spec.model_copy(update={"resources": spec.resources.model_copy(
                update={"workers": 1})})
            if list_checkpoints(local.checkpoint_dir):
                hint = (" (`phmscale run` trained this job in one process: add --set "
                        "resources.workers=1 to name that run)")
        raise InvalidInputError(
            f"no complete checkpoint in {spec.mask(where)}{hint}: train the job first (the "
            "same --set values find the same run), or pass --checkpoint DIR")
    return max(refs, key=lambda r: (r.saved, r.step))


def consolidated_state(ref: CheckpointRef) -> dict[str, torch.Tensor]:
    """Full fp32 weights and buffers of the model, from every rank's shards."""
    files = sorted(p.name for p in ref.path.glob("*optim_states.pt"))
    if files:  # ZeRO 1-3: the fp32 master weights live in the optimizer shards
        if not torch.cuda.is_available():
            from phmscale.train.dist import pin_cpu_accelerator

            pin_cpu_accelerator()
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        with contextlib.redirect_stdout(sys.stderr):  # its progress lines: not our stdout
            state = get_fp32_state_dict_from_zero_checkpoint(str(ref.directory), tag=ref.tag)
    else:  # ZeRO-0: rank 0's model states hold every weight
        saved = torch.load(ref.path / "mp_rank_00_model_states.pt", map_location="cpu",
                           weights_only=False)
        state = dict(saved["module"])
    return {k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype).contiguous()
            for k, v in state.items()}


def export(spec: JobSpec, out: str | Path, checkpoint: str | None = None,
           fold: bool = False) -> ExportResult:
    """Write the export folder `out` (see the module docstring); returns what it holds."""
    import yaml
    from safetensors.torch import save_file

    from phmscale.data.tokenizer import TOKENIZER_FILE, load_tokenizer
    from phmscale.models import build_model, summarize
    from phmscale.models.pretrained import JOB, MANIFEST, WEIGHTS, fold_dense, load_weights
    from phmscale.tracking.model_registry import run_metrics

    ref = find_checkpoint(spec, checkpoint)
    # refused before any work when data.tokenizer is gone; copied so the export is whole
    tokenizer = load_tokenizer(spec.data.tokenizer) if spec.data.tokenizer else None
    run_id = owner(ref).get("run_id")
    model = load_weights(build_model(spec.model), consolidated_state(ref))
    if fold:
        fold_dense(model)
    summary = summarize(spec)
    result = ExportResult(
        out=str(out), checkpoint=spec.mask(str(ref.path)), step=ref.step, folded=fold,
        params=sum(p.numel() for p in model.parameters()), twin_params=summary.twin_params,
        savings_ratio=summary.savings_ratio, run_id=run_id, fingerprint=spec.fingerprint(),
        metrics=run_metrics(spec, run_id))
    final = Path(out)
    aside = final.with_name(final.name + ".partial")
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(aside / WEIGHTS),
              metadata={"format": "pt", "phmscale.folded": str(fold).lower()})
    (aside / JOB).write_text(yaml.safe_dump(spec.public_dump(), sort_keys=False))
    manifest = {**asdict(result), "exported": time.time(), "task": spec.model.task}
    if tokenizer is not None:
        shutil.copyfile(tokenizer.path, aside / TOKENIZER_FILE)
        manifest["tokenizer_sha256"] = tokenizer.sha256
    (aside / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (aside / "README.md").write_text(_card(spec, result))
    if final.exists():
        shutil.rmtree(final)
    aside.rename(final)
    return result


def _card(spec: JobSpec, r: ExportResult) -> str:
    m = spec.model
    kind = "dense layers (PHM folded)" if r.folded else f"{m.algebra} layers, n = {m.algebra_dim}"
    return (
        f"# {spec.name}\n\n"
        f"A {m.kind} ({m.task}) with {kind}, exported by phmscale from step {r.step} "
        f"(checkpoint {r.checkpoint}, run fingerprint {r.fingerprint}, MLflow run "
        f"{r.run_id or 'unknown'}).\n\n"
        f"- parameters: {r.params:,} (dense twin: {r.twin_params:,}; the PHM model has "
        f"{r.savings_ratio:.2f}× fewer)\n"
        f"- the run's last metrics: {_metrics_line(r.metrics)}\n"
        "- load: `from phmscale.models import load_pretrained; model = "
        "load_pretrained(\"THIS_FOLDER\")`\n"
        "- files: model.safetensors (weights), job.yaml (the job, secrets as ***), "
        "export.json" + (", tokenizer.json (ids ↔ text: `phmscale.data.tokenizer."
                         "load_tokenizer(\"THIS_FOLDER\")`)" if spec.data.tokenizer else "")
        + "\n")


def _metrics_line(metrics: dict[str, float] | None) -> str:
    if metrics is None:
        return "unavailable (no MLflow run or store reachable at export time)"
    shown = [k for k in ("val_loss", "val_accuracy", "val_bpb", "loss") if k in metrics]
    return ", ".join(f"{k} {metrics[k]:.4g}" for k in shown) or "none logged"


def evaluate_checkpoint(spec: JobSpec, checkpoint: str | None = None,
                        split: str = "val") -> tuple[CheckpointRef, dict[str, float]]:
    """The loop's own evaluation (`train.evaluate`) of a checkpoint's consolidated weights,
    in this process, over the whole split: the run's last validation figures again."""
    from phmscale.data.loader import make_loader
    from phmscale.data.prepare import prepare_data
    from phmscale.models import build_model
    from phmscale.models.pretrained import load_weights
    from phmscale.train.dist import DistEnv
    from phmscale.train.evaluate import evaluate

    ref = find_checkpoint(spec, checkpoint)
    model = load_weights(build_model(spec.model), consolidated_state(ref))
    prepare_data(spec)
    source = make_loader(spec, split, 0, 1)  # type: ignore[arg-type]
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    return ref, evaluate(model, spec, source, env, torch.float32)
