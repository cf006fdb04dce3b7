"""A run's identity: the fields that decide what is trained, and their fingerprint.

A checkpoint is resumed only by a job with the same fingerprint. In it: the model, the training
data and its order (shards, batch size, shuffle, loader roles), the optimizer, the schedule's
shape, clipping, accumulation, precision, ZeRO stage, seed, raw DeepSpeed keys, pruning, and the
worker count — it sets the global batch and each rank's shards, and a ZeRO checkpoint is
partitioned by it (resharding one honestly would still train another run).

Not in it: `train.steps` (raising it resumes and extends the same run), evaluation, logging and
checkpoint cadence, validation data, caches, resources other than the worker count, tracking,
and the job's name (the default checkpoint folder already carries it).

Secret values enter as their `${VAR}` reference, so rotating a token keeps the run.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phmscale.spec.job import JobSpec

# Sections taken whole, and single fields, of the job's portable dump.
_WHOLE = ("model", "train.optimizer", "train.schedule", "train.prune", "train.deepspeed")
_FIELDS = (
    "data.train", "data.batch_size", "data.shuffle_buffer", "data.resampled",
    "data.loader_workers", "train.grad_clip", "train.grad_accum", "train.precision",
    "train.zero_stage", "train.seed", "resources.workers",
)
FINGERPRINT_CHARS = 12


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


def _data_location(value: str) -> str:
    """A local shard path names files relative to where the job was started: made absolute,
    so the same files give the same identity from any directory (and on a cluster, which
    receives absolute paths)."""
    if "://" in value or value.startswith(("pipe:", "builtin:", "/")) or "${" in value:
        return value
    return os.path.abspath(value)


def identity(spec: JobSpec) -> dict[str, Any]:
    """Dotted field → value, flat and sorted, secrets as `${VAR}`."""
    tree = spec.portable_dump()
    out: dict[str, Any] = {}
    for section in _WHOLE:
        _flatten(_get(tree, section), section, out)
    for name in _FIELDS:
        out[name] = _get(tree, name)
    out["data.train"] = _data_location(out["data.train"])
    return dict(sorted(out.items()))


def fingerprint(fields: dict[str, Any]) -> str:
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:FINGERPRINT_CHARS]


def differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, this job's value, the other run's value) for each field that differs."""
    keys = sorted(set(ours) | set(theirs))
    missing = "(absent)"
    return [(k, ours.get(k, missing), theirs.get(k, missing)) for k in keys
            if ours.get(k, missing) != theirs.get(k, missing)]
