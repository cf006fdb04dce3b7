"""A run's identity: the fields that decide what is trained, and their fingerprint.

A checkpoint is resumed only by a job with the same fingerprint. In it: the model, the training
data and its order (shards, tokenizer when set, batch size, shuffle, loader roles), the
optimizer, the schedule's shape, clipping, accumulation, precision, ZeRO stage, seed, raw
DeepSpeed keys, pruning, and the worker count — it sets the global batch and each rank's
shards, and a ZeRO checkpoint is partitioned by it (resharding one honestly would still
train another run).

Not in it: `train.steps` (raising it resumes and extends the same run), evaluation, logging and
checkpoint cadence, validation data, caches, resources other than the worker count, tracking,
and the job's name (the default checkpoint folder already carries it).

Values are the resolved ones, secrets included: a `${SEED}` or `${SHARDS}` that changes must
change the run (a rotated token inside `data.train` does too: keep credentials in the
reader's own environment, e.g. AWS_* for s3://, not in the URL). The fingerprint is a hash;
what is stored and shown (`JobSpec.identity(shown=True)`) has every secret as ***.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# Sections taken whole, and single fields, of the job.
_WHOLE = ("model", "train.optimizer", "train.schedule", "train.prune", "train.deepspeed")
# Raw DeepSpeed keys that only watch the run (profilers, monitors, timers): not identity.
_DS_WATCHERS = frozenset({
    "wall_clock_breakdown", "steps_per_print", "flops_profiler", "comms_logger", "timers",
    "tensorboard", "wandb", "csv_monitor", "comet", "dump_state", "memory_breakdown",
})
_FIELDS = (
    "data.train", "data.batch_size", "data.shuffle_buffer", "data.resampled",
    "data.loader_workers", "train.grad_clip", "train.grad_accum", "train.precision",
    "train.zero_stage", "train.seed", "resources.workers",
)
# Fields added after runs existed: in the identity only when set away from their default
# (the default trains what the job trained before the field existed), so older runs keep their
# fingerprints, folders and checkpoints.
_FIELDS_IF_SET = {
    "data.tokenizer": None, "data.augment": "none", "data.mean": None, "data.std": None,
}
FINGERPRINT_CHARS = 12
# Until `model` became one kind's fields (spec.model_spec.ModelSpec), every job's model section
# held both kinds' fields, and a fingerprint hashed the other kind's defaults too. Filling them
# in keeps those fingerprints, and with them the run folders and checkpoints named by them. A
# record of that old spec, not a default to keep in step: a field added later is left out.
_FLAT_MODEL = {
    "dim": 128, "depth": 4, "heads": 4, "head_dim": None, "mlp_ratio": 4.0,
    "attention": "standard", "value_output": "matrix", "dropout": 0.0, "patch_size": 2,
    "pool": "cls", "seq_len": 128, "vocab_size": 256,
    "arch": "resnet20", "stem": "small", "width": None, "width_match": "none",
}


def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            _flatten(value[key], f"{prefix}.{key}", out)
    else:
        out[prefix] = value


def absolute_text(text: str, resolved: str, cwd: Path) -> str:
    """A relative local path made absolute against `cwd` — decided on the field's resolved
    value, applied to its text (which may hold `${VAR}`). URLs, pipe:, builtin: and absolute
    paths stay. `submit` resolves a job's paths with it and the identity below names data
    with it, so a job has one fingerprint here and on the cluster."""
    if "://" in resolved or resolved.startswith(("pipe:", "builtin:", "/")):
        return text
    return str(cwd / text)


def _fields(tree: dict[str, Any], paths: dict[str, str | None]) -> dict[str, Any]:
    """The identity of a dumped job; `paths` holds the path fields as identity names them
    (absolute), in place of their text."""
    out: dict[str, Any] = {}
    for section in _WHOLE:
        value = _get(tree, section)
        if section == "train.deepspeed":
            value = {k: v for k, v in value.items() if k not in _DS_WATCHERS}
        elif section == "model":
            value = {**_FLAT_MODEL, **value}
        _flatten(value, section, out)
    for name in _FIELDS:
        out[name] = paths[name] if name in paths else _get(tree, name)
    for name, default in _FIELDS_IF_SET.items():
        value = paths[name] if name in paths else _get(tree, name)
        if value != default:
            out[name] = value
    return dict(sorted(out.items()))


def identity(tree: dict[str, Any], train_resolved: str,
             tokenizer_resolved: str | None = None) -> dict[str, Any]:
    """Dotted field → value, flat and sorted, of a dumped job: `model_dump` for what the
    fingerprint hashes, `public_dump` (secrets as ***) for what is stored and shown.
    `train_resolved` is data.train's value, which decides whether it is a relative path;
    `tokenizer_resolved` likewise for data.tokenizer (it decides the ids trained on)."""
    cwd = Path.cwd().resolve()
    paths: dict[str, str | None] = {
        "data.train": absolute_text(tree["data"]["train"], train_resolved, cwd)}
    tokenizer = tree["data"].get("tokenizer")
    if tokenizer is not None and tokenizer_resolved is not None:
        paths["data.tokenizer"] = absolute_text(tokenizer, tokenizer_resolved, cwd)
    return _fields(tree, paths)


def fingerprint(fields: dict[str, Any]) -> str:
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:FINGERPRINT_CHARS]


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, this job's value, the other run's value) for each field that differs."""
    keys = sorted(set(ours) | set(theirs))
    missing = "(absent)"
    return [(k, ours.get(k, missing), theirs.get(k, missing)) for k in keys
            if ours.get(k, missing) != theirs.get(k, missing)]
