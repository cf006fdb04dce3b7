"""Decoded shards held in memory across a stream's epochs (data/held.py): the same batches as
reading the tars, no tar read once held, and only what fits and came whole is held."""

from __future__ import annotations

import multiprocessing
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from phmscale.data import make_loader
from phmscale.data.held import HeldShards, split_bytes
from phmscale.errors import InvalidInputError
from tests.data.helpers import id_dataset, ids, spec, write_shards


def _iterated(loader, start: int, count: int) -> list[int]:
    """Ids of `count` batches from batch `start` (all epochs), each epoch a fresh read of the
    tars (iterate() never holds)."""
    p = loader.batches_per_epoch
    got: list[int] = []
    epoch, offset = divmod(start, p)
    while len(got) < count * loader.batch_size:
        got += ids(list(loader.iterate(epoch, offset)))
        epoch, offset = epoch + 1, 0
    return got[: count * loader.batch_size]


@pytest.mark.parametrize("workers,world,rank,inline", [
    (0, 1, 0, False), (1, 1, 0, False), (2, 1, 0, False), (2, 2, 1, False),
    (2, 1, 0, True), (2, 2, 1, True),  # read in this process (the step runs on the CPU)
])
def test_held_epochs_are_the_tar_epochs_and_read_no_tar(tmp_path: Path, workers: int,
                                                         world: int, rank: int,
                                                         inline: bool) -> None:
    sizes = [11, 3, 9, 14, 5, 7, 2, 13, 4, 10]  # uneven: roles finish epochs at other times
    pattern = write_shards(tmp_path / "uneven", sizes)
    s = spec(pattern, shuffle_buffer=6, loader_workers=workers)
    loader = make_loader(s, "train", rank, world, step_on_cpu=inline)
    assert loader.hold_bytes > 0 and loader.read_inline is inline
    reference = make_loader(s, "train", rank, world)  # iterate() through workers, as before
    p = loader.batches_per_epoch
    # Held shards reach the main process with a role's end marker, read during the next
    # epoch; a resume's first epoch skips samples, so its shards come whole an epoch later.
    epochs = 8 if world > 1 else 6  # a rank of 2 needs epochs to have read every shard
    for start in (0, 2 * p + 3):  # from the start, and resumed inside a held epoch
        want = _iterated(reference, start, epochs * p - start)
        stream = loader.stream(start_batch=start)
        got = ids(list(islice(stream, 1)))
        if inline:  # its roles are read here, in the same merge order: no worker ever starts
            assert multiprocessing.active_children() == []
        got += ids(list(islice(stream, epochs * p - start - 1)))
        if world == 1:
            assert multiprocessing.active_children() == []  # the whole split is held here
        stream.close()
        assert got == want, f"start_batch {start}"
    if world > 1:
        return
    # Once held, the tars are not read again: gone from disk, the stream goes on.
    want = _iterated(reference, 0, 4 * p)
    stream = loader.stream(0)
    got = ids(list(islice(stream, 2 * p)))
    for tar in (tmp_path / "uneven").glob("*.tar"):
        tar.unlink()
    got += ids(list(islice(stream, 2 * p)))
    stream.close()
    assert got == want


def test_a_stream_read_inline_holds_the_split_after_one_epoch(tmp_path: Path) -> None:
    """Its epoch stops at batches_per_epoch, before the surplus is read; the roles then run to
    their end (as workers would) so every shard came whole and is held from epoch 1 on."""
    pattern = write_shards(tmp_path / "uneven", [11, 3, 9, 14, 5, 7, 2, 13, 4, 10])
    s = spec(pattern, shuffle_buffer=6, loader_workers=2)
    loader = make_loader(s, "train", step_on_cpu=True)
    p = loader.batches_per_epoch
    assert p * loader.batch_size < sum([11, 3, 9, 14, 5, 7, 2, 13, 4, 10])  # a surplus
    want = _iterated(make_loader(s, "train"), 0, 4 * p)  # read by workers
    stream = loader.stream(0)
    got = ids(list(islice(stream, 1)))
    assert multiprocessing.active_children() == []  # mid-epoch: read here, no worker
    got += ids(list(islice(stream, p)))  # into epoch 1: epoch 0's roles have finished
    for tar in (tmp_path / "uneven").glob("*.tar"):
        tar.unlink()
    got += ids(list(islice(stream, 3 * p - 1)))
    stream.close()
    assert got == want


def test_nothing_is_held_when_off_or_too_big_or_not_a_training_stream(tmp_path: Path) -> None:
    folder = id_dataset(tmp_path / "ids", [8] * 4)
    pattern = str(folder / "train-{000000..000003}.tar")
    assert make_loader(spec(str(folder)), "train").hold_bytes == 1024 << 20
    assert make_loader(spec(str(folder), memory_cache_mib=0), "train").hold_bytes == 0
    assert make_loader(spec(str(folder), resampled=True), "train").hold_bytes == 0
    assert make_loader(spec(str(folder), val=pattern), "val").hold_bytes == 0
    # 32 samples of (1, 4) float32 and an int64 label; uint8 inputs stay uint8 when decoded.
    assert split_bytes([8] * 4, (1, 4), "float32") == 32 * (16 + 8)
    assert split_bytes([8] * 4, (1, 4), "uint8") == 32 * (4 + 8)
    assert split_bytes([8] * 4, (1, 4), None) == 32 * (16 + 8)  # unknown: counted as float32
    # A split that does not fit the budget in every process is not held at all.
    big = split_bytes([2**20], (3, 32, 32), "uint8")  # a million CIFAR-sized samples: ~3 GiB
    assert big > 1024 << 20
    # A stream with nothing held still reads its tars every epoch: remove one, it fails.
    loader = make_loader(spec(pattern, memory_cache_mib=0, loader_workers=0), "train")
    stream = loader.stream(0)
    list(islice(stream, loader.batches_per_epoch))
    (folder / "train-000002.tar").unlink()
    with pytest.raises(InvalidInputError, match=r"train-000002\.tar"):
        list(islice(stream, loader.batches_per_epoch))


@pytest.mark.parametrize("inline", [False, True])
def test_a_shard_with_bad_samples_is_never_held(tmp_path: Path, inline: bool) -> None:
    with wds.TarWriter(str(tmp_path / "bad-0.tar")) as writer:
        for i in range(12):
            sample = {"__key__": f"s{i}", "npy": np.full((1, 4), i, np.float32), "cls": i % 10}
            if i == 5:
                del sample["cls"]
            writer.write(sample)
    write_shards(tmp_path / "good", [12, 12])
    loader = make_loader(spec(f"{tmp_path}/{{bad-0.tar,good/part-0000.tar,good/part-0001.tar}}",
                              on_error="skip", loader_workers=0), "train",
                         step_on_cpu=inline)
    stream = loader.stream(0)
    list(islice(stream, loader.batches_per_epoch + 1))  # into epoch 1: epoch 0 is counted
    first = loader.skipped
    list(islice(stream, 3 * loader.batches_per_epoch))
    stream.close()
    assert first >= 1  # the bad shard is read, and its bad sample counted, every epoch
    assert loader.skipped >= 4


def test_budget_and_whole_shards() -> None:
    held = HeldShards(budget_bytes=3 * (16 + 8))
    collect = held.collector({"a": 2, "b": 1, "c": 1})
    x = np.zeros((1, 4), np.float32)
    collect.add("a", 1, x, 0)
    collect.add("a", 0, x, 1)
    collect.add("b", 0, x, 2)  # "b" then goes bad: not held
    collect.spoil("b")
    collect.add("c", 0, x, 3)
    collect.add("c", 1, x, 3)  # over the budget: collecting stops
    assert sorted(collect.commit()) == ["a", "c"]
    assert held.epoch(["a", "c"])[1].tolist() == [1, 0, 3]  # shard order, tar order
    assert held.epoch(["a", "b"]) is None and held.bytes == 3 * (16 + 8)
