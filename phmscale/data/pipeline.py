"""What a loader worker runs: `RoleStream`, one role's batches, epoch after epoch.

A rank's shards are dealt to R roles (loader.py plans which); DataLoader worker i plays one
role through every epoch, with webdataset's stages:

    role's shard URLs → wds.tarfile_to_samples → parse (label, array or image bytes)
    → wds.shuffle (seeded) → skip (resume) → materialize (decode, augment, LM crop) → batch

A training role yields exactly `per_role` full batches every epoch — the count its worst-off
share is sure to hold — so the roles stay in step and DataLoader's round-robin over its workers
(worker 0, 1, …, R−1, 0, …: torch keeps that order, whatever the timing) is the batch order. A
role left short by bad samples (data.on_error: skip) tops up from another pass over its shards
(a new shuffle), so its count, and every rank's, holds. Validation roles yield every sample,
the last batch partial, and stop; the DataLoader skips a finished worker.

Errors travel in-band as ("error", message) items, so the main process raises the message
itself, not DataLoader's re-raise with a worker traceback pasted into it. Every error names the
shard URL and the sample key.

Memory: per worker, the shuffle buffer (data.shuffle_buffer parsed samples: arrays, or encoded
image bytes, ~110 KiB each for ImageNet JPEGs, so ~110 MiB at the default 1000), DataLoader's
prefetch (`prefetch` batches) and, only when the job asks for it (data.memory_cache_mib), the
shards it has read whole. Nothing else holds a split, so a 100 GB dataset streams in that bound.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import torch
from torch.utils.data import IterableDataset

from phmscale.data.decode import Parsed, SampleError, collate, materialize, parse
from phmscale.data.plan import ReadPlan, mix_seed
from phmscale.data.urls import webdataset
from phmscale.errors import InvalidInputError

wds = webdataset()  # fsspec schemes in gopen's table before a worker opens a URL
log = logging.getLogger("phmscale.data")
PARSED_OVERHEAD = 120  # bytes a Parsed object and its key cost beside the input's own


@dataclass
class ReadState:
    """What a role is reading now: names errors, counts shortfalls against shards.json."""

    plan: ReadPlan
    url: str = ""
    key: str = ""
    skipped: int = 0
    warned: int = 0
    spoiled: bool = False  # the shard being read had a problem: never cached

    def where(self) -> str:
        return f"shard {self.url}" + (f" (after sample {self.key!r})" if self.key else "")

    def fail(self, what: str, url: str | None = None) -> bool:
        """Raise (on_error=raise), or log and return True to go on (skip)."""
        self.spoiled = True
        if self.plan.on_error == "raise":
            raise InvalidInputError(
                f"{what}; run `phmscale data verify {url or self.url}` to see every problem, "
                f"or set data.on_error: skip to skip bad samples")
        if self.warned < 5:  # a broken dataset would otherwise flood the log
            log.warning("skipping: %s", what)
            self.warned += 1
        return True

    def handler(self, exn: Exception) -> bool:
        """webdataset's handler protocol (url_opener, tar iterator, group_by_keys)."""
        text = str(exn.args[0]).split(" @ ")[0] if exn.args else repr(exn)
        return self.fail(f"{self.where()}: {type(exn).__name__}: {text}")


@dataclass
class RoleStream(IterableDataset):
    """Epochs `first_epoch`, +1, … (`epochs` of them; None: forever) of the roles a
    DataLoader's workers play, resumed at batch `start` of the first epoch."""

    plan: ReadPlan
    first_epoch: int
    start: int
    epochs: int | None
    cache: dict[str, list[Parsed]] = field(default_factory=dict, repr=False)
    cache_bytes: int = 0

    def __post_init__(self) -> None:
        super().__init__()

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        # Batch j of an epoch comes from role j % R; worker 0 must give batch `start`.
        role = (worker + self.start) % self.plan.roles
        epoch, skip = self.first_epoch, self.plan.delivered(self.start, role)
        try:
            while self.epochs is None or epoch < self.first_epoch + self.epochs:
                for x, y, skipped in self.role_epoch(epoch, role, skip):
                    yield "batch", epoch, role, x, y, skipped
                epoch, skip = epoch + 1, 0
        except InvalidInputError as error:
            yield "error", str(error)

    # -- one role, one epoch
    def role_epoch(self, epoch: int, role: int, skip: int) -> Iterator[tuple[Any, Any, int]]:
        """(x, y, bad samples skipped since the last batch): the role's batches from `skip`."""
        plan = self.plan
        state = ReadState(plan)
        need = plan.role_batches(epoch, role) - skip
        made, attempt = 0, 0
        while made < need:
            before = made
            parsed = self._shuffled(epoch, attempt, role, state)
            if attempt == 0 and skip:
                parsed = islice(parsed, skip * plan.batch_size, None)
            for x, y in self._batches(parsed, epoch, state, partial=not plan.train):
                yield x, y, state.skipped
                state.skipped = 0
                made += 1
                if made == need:
                    return
            if not plan.train:
                return  # validation: every sample once, however many batches that is
            what = (f"{plan.field}: rank {plan.rank} loader role {role} got {made + skip} of "
                    f"{need + skip} batches in epoch {epoch}")
            if plan.on_error == "raise" or (attempt and made == before):
                raise InvalidInputError(
                    f"{what}: its shards hold fewer readable samples than shards.json says; "
                    f"run `phmscale data verify` on {plan.value!r}")
            log.warning("%s (bad data skipped); topping up from another pass", what)
            attempt += 1

    def _shuffled(self, epoch: int, attempt: int, role: int,
                  state: ReadState) -> Iterator[Parsed]:
        plan = self.plan
        if plan.resampled:  # shards drawn with replacement, seeded per epoch and role
            draw = random.Random(mix_seed(plan.seed, epoch, attempt, plan.rank, role, 3))
            urls = plan.urls

            def shards() -> Iterator[Parsed]:
                while True:
                    yield from self._shard(draw.choice(urls), state)

            parsed = shards()
        else:
            parsed = (p for url in plan.role_urls(epoch, attempt, role)
                      for p in self._shard(url, state))
        if plan.train and plan.shuffle_buffer > 1:
            rng = random.Random(mix_seed(plan.seed, epoch, attempt, plan.rank, role, 2))
            parsed = wds.shuffle(plan.shuffle_buffer, rng=rng)(parsed)
        return parsed

    def _shard(self, url: str, state: ReadState) -> Iterator[Parsed]:
        """A shard's parsed samples in tar order: from the cache, or read (and cached when it
        came whole and the job gave a cache budget)."""
        cached = self.cache.get(url)
        if cached is not None:
            yield from cached
            return
        state.url, state.key, state.spoiled = url, "", False
        got: list[Parsed] = []
        size = 0
        samples = wds.tarfile_to_samples(handler=state.handler)(iter([{"url": url}]))
        delivered = 0
        for sample in samples:
            delivered += 1
            state.key = str(sample.get("__key__"))
            try:
                p = parse(sample, self.plan.cfg, url)
            except SampleError as error:
                state.fail(f"bad sample {state.key!r} in shard {url}: {error}")
                state.skipped += 1
                continue
            if self.plan.cache_bytes:
                got.append(p)
                size += PARSED_OVERHEAD + (p.x.nbytes if hasattr(p.x, "nbytes") else len(p.x))
            yield p
        expected = self.plan.expected.get(url)
        if expected is not None and delivered < expected:
            state.fail(f"{state.where()}: read {delivered} samples, shards.json says "
                       f"{expected} (truncated or corrupt shard)")
            state.skipped += expected - delivered
        if (self.plan.cache_bytes and not state.spoiled
                and self.cache_bytes + size <= self.plan.cache_bytes):
            self.cache[url] = got
            self.cache_bytes += size

    def _batches(self, parsed: Iterator[Parsed], epoch: int, state: ReadState,
                 partial: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cfg, size = self.plan.cfg, self.plan.batch_size
        batch: list[tuple[Any, Any]] = []
        for p in parsed:
            try:
                batch.append(materialize(p, cfg, epoch))
            except SampleError as error:
                state.fail(f"bad sample {p.key!r} in shard {p.url}: {error}", p.url)
                state.skipped += 1
                continue
            if len(batch) == size:
                yield collate(batch, cfg)
                batch = []
        if batch and partial:
            yield collate(batch, cfg)

