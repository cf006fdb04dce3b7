"""What each DataLoader worker runs for one rank: `EpochDataset` (one epoch) and
`EpochStream` (epochs e, e+1, … in sequence, so a training stream keeps its workers).

Worker w (its "role") reads its share of the rank's shards through webdataset's stages:

    shard URLs (or wds.ResampledShards) → tario.tarfile_to_samples → wds.shuffle (seeded)
    → skip (resume) → decode → wds.batched into chunks of batch_size → tagged with role, epoch

Each chunk carries its role, its epoch and the count of samples skipped since the previous
chunk; a last item marks the role's end of that epoch, and an error travels in-band (the main
process raises it without a worker traceback pasted into the message). A resampled role never
runs dry, so it stops after the chunks the main process will merge from it that epoch. `ReadState` follows the shard and sample being read,
so every error names both, and counts samples that shards.json promised but the shard did not
deliver (a truncated tar) as skipped.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset

from phmscale.data import held as H
from phmscale.data import tario
from phmscale.data.decode import DecodeConfig, collate, decode, to_tensors
from phmscale.errors import InvalidInputError

log = logging.getLogger("phmscale.data")


@dataclass
class ReadState:
    """What a worker is reading now: names errors, and counts shortfalls against shards.json."""

    expected: dict[str, int]
    on_error: str
    url: str = ""
    key: str = ""
    delivered: int = 0
    skipped: int = 0
    warned: int = 0
    collector: H.Collector | None = None  # this pass's decoded samples, to hold whole shards
    collected: dict[str, H.Shard] | None = None  # the shards it came to hold

    def where(self) -> str:
        return f"shard {self.url}" + (f" (after sample {self.key!r})" if self.key else "")

    def fail(self, what: str) -> bool:
        """Raise (on_error=raise) or log and return True to keep going (skip)."""
        if self.on_error == "raise":
            raise InvalidInputError(
                f"{what}; run `phmscale data verify {self.url}` to see every problem, or set "
                f"data.on_error: skip to skip bad samples"
            )
        if self.warned < 5:  # a broken dataset would otherwise flood the log
            log.warning("skipping: %s", what)
            self.warned += 1
        return True

    def handler(self, exn: Exception) -> bool:
        """webdataset's handler protocol (url_opener, tar iterator, group_by_keys)."""
        text = str(exn.args[0]).split(" @ ")[0] if exn.args else repr(exn)
        if self.collector is not None:
            self.collector.spoil(self.url)
        return self.fail(f"{self.where()}: {type(exn).__name__}: {text}")

    def finish_shard(self) -> None:
        """At the end of a shard, samples missing against shards.json are a shortfall."""
        if self.url and self.url in self.expected:
            short = self.expected[self.url] - self.delivered
            if short > 0:
                if self.collector is not None:
                    self.collector.spoil(self.url)
                self.fail(f"{self.where()}: read {self.delivered} samples, shards.json says "
                          f"{self.expected[self.url]} (truncated or corrupt shard)")
                self.skipped += short


# A DataLoader worker hands a tensor to the main process through shared memory: a file per
# storage, its descriptor sent over a socket, mmap'd on arrival, a fixed cost per chunk whatever
# its size. A NumPy array is pickled through the pipe instead, which costs by the byte: cheaper
# for small chunks (an 8×8 digits chunk of 64 is 16 KiB), dearer for large ones, so chunks up to
# this size go as NumPy (docs/benchmarks.md, "Worker hand-over").
PIPE_MAX_BYTES = 128 * 2**10


def for_transfer(t: torch.Tensor) -> torch.Tensor | np.ndarray:
    """A small tensor as a NumPy array (pickled through the pipe), a large one (or a dtype
    NumPy lacks, bfloat16) as it is."""
    small = t.numel() * t.element_size() <= PIPE_MAX_BYTES
    return t.numpy() if small and t.dtype is not torch.bfloat16 else t


def from_transfer(v: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.from_numpy(v) if isinstance(v, np.ndarray) else v


def keep(item: Any) -> Any:
    """The DataLoaders' collate_fn: items as they are (the default would turn the NumPy
    arrays back into tensors in the worker, before the transfer)."""
    return item


@dataclass
class EpochDataset(IterableDataset):
    """One rank's epoch: each DataLoader worker plays one role (its share of the shards)."""

    role_urls: list[list[str]]  # shards per role; ignored when resampled
    all_urls: list[str]
    expected: dict[str, int]
    skip_chunks: tuple[int, ...]
    chunk: int
    cfg: DecodeConfig
    on_error: str
    shuffle_buffer: int
    seeds: tuple[int, ...]  # per role: sample shuffle seed (0: no shuffle)
    resampled: bool = False
    shard_seeds: tuple[int, ...] = field(default_factory=tuple)
    take_chunks: tuple[int, ...] | None = None  # per role: chunks to deliver after the skip
    epoch: int = 0  # tags the items
    # Items every role yields this epoch, its chunks and end marker padded with "pad" items:
    # a DataLoader asks its workers for items in turn, one each, so roles of unequal shares
    # would otherwise drift apart by the difference every epoch of a stream (see loader.py).
    pad_to: int = 0
    # Set by EpochStream (or ShardLoader, reading inline) in the process that iterates: the
    # shards it holds decoded, from earlier epochs (held.py); None reads the tars every time.
    held: H.HeldShards | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__init__()

    def _source(self, role: int) -> Any:
        if self.resampled:
            return wds.ResampledShards(self.all_urls, seed=self.shard_seeds[role],
                                       worker_seed=lambda: 0, deterministic=True)
        urls = self.role_urls[role]
        return lambda: iter([{"url": u} for u in urls])  # (a list would be spliced as stages)

    def _pipeline(self, role: int, state: ReadState) -> wds.DataPipeline:
        def track_shards(src: Iterator[dict]) -> Iterator[dict]:
            for item in src:
                state.finish_shard()
                state.url, state.key, state.delivered = item["url"], "", 0
                yield item
            state.finish_shard()

        def track_samples(src: Iterator[dict]) -> Iterator[dict]:
            for sample in src:
                state.delivered += 1
                state.key = sample["__key__"]
                sample["__index__"] = state.delivered - 1  # its place in the shard
                yield sample

        def decoded(src: Iterator[dict]) -> Iterator[Any]:
            collector = state.collector
            for sample in src:
                try:
                    x, y = decode(sample, self.cfg)
                except Exception as error:  # noqa: BLE001 - any undecodable sample is bad data
                    if collector is not None:
                        collector.spoil(sample.get("__url__", ""))
                    state.fail(f"bad sample {sample.get('__key__')!r} in shard "
                               f"{sample.get('__url__')}: {error}")
                    state.skipped += 1
                    continue
                if collector is not None:
                    collector.add(sample["__url__"], sample["__index__"], x, y)
                yield x, y

        stages: list[Any] = [self._source(role), track_shards,
                             tario.tarfile_to_samples(handler=state.handler), track_samples]
        if self.seeds[role] and self.shuffle_buffer > 1:
            stages.append(wds.shuffle(self.shuffle_buffer, rng=random.Random(self.seeds[role])))
        skip = self.skip_chunks[role] * self.chunk
        if skip:
            stages.append(lambda src: islice(src, skip, None))
        stages += [decoded, wds.batched(self.chunk, collation_fn=collate, partial=True)]
        if self.take_chunks is not None:
            take = self.take_chunks[role]
            stages.append(lambda src: islice(src, take))
        return wds.DataPipeline(*stages)

    def _from_held(self, role: int, x: np.ndarray, y: np.ndarray) -> Iterator[Any]:
        """The pipeline's chunks from held shards: same order, skip, chunks and take."""
        index = H.order(len(y), self.shuffle_buffer, self.seeds[role])
        index = index[self.skip_chunks[role] * self.chunk :]
        chunks = H.chunks(x, y, index, self.chunk)
        if self.take_chunks is not None:
            chunks = islice(chunks, self.take_chunks[role])
        for cx, cy in chunks:
            yield to_tensors(cx, cy)

    def _chunks(self, role: int, state: ReadState) -> Iterator[Any]:
        """This role's chunks: from held shards when it holds them all, else from the tars
        (holding the shards that come whole, when this process holds any)."""
        if self.held is not None and not self.resampled:
            whole = self.held.epoch(self.role_urls[role])
            if whole is not None:
                yield from self._from_held(role, *whole)
                return
            state.collector = self.held.collector(self.expected)
        yield from self._pipeline(role, state)
        if state.collector is not None:
            state.collected = state.collector.commit()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        yield from self.role_items(info.id if info is not None else 0, info is not None)

    def role_items(self, role: int, in_worker: bool = False) -> Iterator[dict[str, Any]]:
        """What role `role` hands the main process this epoch: its chunks, then its end
        marker (with the shards it came to hold, for the main process to hold too), then
        pads."""
        state = ReadState(self.expected, self.on_error)
        reported = sent = 0
        item: dict[str, Any] = {"role": role, "epoch": self.epoch, "x": None, "y": None,
                                "end": False, "error": None, "pad": False}
        try:
            for x, y in self._chunks(role, state):
                if in_worker:  # the chunk crosses to the main process
                    x, y = for_transfer(x), for_transfer(y)
                yield {**item, "x": x, "y": y, "skipped": state.skipped - reported}
                reported, sent = state.skipped, sent + 1
        except InvalidInputError as error:
            # In-band, so the main process raises the message itself rather than DataLoader's
            # re-raise with a worker traceback pasted into it.
            yield {**item, "error": str(error), "skipped": 0}
            return
        yield {**item, "end": True, "skipped": state.skipped - reported,
               "held": state.collected or None}
        for _ in range(self.pad_to - sent - 1):
            yield {**item, "pad": True, "skipped": 0}


@dataclass
class EpochStream(IterableDataset):
    """Epochs `epoch`, epoch+1, … in sequence, each exactly as its own EpochDataset: one
    DataLoader over this keeps its worker processes for a whole training run."""

    make: Callable[[int, int], EpochDataset | None]  # (epoch, start batch) → that epoch's pass
    epoch: int
    start_batch: int
    hold_bytes: int = 0  # decoded shards this process may hold across epochs (0: none)

    def __post_init__(self) -> None:
        super().__init__()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, start = self.epoch, self.start_batch
        held = H.HeldShards(self.hold_bytes) if self.hold_bytes else None  # this process's
        while True:
            dataset = self.make(epoch, start)
            if dataset is not None:  # None: nothing left from `start` (the main process agrees)
                dataset.held = held
                yield from dataset
            epoch, start = epoch + 1, 0
