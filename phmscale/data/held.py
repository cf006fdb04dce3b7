"""Decoded shards a loader process holds in memory across the epochs of a training stream.

Why: the quickstart reads builtin:digits (1617 samples in 8 shards) 12 times in 300 steps, and
reading a tar and decoding each sample in Python every epoch is work a loader worker did on the
CPU the training step's threads needed, which slowed the engine well below a bare loop on
batches in memory (`phmscale bench step`; figures in docs/benchmarks.md, "Held shards"). With
the step on the CPU the training process now reads the split itself, once (loader.py,
`read_inline`).

What: a shard read whole and clean (every sample shards.json promised, no error, no resume
skip) is kept as two arrays, x (N, *input_shape) in its decoded dtype and y (N,) int64. An epoch
whose shards a role holds all of is served from them: the same shuffle (webdataset's own, run
over sample indices with the same seeded rng), the same resume skip and chunking, so it yields
the very batches a read of the tars would — a NumPy gather per chunk instead of a tar parse and
decode per sample.

When (`ShardLoader.hold_bytes`): training streams of classify jobs, not resampled, whose whole
split fits data.memory_cache_mib in every loader process. Shards move between ranks and roles
every epoch, so any process may read any shard; one that could hold only part of the split
would rarely find a role's shards all held. LM jobs crop a new window every epoch, so their
decoded samples cannot be reused. What is held is what was read: a shard rewritten on disk
during training is not read again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import webdataset as wds

# Per sample beside its input: the int64 label.
LABEL_BYTES = 8


def split_bytes(counts: Sequence[int], input_shape: Sequence[int], dtype: str | None) -> int:
    """What a split's decoded samples take in memory. decode keeps uint8 inputs as uint8 and
    makes everything else float32; a dataset without a shards.json dtype counts as float32."""
    itemsize = 1 if dtype == "uint8" else 4
    return sum(counts) * (math.prod(input_shape) * itemsize + LABEL_BYTES)


@dataclass
class Shard:
    """One shard's decoded samples, in tar order."""

    x: np.ndarray  # (N, *input_shape) uint8 or float32
    y: np.ndarray  # (N,) int64

    @property
    def nbytes(self) -> int:
        return self.x.nbytes + self.y.nbytes


class HeldShards:
    """The shards this process holds, by URL, within a byte budget."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.shards: dict[str, Shard] = {}
        self.bytes = 0

    def epoch(self, urls: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """A role's epoch as one (x, y) in shard order, if every one of its shards is held."""
        held = [self.shards.get(u) for u in urls]
        if not held or any(s is None for s in held):
            return None
        shards = [s for s in held if s is not None]
        if len({s.x.dtype for s in shards}) > 1:  # concatenating would cast uint8 unscaled
            return None
        return np.concatenate([s.x for s in shards]), np.concatenate([s.y for s in shards])

    def holds(self, urls: Sequence[str]) -> bool:
        return all(u in self.shards for u in urls)

    def add(self, shards: dict[str, Shard]) -> None:
        """Shards held elsewhere (a loader worker's, arriving with its end-of-epoch item)."""
        for url, shard in shards.items():
            if url not in self.shards and self.bytes + shard.nbytes <= self.budget:
                self.shards[url] = shard
                self.bytes += shard.nbytes

    def collector(self, expected: dict[str, int]) -> Collector:
        return Collector(self, expected)


@dataclass
class Collector:
    """One pass's decoded samples by shard; `commit` keeps the shards that came whole."""

    held: HeldShards
    expected: dict[str, int]  # url → samples shards.json promises
    samples: dict[str, dict[int, tuple[np.ndarray, int]]] = field(default_factory=dict)
    spoiled: set[str] = field(default_factory=set)
    pending: int = 0  # bytes collected, not yet held
    full: bool = False

    def add(self, url: str, index: int, x: np.ndarray, y: int) -> None:
        if self.full or url in self.spoiled or url in self.held.shards:
            return
        size = x.nbytes + LABEL_BYTES
        if self.held.bytes + self.pending + size > self.held.budget:
            self.full = True  # the budget was sized for the whole split; stop, keep nothing more
            return
        self.samples.setdefault(url, {})[index] = (x, y)
        self.pending += size

    def spoil(self, url: str) -> None:
        """A shard with a bad sample or a read error is never held (it is read, and its
        problems counted, every epoch)."""
        self.spoiled.add(url)
        self.pending -= sum(x.nbytes + LABEL_BYTES for x, _ in self.samples.pop(url, {}).values())

    def commit(self) -> dict[str, Shard]:
        """Hold the shards that came whole; returns them."""
        new: dict[str, Shard] = {}
        for url, got in self.samples.items():
            n = self.expected.get(url, -1)
            if url in self.spoiled or len(got) != n or any(i not in got for i in range(n)):
                continue  # not whole: read again next epoch
            xs = [got[i][0] for i in range(n)]
            if len({x.dtype for x in xs}) > 1:
                continue
            shard = Shard(np.stack(xs), np.asarray([got[i][1] for i in range(n)], np.int64))
            self.held.shards[url] = new[url] = shard
            self.held.bytes += shard.nbytes
        self.samples.clear()
        self.pending = 0
        return new


def order(count: int, shuffle_buffer: int, seed: int) -> np.ndarray:
    """The sample order a read of the tars gives: webdataset's shuffle over indices 0..count-1,
    with the rng the tar path seeds (no shuffle when seed is 0 or the buffer is ≤ 1)."""
    if not seed or shuffle_buffer <= 1:
        return np.arange(count, dtype=np.int64)
    shuffled = wds.shuffle(shuffle_buffer, rng=random.Random(seed))(iter(range(count)))
    return np.fromiter(shuffled, np.int64, count)


def chunks(x: np.ndarray, y: np.ndarray, index: np.ndarray,
           chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(x[i], y[i]) for consecutive runs i of `chunk` indices (the last may be short)."""
    for start in range(0, len(index), chunk):
        i = index[start : start + chunk]
        yield x[i], y[i]
