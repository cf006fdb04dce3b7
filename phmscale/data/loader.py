"""The training loader: `make_loader(spec, split, rank, world_size, *, step_on_cpu)`.

Per epoch and rank, everything is derived from (spec.data, spec.train.seed, rank, world size,
epoch), so every process computes the same plan without talking to the others:

1. Shard order: train shuffles the shard list with seed (seed, epoch) — the same permutation on
   every rank — then rank r takes shards r, r+W, r+2W, … (an explicit node split; nothing is
   read from torch.distributed or $RANK). Val keeps the packed order.
2. Loader workers: the rank's shards are dealt to `roles` DataLoader workers the same way
   (role w takes every roles-th shard; roles = data.loader_workers, capped at the shards a rank
   is sure to hold, so no worker idles). Each worker reads its tars (webdataset's tar
   iterator), shuffles samples in a buffer of data.shuffle_buffer seeded by (seed, epoch, rank,
   role), decodes and collates chunks of batch_size samples: batching happens in the workers
   (`torch.utils.data.DataLoader(batch_size=None)`), so the heavy work stays out of the training
   process. `stream` (training) starts its workers once: each worker runs its role through
   epoch e, then e+1, … and tags its chunks with the epoch; they stop when the stream is closed
   or collected. `iterate(epoch)` (validation, tests, the top-up pass below) starts workers for
   that one epoch and stops them at its end. When the step runs on this CPU (`read_inline`),
   val passes and a stream that holds its whole split in memory start none: their roles are
   read here, merged in the same order.
3. Main process: per epoch, merges the workers' chunks in a fixed round-robin order (role 0, 1,
   …, skipping finished roles — enforced here from role and epoch tags, not left to DataLoader
   timing) and cuts exact batches of data.batch_size. Chunks of a later epoch that arrive early
   (one worker is through epoch e while another is still in it) wait for their epoch; `stream`
   yields exactly the batches of iterate(e), iterate(e + 1), …. A DataLoader takes one item
   from each worker in turn, so every role pads its epoch to the same item count (the most
   chunks any role holds, plus its end marker): otherwise a role with half the shards of
   another would run one more half epoch ahead every epoch, its chunks piling up here.

Equal batches on every rank (unequal counts hang DDP/DeepSpeed collectives):
`batches_per_epoch` comes from shards.json counts and is the same on every rank.
- train: shards move between ranks each epoch, so the count is what the worst-off rank is sure
  to have: the floor(S / W) smallest shards, divided by batch_size, rounded down. Every rank
  stops there; the rest of its samples that epoch (the surplus) is dropped and logged. Partial
  batches are never yielded for train. With shards that divide evenly (S % W == 0, equal
  sizes, per-rank count a multiple of batch_size) nothing is dropped: the ranks' union is
  exactly the dataset. E.g. builtin:digits, 1617 samples in 8 shards of 202-203, batch 64:
  1 rank → 25 batches (17 samples dropped per epoch); 4 ranks → 2 shards ≥ 404 → 6 batches.
- val: no shuffle; count = the smallest per-rank ceil(N_r / batch_size); the last batch may be
  partial. With one rank this is the complete split.
- resampled (data.resampled, train only): workers draw shards with replacement; an "epoch" is
  total samples / (W × batch_size) batches, and each worker stops after its share of them.

Counts come from shards.json; shards without one are counted by one sequential read when the
loader is built (see shards.py).

Resume: `iterate(epoch, k)` (and `stream(k)`, counting across epochs) reproduces batches k… of
the uninterrupted epoch exactly. From the per-role sample counts it computes how many whole
chunks each worker had delivered before batch k; workers skip that many samples after the
shuffle and before decoding (so skipped samples cost a tar read, not a decode), and the merge
starts at the role that was next.

Bad data (data.on_error): `raise` stops with an InvalidInputError naming the shard URL and the
last sample key; `skip` drops bad samples (and the unreadable rest of a broken shard, counted
against shards.json) and counts them in `skipped`, logged at the end of each epoch. If skipping
leaves a rank short of batches_per_epoch, it tops up from a second pass over its shards so the
ranks stay in step.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.utils.data import DataLoader

from phmscale.data.check import common_batches, dataset_problems
from phmscale.data.decode import DecodeConfig
from phmscale.data.epoch import EpochDataset, EpochStream, from_transfer, keep
from phmscale.data.held import HeldShards, split_bytes
from phmscale.data.shards import ShardSet, resolve
from phmscale.errors import InvalidInputError

if TYPE_CHECKING:
    from phmscale.spec import JobSpec

log = logging.getLogger("phmscale.data")
Batch = tuple[torch.Tensor, torch.Tensor]


def mix_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (hash() of a str is salted per process; this is not)."""
    digest = hashlib.blake2b(b"".join(int(p).to_bytes(8, "little", signed=True) for p in parts),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# -- planning (main process, pure functions) -----------------------------------------------


@dataclass(frozen=True)
class ResumePlan:
    """Where an epoch restarts: merge from `phase`; worker w skips skip_chunks[w] chunks; the
    main process drops `drop` samples from the first chunk it merges."""

    phase: int
    skip_chunks: tuple[int, ...]
    drop: int


def plan_resume(role_counts: list[float], chunk: int, consumed: int) -> ResumePlan | None:
    """Replay the round-robin merge of chunks until `consumed` samples; None if the roles run
    out first. role_counts may be math.inf (resampled)."""
    roles = len(role_counts)
    if consumed == 0:
        return ResumePlan(0, (0,) * roles, 0)
    done, turn = 0, 0
    while True:
        active = False
        for role, count in enumerate(role_counts):
            left = count - turn * chunk
            if left <= 0:
                continue
            size = chunk if left >= chunk else int(left)
            active = True
            if done + size > consumed:
                skips = tuple(turn + 1 if r < role else turn for r in range(roles))
                return ResumePlan(role, skips, consumed - done)
            done += size
        if not active:
            return None
        turn += 1


# -- the loader (main process) ---------------------------------------------------------------


class ShardLoader:
    """Batches for one rank: `iterate(epoch, start_batch)` and `stream(start_batch)`."""

    def __init__(self, spec: JobSpec, split: Literal["train", "val"], shards: ShardSet,
                 rank: int = 0, world_size: int = 1, *, step_on_cpu: bool = False):
        if not 0 <= rank < world_size:
            raise InvalidInputError(f"rank {rank} is outside world size {world_size}")
        d, m = spec.data, spec.model
        self.split, self.shards, self.rank, self.world_size = split, shards, rank, world_size
        self.train = split == "train"
        self.resampled = self.train and d.resampled
        self.batch_size, self.seed, self.on_error = d.batch_size, spec.train.seed, d.on_error
        self.shuffle_buffer = d.shuffle_buffer if self.train else 0
        self.counts = list(shards.counts or [])
        workers = max(1, d.loader_workers)
        # More roles than shards per rank would leave workers idle: cap them.
        per_rank = len(self.counts) // world_size
        self.roles = workers if self.resampled else max(1, min(workers, per_rank))
        self.num_workers = 0 if d.loader_workers == 0 else self.roles
        lm = m.task == "causal_lm"  # only a transformer has seq_len and vocab_size
        self.cfg = DecodeConfig(m.task, tuple(m.input_shape), m.seq_len if lm else 0,
                                m.num_classes, m.vocab_size if lm else 0, None)
        # Chunks each worker may hold ready. A new epoch's first chunk waits for its shuffle
        # buffer to fill (1000 digits samples, a couple of quickstart steps); DataLoader's
        # default of 2 let that show as a data wait at every epoch start. 16 small chunks
        # hide it; large ones keep to ~64 MiB per worker (float32 bytes of a chunk's inputs).
        sample = math.prod(m.input_shape) if m.task == "classify" else m.seq_len + 1
        self.prefetch = max(2, min(16, (64 << 20) // max(1, 4 * sample * self.batch_size)))
        self.batches_per_epoch: int = common_batches(
            self.counts, world_size, self.batch_size, train=self.train, resampled=self.resampled)
        # Each stream process holds decoded shards across epochs if the whole split fits
        # (held.py): then the quickstart reads its tars in epoch 0 only.
        budget = d.memory_cache_mib << 20
        fits = split_bytes(self.counts, m.input_shape, (shards.dataset or {}).get("dtype"))
        self.hold_bytes = (budget if self.train and not self.resampled and m.task == "classify"
                           and fits <= budget else 0)
        # When the training step runs on this process's CPU, its intra-op threads already
        # fill the cores this worker has (all of them under `phmscale run`; cpus_per_worker
        # under Ray, which sets OMP_NUM_THREADS to it), so loader workers only timeshare with
        # it or with a neighbouring worker. A held train split kept workers for its first
        # epoch or two, slower than reading here, and the hand-over cost a pickle of the whole
        # split through the pipe and a worker shutdown; a val pass started a worker per
        # evaluation, several times a read here. Both are read here instead (figures:
        # docs/benchmarks.md, "Reading inline").
        self.read_inline = step_on_cpu and (bool(self.hold_bytes) or not self.train)
        self.skipped: int = 0
        self.last_epoch_skipped: int = 0
        if self.batches_per_epoch == 0:
            raise InvalidInputError(
                f"{shards.field}: {shards.value!r} gives {len(self.counts)} shard(s) with "
                f"{sum(self.counts)} samples; split over {world_size} rank(s) the smallest "
                f"share is less than one batch of data.batch_size={self.batch_size}: use more "
                f"shards (phmscale data pack --shards N), a smaller batch size"
                + (", or data.resampled: true" if self.train else "")
            )

    # -- per-epoch layout
    def layout(self, epoch: int, attempt: int = 0) -> tuple[list[list[str]], list[float]]:
        """This rank's shards per role for an epoch, and each role's sample count."""
        order = list(range(len(self.shards.urls)))
        if self.train:
            random.Random(mix_seed(self.seed, epoch, attempt, 1)).shuffle(order)
        mine = order[self.rank :: self.world_size]
        roles = [mine[w :: self.roles] for w in range(self.roles)]
        urls = [[self.shards.urls[i] for i in r] for r in roles]
        if self.resampled:
            return urls, [math.inf] * self.roles
        return urls, [float(sum(self.counts[i] for i in r)) for r in roles]

    def _dataset(self, epoch: int, attempt: int, role_urls: list[list[str]],
                 role_counts: list[float], plan: ResumePlan) -> EpochDataset:
        def seed(*parts: int) -> int:
            return mix_seed(self.seed, epoch, attempt, self.rank, *parts) | 1  # never 0

        crop = mix_seed(self.seed, epoch, attempt, 4) if self.train else None
        take = None
        if self.resampled:  # roles never run dry: stop each after its chunks of this epoch
            end = plan_resume([math.inf] * self.roles, self.batch_size,
                              self.batches_per_epoch * self.batch_size)
            assert end is not None
            take = tuple(e - s for e, s in zip(end.skip_chunks, plan.skip_chunks, strict=True))
            chunks = list(take)
        else:  # what each role's shards hold from its skip on (fewer if samples are bad)
            chunks = [max(0, math.ceil(count / self.batch_size) - skip)
                      for count, skip in zip(role_counts, plan.skip_chunks, strict=True)]
        return EpochDataset(
            role_urls=role_urls, all_urls=list(self.shards.urls),
            expected=dict(zip(self.shards.urls, self.counts, strict=True)),
            skip_chunks=plan.skip_chunks,
            chunk=self.batch_size, cfg=replace(self.cfg, crop_seed=crop),
            on_error=self.on_error, shuffle_buffer=self.shuffle_buffer,
            seeds=tuple(seed(role, 2) if self.shuffle_buffer else 0 for role in range(self.roles)),
            resampled=self.resampled,
            shard_seeds=tuple(seed(role, 3) for role in range(self.roles)),
            take_chunks=take, epoch=epoch, pad_to=max(chunks) + 1,
        )

    def _plan(self, epoch: int, attempt: int, start: int) -> tuple[ResumePlan, EpochDataset] | None:
        """A pass over an epoch from batch `start`: the merge's plan and what the workers run;
        None if this rank's shards hold nothing from there."""
        role_urls, role_counts = self.layout(epoch, attempt)
        plan = plan_resume(role_counts, self.batch_size, start * self.batch_size)
        if plan is None:
            return None
        return plan, self._dataset(epoch, attempt, role_urls, role_counts, plan)

    def _stream_epoch(self, epoch: int, start: int) -> EpochDataset | None:
        """What a stream's workers run for `epoch` (the first pass; top-ups are one-off)."""
        planned = self._plan(epoch, 0, start)
        return None if planned is None else planned[1]

    def _merge(self, items: Iterator[dict[str, Any]], phase: int) -> Iterator[Batch]:
        """Chunks in round-robin role order from `phase`, whatever order the workers finish in."""
        pending: dict[int, deque[Batch]] = {r: deque() for r in range(self.roles)}
        ended: set[int] = set()
        role = phase
        while not all(r in ended and not pending[r] for r in range(self.roles)):
            while not pending[role] and role not in ended:
                item = next(items, None)
                if item is None:  # all workers gone
                    ended.update(range(self.roles))
                    break
                if item["pad"]:
                    continue
                self.skipped += item["skipped"]
                self.last_epoch_skipped += item["skipped"]
                if item["error"]:
                    raise InvalidInputError(item["error"])
                if item["end"]:
                    ended.add(item["role"])
                else:
                    pending[item["role"]].append((from_transfer(item["x"]),
                                                  from_transfer(item["y"])))
            if pending[role]:
                yield pending[role].popleft()
            role = (role + 1) % self.roles

    def _batches(self, chunks: Iterator[Batch], drop: int) -> Iterator[Batch]:
        """Exact batches of batch_size from chunks (the last one may be partial)."""
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        held = 0
        for x, y in chunks:
            if drop:
                cut = min(drop, len(x))
                x, y, drop = x[cut:], y[cut:], drop - cut
            if not len(x):
                continue
            xs.append(x)
            ys.append(y)
            held += len(x)
            while held >= self.batch_size:
                bx = xs[0] if len(xs) == 1 else torch.cat(xs)
                by = ys[0] if len(ys) == 1 else torch.cat(ys)
                yield bx[: self.batch_size], by[: self.batch_size]
                rest = len(bx) - self.batch_size
                xs, ys = ([bx[self.batch_size :]], [by[self.batch_size :]]) if rest else ([], [])
                held = rest
        if held:
            yield torch.cat(xs), torch.cat(ys)

    def _pass(self, epoch: int, attempt: int, start: int,
              items: Iterator[dict[str, Any]] | None = None) -> Iterator[Batch]:
        """One pass's batches, from the stream's workers (`items`: this epoch's chunks), read
        here (`read_inline`), or from a DataLoader started for this pass alone."""
        planned = self._plan(epoch, attempt, start)
        if planned is None:
            return
        plan, dataset = planned
        if items is None and self.read_inline:
            items = self._roles_here(dataset, None)
        if items is not None:
            yield from self._batches(self._merge(items, plan.phase), plan.drop)
            return
        loader = DataLoader(dataset, batch_size=None, num_workers=self.num_workers,
                            prefetch_factor=self.prefetch if self.num_workers else None,
                            collate_fn=keep)
        items = iter(loader)
        try:
            yield from self._batches(self._merge(items, plan.phase), plan.drop)
        finally:
            _stop_workers(items)

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """This rank's batches of one epoch, from batch `start_batch` (resume) to the end."""
        yield from self._epoch(epoch, start_batch)

    def _epoch(self, epoch: int, start_batch: int,
               items: Iterator[dict[str, Any]] | None = None) -> Iterator[Batch]:
        """iterate(epoch, start_batch); the first pass reads `items` when a stream gives them."""
        total = self.batches_per_epoch
        emitted, attempt, start = start_batch, 0, start_batch
        self.last_epoch_skipped = 0
        while emitted < total:
            before = emitted
            for x, y in self._pass(epoch, attempt, start, items if attempt == 0 else None):
                if self.train and len(x) < self.batch_size:
                    break  # train never sees a partial batch
                yield x, y
                emitted += 1
                if emitted == total:
                    break
            if emitted == total:
                break
            what = (f"{self.shards.field}: rank {self.rank} got only {emitted} of "
                    f"{total} batches in epoch {epoch}")
            if self.on_error == "raise" or (attempt and emitted == before):
                raise InvalidInputError(
                    f"{what}: its shards hold fewer readable samples than shards.json says; run "
                    f"`phmscale data verify` on {self.shards.value!r}")
            log.warning("%s (bad data skipped); topping up from another pass", what)
            attempt, start = attempt + 1, 0
        if emitted > start_batch or self.last_epoch_skipped:
            self._log_epoch_end(epoch)

    def _log_epoch_end(self, epoch: int) -> None:
        role_counts = self.layout(epoch)[1]
        surplus = sum(role_counts) - self.batches_per_epoch * self.batch_size
        log.info("%s rank %d/%d epoch %d: %d batches, %d bad samples skipped, %s",
                 self.shards.field, self.rank, self.world_size, epoch, self.batches_per_epoch,
                 self.last_epoch_skipped,
                 "resampled" if self.resampled else
                 f"{max(0, int(surplus))} surplus samples dropped to keep ranks in step")

    def stream(self, start_batch: int = 0) -> Iterator[Batch]:
        """Batches forever; start_batch counts from the start of training (all epochs).

        The same batches as iterate(e, offset), iterate(e + 1), … but from one DataLoader whose
        workers live across epochs: starting workers and refilling the shuffle buffer every
        epoch made each epoch's first batch many times slower than the rest (the quickstart,
        builtin:digits, has 25 batches of 64, so 12 epochs in 300 steps). With the workers
        kept, the buffer refill is left, and the worker's prefetch hides it behind the
        training step (figures: docs/benchmarks.md, "Reading inline").

        A stream that reads inline (`read_inline`: the split is held and the step runs on
        this CPU) starts no workers: each epoch's roles are read or served from memory here,
        in the same merge order, so the batches are the same.
        """
        epoch, offset = divmod(start_batch, self.batches_per_epoch)
        if self.read_inline:  # no workers: every epoch made here, read or held (held.py)
            held = HeldShards(self.hold_bytes)
            while True:
                yield from self._inline_epoch(epoch, offset, held)
                epoch, offset = epoch + 1, 0
        loader = DataLoader(EpochStream(self._stream_epoch, epoch, offset, self.hold_bytes),
                            batch_size=None,
                            num_workers=self.num_workers,
                            prefetch_factor=self.prefetch if self.num_workers else None,
                            collate_fn=keep)
        items = iter(loader)
        # What the workers came to hold arrives here too; once this process holds the whole
        # split, it serves every later epoch itself and the workers stop (held.py).
        held = HeldShards(self.hold_bytes) if self.hold_bytes else None
        epochs = _ByEpoch(items, held.add if held is not None else None)
        try:
            while held is None or not held.holds(self.shards.urls):
                yield from self._epoch(epoch, offset, epochs.of(epoch))
                epoch, offset = epoch + 1, 0
            _stop_workers(items)
            while True:
                yield from self._inline_epoch(epoch, offset, held)
                epoch, offset = epoch + 1, 0
        finally:  # close() or garbage collection of this generator
            _stop_workers(items)

    def _inline_epoch(self, epoch: int, start: int, held: HeldShards) -> Iterator[Batch]:
        """iterate(epoch, start) from items made in this process, then the roles run to their
        end as workers would: an epoch stops at batches_per_epoch, before its surplus (17
        digits samples) is read, and a shard is held only once every sample of it came."""
        items = self._inline_items(epoch, start, held)
        yield from self._epoch(epoch, start, items)
        for _ in items:  # the surplus; its bad samples are dropped uncounted, as a stream's are
            pass

    def _inline_items(self, epoch: int, start: int,
                      held: HeldShards) -> Iterator[dict[str, Any]]:
        """The items the stream's workers would hand over for `epoch`, made in this process:
        a role whose shards `held` has all comes from memory (no tar read, no decode, nothing
        through a pipe: about ten times cheaper a batch than a worker's queue on busy cores);
        any other role reads its tars here and adds the shards that come whole to `held`."""
        dataset = self._stream_epoch(epoch, start)
        if dataset is not None:
            yield from self._roles_here(dataset, held)

    def _roles_here(self, dataset: EpochDataset,
                    held: HeldShards | None) -> Iterator[dict[str, Any]]:
        """Every role of `dataset` run in this process, merged as a DataLoader over workers
        would hand their items over."""
        dataset.held = held
        roles = [dataset.role_items(role) for role in range(self.roles)]
        while roles:  # in turn, one item each, as a DataLoader takes them from its workers
            for role in list(roles):
                item = next(role, None)
                if item is None:
                    roles.remove(role)
                else:
                    yield item

    def __len__(self) -> int:
        return self.batches_per_epoch


class _ByEpoch:
    """A stream's epoch-tagged items, one epoch at a time (epochs are asked for in order)."""

    def __init__(self, items: Iterator[dict[str, Any]],
                 on_held: Callable[[dict[str, Any]], None] | None = None):
        self.items = items
        self.on_held = on_held  # gets the shards an end marker brings, whatever its epoch
        self.early: dict[int, deque[dict[str, Any]]] = {}  # epoch → items that came early

    def of(self, epoch: int) -> Iterator[dict[str, Any]]:
        """Epoch `epoch`'s items in arrival order. A later epoch's are held for it; an earlier
        one's (what followed its last batch: surplus, end markers) are dropped, as iterate
        drops them by stopping its workers."""
        early = self.early.pop(epoch, deque())
        while early:
            yield early.popleft()
        for item in self.items:
            if self.on_held is not None and item.get("held"):
                self.on_held(item["held"])
            if item["epoch"] == epoch:
                yield item
            elif item["epoch"] > epoch and not item["pad"]:
                self.early.setdefault(item["epoch"], deque()).append(item)


def _stop_workers(items: Iterator[dict[str, Any]]) -> None:
    """Stop a DataLoader iterator's workers now. Its __del__ does the same, but a traceback
    (an InvalidInputError from _merge) keeps the iterator alive, and so the processes."""
    stop = getattr(items, "_shutdown_workers", None)  # absent with num_workers=0
    if stop is not None:
        stop()


def make_loader(spec: JobSpec, split: Literal["train", "val"], rank: int = 0,
                world_size: int = 1, *, step_on_cpu: bool = False) -> ShardLoader:
    """The loader for one rank: `spec.data.train` or `spec.data.val` batched for spec.model.
    `step_on_cpu`: the training step runs on this process's CPU cores, so the val split, and
    a train split held whole in memory, are read here rather than in loader workers."""
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
    return ShardLoader(spec, split, shards, rank, world_size, step_on_cpu=step_on_cpu)
