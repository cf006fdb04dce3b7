"""Validate-time data checks: `check_data(spec, world_size) -> list[str]`.

Cheap (no shard is read; only patterns, file existence and shards.json), so `phmscale validate`
and the engine can run it before starting workers. Each message names the field, the pattern
and the fix. The traps it guards (WebDataset users' known ones): fewer shards than ranks ×
loader workers starve workers and hang collectives; a pattern that matches nothing fails only
minutes into a run on a cluster; data that does not fit the model fails at the first batch.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from phmscale.data import urls as U
from phmscale.data.builtins import BUILTIN_DATASETS, BUILTIN_SHARDS, BUILTINS, builtin_dir
from phmscale.data.index import INDEX_NAME, read_index
from phmscale.data.plan import common_batches, roles_for
from phmscale.data.shards import packed_folder, resolve
from phmscale.data.tokenizer import packed_tokenizer_problems, tokenizer_problems
from phmscale.errors import InvalidInputError

if TYPE_CHECKING:
    from phmscale.spec import JobSpec


def dataset_problems(dataset: dict[str, Any] | None, spec: JobSpec, field: str,
                     value: str) -> list[str]:
    """Ways the packed samples (shards.json's dataset block) cannot feed spec.model."""
    if not dataset:
        return []
    m, task = spec.model, dataset.get("task")
    where = f"{field}: {value!r}"
    if task and task != m.task:
        return [f"{where} holds {task} samples but model.task is {m.task}: set model.task: "
                f"{task} or point {field} at {m.task} data"]
    problems = []
    shape = dataset.get("shape")
    if task == "classify":
        arrays = "npy" in dataset.get("keys", [])  # images are resized; arrays must fit
        if shape and arrays and math.prod(shape) != math.prod(m.input_shape):
            problems.append(f"{where} has samples of shape {shape} but model.input_shape is "
                            f"{list(m.input_shape)}: set model.input_shape: {shape}")
        classes = dataset.get("num_classes")
        if classes and classes > m.num_classes:
            problems.append(f"{where} has {classes} classes but model.num_classes is "
                            f"{m.num_classes}: set model.num_classes: {classes}")
    elif task == "causal_lm":
        chunk = dataset.get("chunk_len") or (shape[0] if shape else None)
        if chunk and chunk < m.seq_len + 1:
            problems.append(f"{where} has chunks of {chunk} tokens; model.seq_len={m.seq_len} "
                            f"needs {m.seq_len + 1}: lower model.seq_len to {chunk - 1} or repack "
                            f"with --chunk-len {m.seq_len + 1}")
        vocab = dataset.get("vocab_size")
        if vocab and vocab > m.vocab_size:
            problems.append(f"{where} holds tokens up to {vocab - 1} but model.vocab_size is "
                            f"{m.vocab_size}: set model.vocab_size: {vocab}")
        problems += packed_tokenizer_problems(dataset, spec.data.tokenizer, where)
    return problems


def _shards_of(value: str, split: str, cache_dir: str | None) -> tuple[list[str], list[int] | None,
                                                                       dict[str, Any] | None]:
    """(urls, counts or None, dataset block or None) without packing or reading shards."""
    if value.startswith("builtin:"):
        name = value.removeprefix("builtin:")
        folder = builtin_dir(name, cache_dir)  # raises for an unknown name
        index = read_index(str(folder)) if (folder / INDEX_NAME).exists() else None
        if index is None:  # not packed yet: it will be, with BUILTIN_SHARDS shards per split
            return [f"{value}#{i}" for i in range(BUILTIN_SHARDS)], None, BUILTIN_DATASETS[name]
        shards = index["splits"].get(split, {}).get("shards", [])
        return shards, [index["shards"][s]["count"] for s in shards], index["dataset"]
    shards = resolve(value, split, cache_dir, count=False)
    return shards.urls, shards.counts, shards.dataset


def _check_field(spec: JobSpec, split: str, value: str, world: int, workers: int) -> list[str]:
    field, d = f"data.{split}", spec.data
    try:
        urls, counts, dataset = _shards_of(value, split, d.cache_dir)
    except InvalidInputError as error:
        message = str(error)
        if "matches no shards" in message:
            where = os.path.abspath(os.path.dirname(os.path.expanduser(value)) or ".")
            message = (f"{field}: {value!r} matches no files (looked in {where}): pack the data "
                       f"first (phmscale data pack SOURCE DIR) or fix the path")
        elif value.startswith("builtin:"):
            message = f"{field}: {message}"
        return [message if message.startswith(field) else f"{field}: {message}"]
    if value.startswith("builtin:") or packed_folder(value):
        missing = []
    else:
        missing = [u for u in urls if U.is_local(u) and not os.path.isfile(U.local_path(u))]
    if missing:
        where = os.path.dirname(os.path.abspath(U.local_path(missing[0])))
        if len(missing) == len(urls):
            return [f"{field}: {value!r} matches no files (looked in {where}): pack the data "
                    f"first (phmscale data pack SOURCE DIR) or fix the path"]
        return [f"{field}: {len(missing)} of {len(urls)} shard(s) named by {value!r} do not "
                f"exist (e.g. {missing[0]}): fix the pattern's range or pack the missing shards"]
    problems = []
    resampled = split == "train" and d.resampled
    need = world * workers if split == "train" else world
    if len(urls) < need and not resampled:
        who = (f"{world} rank(s) × {workers} loader worker(s)" if split == "train"
               else f"{world} rank(s) (each evaluates its own shards)")
        fixes = (f"repack with --shards {need} (phmscale data pack … --shards {need})"
                 + (", lower data.loader_workers, or set data.resampled: true"
                    if split == "train" else ""))
        problems.append(f"{field}: {value!r} has {len(urls)} shard(s) but {who} need at "
                        f"least {need}, or some sit idle and collectives hang: {fixes}")
    elif counts and common_batches(
            counts, world, d.batch_size, train=split == "train", resampled=resampled,
            roles=roles_for(len(counts), world, d.loader_workers, resampled=resampled)) == 0:
        problems.append(f"{field}: {value!r} holds {sum(counts)} samples in {len(counts)} "
                        f"shard(s): over {world} rank(s) × {workers} loader worker(s) the "
                        f"smallest share is under one batch of data.batch_size={d.batch_size}: "
                        f"lower data.batch_size or data.loader_workers, or add data")
    return problems + dataset_problems(dataset, spec, field, value)


def check_data(spec: JobSpec, world_size: int | None = None) -> list[str]:
    """Problems with spec.data for `world_size` ranks (default resources.workers); [] if none.

    Built-ins that are not packed yet count as fine (they are packed with 8 shards per split).
    loader_workers 0 counts as one reader per rank.
    """
    world = world_size or spec.resources.workers
    workers = max(1, spec.data.loader_workers)
    problems: list[str] = []
    d, shape = spec.data, spec.model.input_shape
    channels = shape[0] if len(shape) == 3 else 1
    if d.mean is not None and spec.model.task == "classify" and len(d.mean) != channels:
        problems.append(f"data.mean/data.std: {len(d.mean)} value(s) but model.input_shape "
                        f"{list(shape)} has {channels} channel(s): give one per channel")
    if d.augment != "none" and (spec.model.task != "classify" or len(shape) != 3):
        problems.append(f"data.augment: {d.augment} needs images (model.task classify, "
                        f"model.input_shape [C, H, W]), not {spec.model.task} with input_shape "
                        f"{list(shape)}: set data.augment: none")
    for split in ("train", "val"):
        value = getattr(spec.data, split)
        if value is not None:
            problems += _check_field(spec, split, value, world, workers)
    vocab = getattr(spec.model, "vocab_size", None)  # ResNets have none
    return problems + tokenizer_problems(spec.data.tokenizer, spec.model.task, vocab)


__all__ = ["BUILTINS", "check_data", "common_batches", "dataset_problems"]


def check_job_data(spec: JobSpec, source: str, world_size: int | None = None) -> None:
    """`check_data`'s problems as one InvalidInputError naming the job file (`source`):
    what validate, run, submit, sweep and bench paper refuse before anything starts."""
    problems = check_data(spec, world_size)
    if problems:
        lines = [f"invalid job {source} ({len(problems)} data problem(s)):"]
        text = "\n".join(lines + [f"  {source}: {p}" for p in problems])
        raise InvalidInputError(spec.mask(text))  # a problem may quote a secret URL
