"""The training loader: `make_loader(spec, split, rank, world_size)` → `ShardLoader`.

One read path: a torch DataLoader whose R workers each play one role of the read plan
(plan.py) with webdataset's stages (pipeline.py). DataLoader hands items over round-robin from
its workers, 0, 1, …, R−1, 0, …, and each training role yields the same number of batches per
epoch, so that order is the plan's batch order: batch j of an epoch is role j % R's. This
module checks it (each item names its epoch and role), turns in-band errors into
InvalidInputError, and logs each epoch's dropped surplus and skipped samples.

- `stream(start)`: training. One DataLoader for the whole run: its workers go from epoch to
  epoch without stopping (no worker start, no idle prefetch at an epoch boundary), resumed at
  global batch `start` — worker 0 then plays the role that batch belongs to.
- `iterate(epoch, start)`: one epoch. Validation keeps one DataLoader with persistent workers
  across evaluations (its roles read the same shards every time).

With data.loader_workers 0 the single role runs in this process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.utils.data import DataLoader

from phmscale.data.check import dataset_problems
from phmscale.data.decode import DecodeConfig, to_model
from phmscale.data.pipeline import RoleStream
from phmscale.data.plan import ReadPlan, roles_for
from phmscale.data.shards import ShardSet, resolve
from phmscale.errors import InvalidInputError

if TYPE_CHECKING:
    from phmscale.spec import JobSpec

log = logging.getLogger("phmscale.data")
Batch = tuple[torch.Tensor, torch.Tensor]
PREFETCH_BYTES = 64 << 20  # per worker: batches ready ahead, up to this many bytes (and 2..8)


def _items(item: Any) -> Any:
    """collate_fn: items as the workers made them (picklable: a module-level function)."""
    return item


def decode_config(spec: JobSpec, train: bool, dataset: dict[str, Any] | None) -> DecodeConfig:
    """What a sample becomes for spec.model; normalization from the job, else from the
    statistics `phmscale data pack` recorded (image data)."""
    d, m = spec.data, spec.model
    lm = m.task == "causal_lm"  # only a transformer has seq_len and vocab_size
    mean, std = d.mean, d.std
    channels = m.input_shape[0] if len(m.input_shape) == 3 else 1
    recorded = (dataset or {}).get("mean"), (dataset or {}).get("std")
    if mean is None and recorded[0] and recorded[1] and len(recorded[0]) == channels:
        mean, std = recorded  # recorded for RGB but read as grey (or back): not these
    return DecodeConfig(
        m.task, tuple(m.input_shape), m.seq_len if lm else 0, m.num_classes,
        m.vocab_size if lm else 0, train, spec.train.seed, d.augment,
        tuple(mean) if mean is not None else None, tuple(std) if std is not None else None)


class ShardLoader:
    """Batches for one rank: `stream(start_batch)` (training) and `iterate(epoch, start)`."""

    def __init__(self, spec: JobSpec, split: Literal["train", "val"], shards: ShardSet,
                 rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise InvalidInputError(f"rank {rank} is outside world size {world_size}")
        d = spec.data
        train = split == "train"
        counts = list(shards.counts or [])
        resampled = train and d.resampled
        roles = roles_for(len(counts), world_size, d.loader_workers, resampled=resampled)
        cfg = decode_config(spec, train, shards.dataset)
        self.plan = ReadPlan(
            shards.field, shards.value, tuple(shards.urls), tuple(counts), rank, world_size,
            roles, d.batch_size, spec.train.seed, train, resampled,
            d.shuffle_buffer if train else 0, d.on_error, cfg, d.memory_cache_mib << 20)
        self.split, self.shards, self.rank, self.world_size = split, shards, rank, world_size
        self.train, self.batch_size, self.roles = train, d.batch_size, roles
        self.num_workers = roles if d.loader_workers else 0
        self.batches_per_epoch = self.plan.batches_per_epoch
        sample = 4 * (cfg.seq_len + 1 if cfg.task == "causal_lm" else
                      int(torch.Size(cfg.input_shape).numel()))
        self.prefetch = max(2, min(8, PREFETCH_BYTES // max(1, sample * self.batch_size)))
        self.skipped = 0
        self._val: DataLoader | None = None
        if self.batches_per_epoch == 0:
            raise InvalidInputError(
                f"{shards.field}: {shards.value!r} gives {len(counts)} shard(s) with "
                f"{sum(counts)} samples; split over {world_size} rank(s) × {roles} loader "
                f"role(s) the smallest share is less than one batch of "
                f"data.batch_size={self.batch_size}: use more shards (phmscale data pack "
                f"--shards N), a smaller batch size, fewer data.loader_workers"
                + (", or data.resampled: true" if train else ""))

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _loader(self, dataset: RoleStream, persistent: bool = False) -> DataLoader:
        workers = self.num_workers
        return DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_items,
                          prefetch_factor=self.prefetch if workers else None,
                          persistent_workers=persistent and workers > 0)

    def _batches(self, items: Iterator[Any], first_epoch: int, start: int,
                 limit: int | None) -> Iterator[Batch]:
        """Batches from the workers' items, checked against the plan's order."""
        per_epoch = self.batches_per_epoch
        epoch, index, given, skipped = first_epoch, start, 0, 0
        for item in items:
            if item[0] == "error":
                raise InvalidInputError(item[1])
            _, got_epoch, role, x, y, bad = item
            if self.train and (got_epoch, role) != (epoch, index % self.roles):
                raise RuntimeError(f"loader order broken: got epoch {got_epoch} role {role}, "
                                   f"expected epoch {epoch} role {index % self.roles}")
            self.skipped += bad
            skipped += bad
            x = to_model(x, self.plan.cfg)
            given, index = given + 1, index + 1
            if index == per_epoch:
                self._log_epoch(epoch, skipped)
                epoch, index, skipped = epoch + 1, 0, 0
            yield x, y
            if limit is not None and given == limit:
                break

    def _log_epoch(self, epoch: int, skipped: int) -> None:
        if self.train:
            log.info("%s rank %d/%d epoch %d: %d batches, %d bad samples skipped, %s",
                     self.shards.field, self.rank, self.world_size, epoch, self.batches_per_epoch,
                     skipped, "resampled" if self.plan.resampled else
                     f"{self.plan.surplus(epoch)} surplus samples dropped to keep ranks in step")

    def stream(self, start_batch: int = 0) -> Iterator[Batch]:
        """Training batches forever; start_batch counts from the start of training."""
        epoch, offset = divmod(start_batch, self.batches_per_epoch)
        items = iter(self._loader(RoleStream(self.plan, epoch, offset, None)))
        try:
            yield from self._batches(items, epoch, offset, None)
        finally:  # close() or garbage collection of this generator
            _stop_workers(items)

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """This rank's batches of one epoch, from batch `start_batch` (resume) to the end."""
        left = self.batches_per_epoch - start_batch
        if left <= 0:
            return
        if self.train:
            items = iter(self._loader(RoleStream(self.plan, epoch, start_batch, 1)))
            try:
                yield from self._batches(items, epoch, start_batch, left)
            finally:
                _stop_workers(items)
            return
        # Validation reads the same shards every pass: one DataLoader, workers kept.
        if self._val is None:
            self._val = self._loader(RoleStream(self.plan, 0, 0, 1), persistent=True)
        batches = self._batches(iter(self._val), 0, 0, self.batches_per_epoch)
        for _ in range(start_batch):
            next(batches)
        yield from batches


def _stop_workers(items: Iterator[Any]) -> None:
    """Stop a DataLoader iterator's workers now. Its __del__ does the same, but a traceback
    (an InvalidInputError raised here) keeps the iterator alive, and so the processes."""
    stop = getattr(items, "_shutdown_workers", None)  # absent with num_workers=0
    if stop is not None:
        stop()


def make_loader(spec: JobSpec, split: Literal["train", "val"], rank: int = 0,
                world_size: int = 1) -> ShardLoader:
    """The loader for one rank: `spec.data.train` or `spec.data.val` batched for spec.model."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    value = spec.data.train if split == "train" else spec.data.val
    if value is None:
        raise InvalidInputError("data.val is not set: name validation shards (e.g. the same "
                                "builtin as data.train) or skip evaluation")
    shards = resolve(value, split, spec.data.cache_dir, skip_errors=spec.data.on_error == "skip")
    problems = dataset_problems(shards.dataset, spec, shards.field, value)
    if problems:
        raise InvalidInputError("\n".join(problems))
    return ShardLoader(spec, split, shards, rank, world_size)
