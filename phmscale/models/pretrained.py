"""Exported models: the consolidated weights (`model.safetensors`) a user takes away, the fold
of every PHM layer into the dense layer it equals, and `load_pretrained` to get either back.

An export folder holds `model.safetensors`, `job.yaml` (the job, secrets as ***) and
`export.json` (what the weights are: folded or not, the step, the figures of the model card).
Torch and safetensors only: exports load without DeepSpeed, Ray or MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from phmscale.models.registry import build_model
from phmscale.nn.base import PHMBase
from phmscale.nn.convert import to_dense
from phmscale.spec import parse_model_spec

WEIGHTS, JOB, MANIFEST = "model.safetensors", "job.yaml", "export.json"


def fold_dense(model: nn.Module) -> nn.Module:
    """Replace every PHM layer, in place, by the nn.Linear / nn.ConvNd computing the same
    function (W = Σᵢ Aᵢ ⊗ Sᵢ, the pruning mask applied): the dense twin's parameter count,
    no phmscale layer left. Returns `model`."""
    for name, child in list(model.named_children()):
        if isinstance(child, PHMBase):
            with torch.no_grad():
                setattr(model, name, to_dense(child))
        else:
            fold_dense(child)
    return model


def load_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """`load_state_dict(strict=True)`, after giving pruned layers the mask buffer the
    weights carry (a fresh layer has none until pruning makes one)."""
    modules = dict(model.named_modules())
    for key, value in state.items():
        owner, _, leaf = key.rpartition(".")
        module = modules.get(owner)
        if leaf == "mask" and isinstance(module, PHMBase) and module.mask is None:
            module.register_buffer("mask", torch.empty_like(value))
    model.load_state_dict(state, strict=True)
    return model


def read_manifest(path: str | Path) -> dict[str, Any]:
    folder = Path(path)
    missing = [f for f in (WEIGHTS, MANIFEST, JOB) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a phmscale export (missing {', '.join(missing)}): make one with "
            "`phmscale export JOB.yaml --out DIR`")
    return json.loads((folder / MANIFEST).read_text())


def load_pretrained(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The exported model, in eval mode: the PHM model, or with `--fold-dense` exports the
    same architecture with plain dense layers."""
    import yaml
    from safetensors.torch import load_file

    folder = Path(path)
    manifest = read_manifest(folder)
    job = yaml.safe_load((folder / JOB).read_text())
    model = build_model(parse_model_spec(job["model"]))
    if manifest.get("folded"):
        fold_dense(model)
    load_weights(model, load_file(str(folder / WEIGHTS)))
    return model.to(device).eval()
