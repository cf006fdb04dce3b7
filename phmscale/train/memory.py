"""Batches held in memory, behind the loader's interface.

Used where the data path must be taken out of a measurement (`phmscale bench step` compares
the engine with a bare loop on the very same batches) or where a test needs exact control of
what each rank sees.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class InMemorySource:
    """A fixed list of batches per epoch; epoch e repeats them in the same order."""

    def __init__(self, batches: Sequence[Batch]):
        if not batches:
            raise ValueError("InMemorySource needs at least one batch")
        self.batches = list(batches)
        self.batches_per_epoch = len(self.batches)

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        yield from self.batches[start_batch:]

    def stream(self, start_batch: int = 0) -> Iterator[Batch]:
        i = start_batch
        while True:
            yield self.batches[i % self.batches_per_epoch]
            i += 1


def take(source: object, count: int) -> list[Batch]:
    """The first `count` batches of a loader's stream, materialized."""
    stream = source.stream(0)  # type: ignore[attr-defined]
    return [next(stream) for _ in range(count)]
