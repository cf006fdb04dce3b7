"""An export in MLflow: its run's last metrics for the model card, and `export --mlflow`, which
logs the export folder as an MLflow pyfunc model on the job's own run and registers it in the
Model Registry under the job's name.

The model is written with `mlflow.pyfunc.save_model` and copied into the run's artifacts with
the client, not logged inside `start_run(run_id)`: reopening a run and ending it would rewrite
its status (a FAILED or KILLED run would read FINISHED, a running one would end early).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec

from phmscale import __version__
from phmscale.errors import InvalidInputError
from phmscale.tracking.uri import check_reachable, resolve_uri, store_exists, use_credentials

ARTIFACT = "model"  # the artifact folder of the run that holds the pyfunc model
# Generation settings as declared params (MLflow drops params a signature does not declare);
# no input schema: inputs are arrays (any model) or prompts (causal LMs). top_k 0: no limit.
SIGNATURE = ModelSignature(params=ParamSchema([
    ParamSpec("max_new_tokens", "long", 64), ParamSpec("temperature", "double", 0.0),
    ParamSpec("top_k", "long", 0), ParamSpec("seed", "long", 0)]))


class PhmscaleModel(mlflow.pyfunc.PythonModel):
    """pyfunc view of an export: `predict` returns the model's logits for an array of inputs
    (token ids (B, T) for LMs, samples for classifiers); a causal LM also takes a list of
    prompts (strings) and returns their continuations (params: max_new_tokens, temperature,
    top_k, seed)."""

    def load_context(self, context: Any) -> None:
        from phmscale.data.tokenizer import export_tokenizer
        from phmscale.models import load_pretrained
        from phmscale.models.pretrained import read_manifest

        folder = context.artifacts["export"]
        self.task = read_manifest(folder).get("task")
        self.model = load_pretrained(folder)
        self.tokenizer = export_tokenizer(folder)  # None: byte-level ids

    # untyped on purpose: MLflow reads predict's type hints as an input schema to enforce
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import numpy as np
        import torch

        values = model_input
        if hasattr(values, "to_numpy"):  # a DataFrame or Series: its first column
            values = values.to_numpy()
            values = values[:, 0] if values.ndim == 2 and values.shape[1] == 1 else values
        if self.task == "causal_lm" and _is_text(values):
            return [self._continue(str(text), params or {}) for text in values]
        with torch.inference_mode():
            return self.model(torch.as_tensor(np.asarray(values))).float().numpy()

    def _continue(self, text: str, params: dict[str, Any]) -> str:
        import torch

        from phmscale.models import decode_bytes, encode_bytes, generate

        tok = self.tokenizer
        prompt = (torch.tensor([tok.encode(text)], dtype=torch.int64) if tok  # (1, T)
                  else encode_bytes(text))
        out = generate(self.model, prompt, int(params.get("max_new_tokens", 64)),
                       temperature=float(params.get("temperature", 0.0)),
                       top_k=int(params.get("top_k", 0)) or None,
                       generator=torch.Generator().manual_seed(int(params.get("seed", 0))))
        new = out[0, prompt.shape[1]:]
        return tok.decode(new.tolist()) if tok else decode_bytes(new)


def _is_text(values: Any) -> bool:
    if isinstance(values, str):
        return True
    try:
        return len(values) > 0 and all(isinstance(v, str) for v in values)
    except TypeError:
        return False


def _client_uri(spec: Any) -> str:
    uri = use_credentials(resolve_uri(spec))
    check_reachable(uri)
    return uri


def run_metrics(spec: Any, run_id: str | None) -> dict[str, float] | None:
    """The last value of each metric of the job's MLflow run, or None where there is no run
    id, no store (a sqlite file that does not exist is not created) or no answer."""
    uri = resolve_uri(spec)
    if run_id is None:
        return None
    if not store_exists(uri):
        return None
    try:
        client = mlflow.MlflowClient(_client_uri(spec))
        return dict(sorted(client.get_run(run_id).data.metrics.items()))
    except Exception:  # noqa: BLE001 - the card says "unavailable"; the export still stands
        return None


def log_export(spec: Any, folder: str | Path, run_id: str | None) -> tuple[str, int]:
    """Log `folder` (an export) as a pyfunc model on run `run_id` and register it as a new
    version of the model named like the job. Returns (model URI, version)."""
    if run_id is None:
        raise InvalidInputError(
            "--mlflow: the checkpoint names no MLflow run (trained without tracking?); "
            "export without --mlflow, or log the folder yourself")
    uri = _client_uri(spec)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    try:
        client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise InvalidInputError(
            f"--mlflow: run {run_id} (named by the checkpoint) is not in the tracking store "
            f"{spec.mask(uri)}: set tracking.uri (or MLFLOW_TRACKING_URI) to the store the "
            "job logged to") from None
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / ARTIFACT
        # its CloudPickle warning: PhmscaleModel pickles by reference to this module
        logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
        with warnings.catch_warnings():  # and its advice to type predict (see predict)
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(
                saved, python_model=PhmscaleModel(), artifacts={"export": str(folder)},
                pip_requirements=[f"phmscale=={__version__}",
                                  f"torch=={torch.__version__.split('+')[0]}", "safetensors"],
                signature=SIGNATURE, metadata={"phmscale_job": spec.name,
                          "phmscale_fingerprint": spec.fingerprint()})
        client.log_artifacts(run_id, str(saved), ARTIFACT)
    version = mlflow.register_model(f"runs:/{run_id}/{ARTIFACT}", spec.name)
    return f"models:/{spec.name}/{version.version}", int(version.version)
