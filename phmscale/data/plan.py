"""The read plan: which shards each rank and loader role reads in each epoch, and how many
batches that makes. Pure arithmetic on (shard counts, seed, rank, world size, epoch): every
process computes the same plan without talking to the others, and validate-time checks use it
without importing torch.

1. Shard order: train shuffles the shard list with seed (seed, epoch) — the same permutation on
   every rank — then rank r takes shards r, r+W, r+2W, … Val keeps the packed order.
2. Roles: the rank's shards are dealt to R roles the same way (role w takes every R-th);
   R = data.loader_workers (at least 1), capped at the shards a rank is sure to hold, so no
   role is empty. DataLoader worker i plays one role for the whole run.
3. Batches: a training role yields K full batches per epoch, K being what the worst-off role
   of any rank and epoch is sure to hold: the S // (W·R) smallest shards, divided by the batch
   size. An epoch is R·K batches on every rank (equal counts: unequal ones hang collectives);
   the rest of a role's samples that epoch (the surplus) is dropped and logged. E.g.
   builtin:digits, 1617 samples in 8 shards of 202-203, batch 64: 1 rank, 1 role → 25 batches
   (17 samples dropped); 1 rank, 2 roles → 2 × 12; 4 ranks, 2 roles → 2 × 3. Validation roles
   yield every sample (the last batch of each partial); an epoch is the smallest rank's count.
   Resampled (train only): roles draw shards with replacement; K = total / (W·R·batch).

Resume: batch j of an epoch is role j % R's (j // R)-th, so batch `start` is reached by each
role skipping the batches of its own that came before, after its shuffle and before decoding.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phmscale.data.decode import DecodeConfig


def mix_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (hash() of a str is salted per process; this is not)."""
    digest = hashlib.blake2b(b"".join(int(p).to_bytes(8, "little", signed=True) for p in parts),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def roles_for(shards: int, world: int, loader_workers: int, *, resampled: bool) -> int:
    """Roles (DataLoader workers) per rank: loader_workers, at least 1, at most the shards a
    rank is sure to hold (resampled roles draw from every shard, so no cap)."""
    workers = max(1, loader_workers)
    return workers if resampled else max(1, min(workers, shards // world))


def common_batches(counts: list[int], world: int, batch: int, *, train: bool,
                   resampled: bool, roles: int = 1) -> int:
    """Batches per epoch, the same on every rank (see the module docstring)."""
    if not counts:
        return 0
    if resampled:
        return roles * max(1, sum(counts) // (world * roles * batch))
    if train:
        return roles * (sum(sorted(counts)[: len(counts) // (world * roles)]) // batch)
    return min(sum(math.ceil(sum(counts[i] for i in share) / batch)
                   for share in role_shards(range(len(counts)), r, world, roles))
               for r in range(world))


def role_shards(order: range | list[int], rank: int, world: int,
                roles: int) -> list[list[int]]:
    """Shard indices of each role of `rank`, from the epoch's shard order."""
    mine = list(order)[rank::world]
    return [mine[w::roles] for w in range(roles)]


@dataclass(frozen=True)
class ReadPlan:
    """Everything a loader worker needs to read its role (picklable)."""

    field: str  # data.train / data.val, for messages
    value: str
    urls: tuple[str, ...]
    counts: tuple[int, ...]
    rank: int
    world: int
    roles: int
    batch_size: int
    seed: int
    train: bool
    resampled: bool
    shuffle_buffer: int
    on_error: str
    cfg: DecodeConfig
    cache_bytes: int  # parsed samples a worker may keep across epochs (data.memory_cache_mib)

    # Cached: a worker looks a shard's count up at every shard's end, and every role asks
    # for the batch count every epoch (a sort of all counts).
    @cached_property
    def expected(self) -> dict[str, int]:
        return dict(zip(self.urls, self.counts, strict=True))

    @cached_property
    def batches_per_epoch(self) -> int:
        return common_batches(list(self.counts), self.world, self.batch_size, train=self.train,
                              resampled=self.resampled, roles=self.roles)

    def shares(self, epoch: int, attempt: int = 0) -> list[list[int]]:
        """This rank's shard indices per role in `epoch` (attempt > 0: a top-up pass)."""
        order = list(range(len(self.urls)))
        if self.train:
            random.Random(mix_seed(self.seed, epoch, attempt, 1)).shuffle(order)
        return role_shards(order, self.rank, self.world, self.roles)

    def role_urls(self, epoch: int, attempt: int, role: int) -> list[str]:
        return [self.urls[i] for i in self.shares(epoch, attempt)[role]]

    def role_batches(self, epoch: int, role: int) -> int:
        """Batches role `role` yields in `epoch`: K for training, every sample for val."""
        if self.train:
            return self.batches_per_epoch // self.roles
        count = sum(self.counts[i] for i in self.shares(epoch)[role])
        return math.ceil(count / self.batch_size)

    def delivered(self, start: int, role: int) -> int:
        """Batches role `role` gave before batch `start` of a training epoch."""
        return max(0, -(-(start - role) // self.roles))

    def surplus(self, epoch: int) -> int:
        """Samples this rank reads past the epoch's batches (dropped to keep ranks in step)."""
        held = sum(self.counts[i] for share in self.shares(epoch) for i in share)
        return max(0, held - self.batches_per_epoch * self.batch_size)
