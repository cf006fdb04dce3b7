"""Checkpoint saves that do not stall training: DeepSpeed gathers the state in the loop, a
thread writes the files.

What DeepSpeed 0.19.8 and torch offer, and why this is none of them:
- `DecoupledCheckpointEngine` (`checkpoint.writer.decoupled`): a writer subprocess per rank fed
  through a multiprocessing queue, writing with `FastCheckpointEngine` (DeepSpeed's async-I/O
  op, libaio), committed at the next `engine.step`. It writes DeepSpeed's own `latest` file and
  knows nothing of a save written aside and renamed (checkpoint.py), and its commit runs inside
  `engine.step` where we cannot put the marker and rotation.
- `DataStatesCheckpointEngine`: needs the external `datastates` package.
- `torch.distributed.checkpoint.async_save`: DCP's own layout (`.distcp` shards and a
  metadata file), which neither `engine.load_checkpoint` nor `zero_to_fp32` (export) reads.

So DeepSpeed's own `save_checkpoint` runs as before, with its checkpoint engine swapped for
`SnapshotEngine`: each `save(state_dict, path)` copies the state to CPU memory (the part that
blocks the loop: a memcpy, or a device-to-host copy on GPU) and `commit` hands the copies to a
thread that `torch.save`s them. Files and layout stay DeepSpeed's, so resume and export are
unchanged for every ZeRO stage. The cost is host memory: one CPU copy of this rank's model and
optimizer state while a save is in flight.
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine


def snapshot(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """A copy of a state dict the loop may go on changing: every tensor copied to CPU, every
    container rebuilt (the optimizer's param_groups are updated in place by the scheduler),
    the same tensor twice (tied weights) copied once so torch.save still ties them."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, torch.Tensor):
        # On CPU `clone`, on GPU a blocking device-to-host copy: pinned buffers would make
        # the copy asynchronous but cost a cudaHostAlloc per save unless kept between saves.
        out: Any = obj.detach().clone() if obj.device.type == "cpu" else obj.detach().cpu()
    elif isinstance(obj, dict):
        out = copy.copy(obj)  # keeps the type (OrderedDict, defaultdict)
        for key, value in obj.items():
            out[key] = snapshot(value, memo)
    elif isinstance(obj, list):
        out = [snapshot(v, memo) for v in obj]
    elif isinstance(obj, tuple):
        items = [snapshot(v, memo) for v in obj]
        out = type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes, Path)):
        return obj
    else:
        out = copy.deepcopy(obj)
    memo[id(obj)] = out
    return out


def write(files: list[tuple[Any, str]], zipfile: bool) -> float:
    """torch.save each (state, path), in the order DeepSpeed handed them over; the seconds it
    took."""
    t0 = time.perf_counter()
    for state, path in files:
        torch.save(state, path, _use_new_zipfile_serialization=zipfile)
    return time.perf_counter() - t0


class SnapshotEngine(TorchCheckpointEngine):
    """DeepSpeed's torch checkpoint engine, with the writing moved to a thread: `save` takes a
    CPU copy, `commit` (the end of `engine.save_checkpoint`) hands the copies to the writer.
    Loading is torch's, unchanged.

    The writer is one long-lived thread, started here, before training: starting a thread
    waits until the OS schedules it, 7-9 ms on 2 busy cores (docs/benchmarks.md), more than
    the rest of a small model's stall. Python joins it at exit, so an interpreter leaving
    after a save still finishes writing its files."""

    def __init__(self, config_params: Any = None):
        super().__init__(config_params)
        self.name = "PhmscaleSnapshotEngine"
        self.files: list[tuple[Any, str]] = []
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phmscale-ckpt-writer")
        self.pool.submit(lambda: None)  # start the thread now, outside the loop
        self.writing: Future[float] | None = None

    def preserves_storage_sharing(self) -> bool:
        return False  # every tensor is copied alone: a view never drags its whole storage

    def save(self, state_dict: Any, path: str) -> None:
        self.files.append((snapshot(state_dict), path))

    def commit(self, info: Any) -> bool:
        self.wait()  # one save in flight: a second waits for the first
        files, self.files = self.files, []
        self.writing = self.pool.submit(write, files, bool(self.zipfile_serialization))
        return True

    def written(self) -> bool:
        """The last save's files are all on disk (or its writer failed: `wait` raises)."""
        return self.writing is None or self.writing.done()

    def wait(self) -> float:
        """Block until the save in flight is written, raising the writer's error; the seconds
        writing took (0 when none was in flight)."""
        writing, self.writing = self.writing, None
        if writing is None:
            return 0.0
        try:
            return writing.result()
        except Exception as error:
            raise RuntimeError(f"checkpoint write failed: {error!r}") from error


def install(engine: Any) -> SnapshotEngine | None:
    """Swap a DeepSpeed engine's checkpoint engine for `SnapshotEngine` (after `initialize`,
    which builds the torch one from the config; a job that configured another writer in
    train.deepspeed.checkpoint keeps it and saves synchronously)."""
    current = engine.checkpoint_engine
    if type(current) is not TorchCheckpointEngine:
        return current if isinstance(current, SnapshotEngine) else None
    snap = SnapshotEngine(getattr(engine, "_config", None))
    engine.checkpoint_engine = snap
    _skip_tag_validation(engine)
    return snap


def _skip_tag_validation(engine: Any) -> None:
    """DeepSpeed checks that every rank saves under the same tag with two all-reduces per save
    (`tag_validation`, default WARN): ~1.3 ms of a save's ~9 ms stall on the quickstart
    (docs/benchmarks.md). Our tags are made from the step, which every rank agreed on (the
    loop's per-step collective), so the check can only pass; a job that set the option in
    train.deepspeed.checkpoint keeps its choice."""
    from deepspeed.runtime.constants import CHECKPOINT_TAG_VALIDATION, ValidationMode

    user = ((getattr(engine, "config", None) or {}).get("checkpoint") or {})
    if "tag_validation" not in user:
        engine._config.checkpoint_config[CHECKPOINT_TAG_VALIDATION] = ValidationMode.IGNORE


def snapshot_engine(engine: Any) -> SnapshotEngine | None:
    current = getattr(engine, "checkpoint_engine", None)
    return current if isinstance(current, SnapshotEngine) else None
