"""The training loader: rank/worker splits, equal batch counts, resume, bad data, URL forms."""

from __future__ import annotations

import os
import subprocess
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from phmscale.data import make_loader
from phmscale.data.plan import common_batches, role_shards
from phmscale.errors import InvalidInputError
from tests.data.helpers import id_dataset, ids, spec, write_shards


@pytest.fixture(scope="module")
def even(tmp_path_factory) -> Path:
    """16 shards × 8 samples: divides evenly over 1, 2 and 4 ranks × 2 workers (not 3), batch 4."""
    return id_dataset(tmp_path_factory.mktemp("even") / "ids", [8] * 16)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_partition_the_dataset(even: Path, world: int) -> None:
    s = spec(str(even), loader_workers=2)
    per_rank, counts = [], set()
    for rank in range(world):
        loader = make_loader(s, "train", rank, world)
        batches = list(loader.iterate(epoch=0))
        assert len(batches) == loader.batches_per_epoch
        assert all(x.shape == (4, 1, 4) and x.dtype == torch.float32 for x, _ in batches)
        assert all(y.dtype == torch.int64 and y.shape == (4,) for _, y in batches)
        counts.add(loader.batches_per_epoch)
        per_rank.append(ids(batches))
    # The same count on every rank: 2 roles, each sure of 16 // (2·world) shards of 8.
    assert counts == {2 * (16 // (2 * world) * 8 // 4)}
    union = [i for r in per_rank for i in r]
    if 16 % (2 * world) == 0:  # exactly the dataset: nothing lost, no repeats
        assert sorted(union) == list(range(128))
    else:  # 3 ranks: each reads 5 or 6 shards and stops at 8 batches, the surplus dropped
        assert len(set(union)) == len(union) == 3 * 8 * 4
    for a in range(world):
        for b in range(a + 1, world):
            assert not set(per_rank[a]) & set(per_rank[b])


def test_epochs_reshuffle_and_labels_follow_samples(even: Path) -> None:
    loader = make_loader(spec(str(even)), "train", 0, 2)
    e0, e1 = list(loader.iterate(0)), list(loader.iterate(1))
    assert ids(e0) != ids(e1)
    assert ids(e0) == ids(list(loader.iterate(0)))  # an epoch is reproducible
    for x, y in e0 + e1:
        assert torch.equal(y, x[:, 0, 0].long() % 10)


def test_the_plan_counts_what_the_worst_off_role_holds() -> None:
    # 8 shards, 2 ranks × 2 roles: every role holds 2 shards; the 2 smallest hold 5 samples.
    counts = [11, 3, 9, 14, 5, 7, 2, 13]
    assert common_batches(counts, 2, 2, train=True, resampled=False, roles=2) == 2 * (5 // 2)
    assert common_batches(counts, 1, 4, train=True, resampled=False, roles=1) == 64 // 4
    assert common_batches(counts, 2, 4, train=True, resampled=True, roles=2) == 2 * (64 // 16)
    # val: role 0 of rank 0 holds shards 0, 4 (16), role 1 shards 2, 6 (11): ceil each.
    assert role_shards(range(8), 0, 2, 2) == [[0, 4], [2, 6]]
    assert common_batches(counts, 2, 4, train=False, resampled=False, roles=2) == min(
        4 + 3, 5 + 5)


@pytest.mark.parametrize("world,rank", [(1, 0), (2, 1), (3, 2)])
def test_resume_reproduces_the_rest_of_the_epoch(tmp_path: Path, world: int, rank: int) -> None:
    # Uneven shards so that workers run dry at different times and chunks are partial.
    pattern = write_shards(tmp_path / "uneven", [22, 6, 18, 28, 10, 14, 4, 26, 16, 20, 24, 18])
    loader = make_loader(spec(pattern, shuffle_buffer=6), "train", rank, world)
    full = list(loader.iterate(epoch=3))
    assert len(full) == loader.batches_per_epoch
    for k in sorted({1, 2, 3, len(full) // 2, len(full) - 1}):
        resumed = list(loader.iterate(epoch=3, start_batch=k))
        assert ids(resumed) == ids(full[k:]), f"resume at batch {k}"
    # stream() counts batches from the start of training, across epochs.
    p = loader.batches_per_epoch
    assert ids(list(islice(loader.stream(start_batch=3 * p + 2), p - 2))) == ids(full[2:])
    assert ids(list(islice(loader.stream(start_batch=p - 1), 2))) == ids(
        [list(loader.iterate(0))[-1], list(loader.iterate(1))[0]])


def test_resampled_streams_and_resumes(even: Path) -> None:
    loader = make_loader(spec(str(even), resampled=True), "train", 1, 4)
    assert loader.batches_per_epoch == 128 // 4 // 4
    first = list(loader.iterate(0))
    assert len(first) == loader.batches_per_epoch
    assert ids(list(loader.iterate(0, start_batch=5))) == ids(first[5:])


def test_val_is_a_complete_deterministic_pass(even: Path) -> None:
    import multiprocessing

    s = spec(str(even), str(even / "train-*.tar"), batch_size=5)
    loader = make_loader(s, "val")  # 2 roles of 64 samples: 13 batches each, the last of 4
    a = list(loader.iterate(0))
    workers = {p.pid for p in multiprocessing.active_children()}
    assert len(workers) == 2  # kept for the next evaluation
    b = list(loader.iterate(7))
    assert {p.pid for p in multiprocessing.active_children()} == workers
    assert ids(a) == ids(b)  # no shuffle: the same order every epoch
    assert sorted(ids(a)) == list(range(128))  # all of it
    assert [len(y) for _, y in a].count(4) == 2 and len(a) == loader.batches_per_epoch == 26
    halves = [ids(list(make_loader(s, "val", r, 2).iterate(0))) for r in (0, 1)]  # 2 ranks
    assert sorted(halves[0] + halves[1]) == list(range(128))


def test_surplus_is_dropped_equally(tmp_path: Path) -> None:
    # 5 shards over 2 ranks: one rank holds 3 shards some epochs, 2 in others.
    pattern = write_shards(tmp_path / "odd", [6, 6, 6, 6, 6])
    counts = {make_loader(spec(pattern), "train", r, 2).batches_per_epoch for r in (0, 1)}
    assert counts == {2 * (6 // 4)}  # 2 roles, each sure of floor(5 / 4) = 1 shard of 6
    for epoch in range(3):
        assert [len(list(make_loader(spec(pattern), "train", r, 2).iterate(epoch)))
                for r in (0, 1)] == [2, 2]


def test_plain_tar_and_shardwriter_shards(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    names = []
    for i in range(6):
        np.save(files / f"{i:03d}.npy", np.full((1, 4), i, np.float32))
        (files / f"{i:03d}.cls").write_text(str(i % 10))
        names += [f"{i:03d}.cls", f"{i:03d}.npy"]
    subprocess.run(["tar", "-cf", str(tmp_path / "a.tar"), "-C", str(files), *names], check=True)
    with wds.ShardWriter(str(tmp_path / "b-%02d.tar"), maxcount=3, verbose=0) as sink:
        for i in range(6, 12):
            sink.write({"__key__": f"k{i}", "npy": np.full((1, 4), i, np.float32), "cls": i % 10})
    s = spec(str(tmp_path / "*.tar"), loader_workers=1, shuffle_buffer=0)
    loader = make_loader(s, "train")
    assert sorted(ids(list(loader.iterate(0)))) == list(range(12))


def test_pipe_and_fsspec_urls(even: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    for j in range(4):
        fs.pipe(f"/shards/ids-{j}.tar", (even / f"train-{j:06d}.tar").read_bytes())
    memory = make_loader(spec("memory://shards/ids-{0..3}.tar", loader_workers=0), "train")
    pipe = make_loader(spec(f"pipe:cat {even}/train-00000{{0..3}}.tar", loader_workers=2), "train")
    assert sorted(ids(list(memory.iterate(0)))) == sorted(ids(list(pipe.iterate(0))))
    assert len(ids(list(pipe.iterate(0)))) == 32
    for path in even.iterdir():  # a packed folder on object storage: a URL ending in /
        fs.pipe(f"/packed/{path.name}", path.read_bytes())
    packed = make_loader(spec("memory://packed/", loader_workers=0), "train")
    assert sorted(ids(list(packed.iterate(0)))) == list(range(128))


def test_causal_lm_batches(tmp_path: Path) -> None:
    from phmscale.data import open_source, pack

    text = tmp_path / "corpus.txt"
    text.write_bytes(bytes(range(256)) * 8)
    pack(open_source("text", text, split="train=0.75,val=0.25", seed=0, chunk_len=40),
         tmp_path / "lm", shards=2, progress=False)
    s = spec(str(tmp_path / "lm"), str(tmp_path / "lm"), loader_workers=1,
             model={"task": "causal_lm", "seq_len": 16, "input_shape": [1, 8, 8]})
    x, y = next(iter(make_loader(s, "train").iterate(0)))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal((x + 1) % 256, y)  # shifted by one
    vx, _ = next(iter(make_loader(s, "val").iterate(0)))
    first_val_chunk = (bytes(range(256)) * 8)[1536 : 1536 + 16]
    assert vx[0].tolist() == list(first_val_chunk)  # val crops at offset 0


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_on_error_raise_names_the_shard_and_skip_counts(tmp_path: Path, caplog) -> None:
    folder = id_dataset(tmp_path / "ids", [8] * 8)
    _truncate(folder / "train-000003.tar", 0.5)
    with pytest.raises(InvalidInputError, match=r"train-000003\.tar"):
        list(make_loader(spec(str(folder)), "train").iterate(0))
    loader = make_loader(spec(str(folder), on_error="skip"), "train")
    with caplog.at_level("INFO", logger="phmscale.data"):
        batches = list(loader.iterate(0))
    assert len(batches) == loader.batches_per_epoch == 16  # topped up: ranks stay in step
    # Half of an 8-sample shard of 2 KiB samples keeps 5 whole samples: 3 are lost.
    assert loader.skipped >= 3 and "bad samples skipped" in caplog.text


def test_sample_missing_a_key_is_named(tmp_path: Path) -> None:
    with wds.TarWriter(str(tmp_path / "bad-0.tar")) as writer:
        for i in range(9):
            sample = {"__key__": f"s{i}", "npy": np.full((1, 4), i, np.float32), "cls": i}
            if i == 5:
                del sample["cls"]
            writer.write(sample)
    with pytest.raises(InvalidInputError, match=r"'s5'.*bad-0\.tar.*no 'cls'"):
        list(make_loader(spec(str(tmp_path / "bad-0.tar"), loader_workers=0), "train").iterate(0))
    skip = make_loader(spec(str(tmp_path / "bad-0.tar"), loader_workers=0, on_error="skip",
                            shuffle_buffer=0), "train")
    got = ids(list(skip.iterate(0)))
    assert 5 not in got and skip.skipped == 1


def test_too_few_samples_for_a_batch(tmp_path: Path) -> None:
    folder = id_dataset(tmp_path / "tiny", [2, 2])
    with pytest.raises(InvalidInputError, match="data.batch_size=4"):
        make_loader(spec(str(folder)), "train", 0, 2)


# -- stream(): one DataLoader whose workers live across epochs --------------------------------


def _epochs(loader, first: int, count: int, start: int = 0) -> list[int]:
    """The ids of iterate(first, start), iterate(first + 1), … (count epochs in all)."""
    batches = list(loader.iterate(first, start))
    for epoch in range(first + 1, first + count):
        batches += list(loader.iterate(epoch))
    return ids(batches)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_stream_is_iterate_epoch_after_epoch(tmp_path: Path, workers: int) -> None:
    # Uneven shards: roles hold different sample counts but yield the same batches per epoch.
    pattern = write_shards(tmp_path / "uneven", [11, 3, 9, 14, 5, 7, 2, 13, 4, 10])
    loader = make_loader(spec(pattern, shuffle_buffer=6, loader_workers=workers), "train")
    p = loader.batches_per_epoch
    for start in (0, p + 2):  # the first epoch, and a resume mid-way through the second
        epoch, offset = divmod(start, p)
        stream = loader.stream(start_batch=start)
        got = ids(list(islice(stream, 3 * p - offset)))
        stream.close()
        assert got == _epochs(loader, epoch, 3, offset), f"start_batch {start}"


def test_stream_matches_iterate_across_ranks_and_resampled(even: Path, tmp_path: Path) -> None:
    pattern = write_shards(tmp_path / "uneven", [11, 3, 9, 14, 5, 7, 2, 13])
    for rank in (0, 1):
        loader = make_loader(spec(pattern, shuffle_buffer=6), "train", rank, 2)
        p = loader.batches_per_epoch
        assert ids(list(islice(loader.stream(1), 3 * p - 1))) == _epochs(loader, 0, 3, 1)
    loader = make_loader(spec(str(even), resampled=True), "train", 1, 4)
    p = loader.batches_per_epoch
    assert ids(list(islice(loader.stream(p + 5), 3 * p - 5))) == _epochs(loader, 1, 3, 5)


def test_stream_tops_up_like_iterate(tmp_path: Path) -> None:
    folder = id_dataset(tmp_path / "ids", [8] * 8)
    _truncate(folder / "train-000003.tar", 0.5)
    loader = make_loader(spec(str(folder), on_error="skip"), "train")
    p = loader.batches_per_epoch
    assert ids(list(islice(loader.stream(3), 3 * p - 3))) == _epochs(loader, 0, 3, 3)
    with pytest.raises(InvalidInputError, match=r"train-000003\.tar"):
        list(islice(make_loader(spec(str(folder)), "train").stream(0), 2 * p))


def test_the_memory_cache_gives_the_same_batches(tmp_path: Path) -> None:
    pattern = write_shards(tmp_path / "uneven", [11, 3, 9, 14, 5, 7, 2, 13])
    plain = make_loader(spec(pattern, shuffle_buffer=6), "train")
    cached = make_loader(spec(pattern, shuffle_buffer=6, memory_cache_mib=1), "train")
    p = plain.batches_per_epoch
    assert ids(list(islice(cached.stream(2), 4 * p))) == _epochs(plain, 0, 5, 2)[: 4 * p * 4]


def _note_worker(path: str, worker_id: int) -> None:
    with open(path, "a") as f:
        f.write(f"{os.getpid()} {worker_id}\n")


def test_stream_keeps_its_workers_across_epochs(even: Path, tmp_path: Path,
                                                monkeypatch) -> None:
    import multiprocessing

    from phmscale.data import loader as loader_module

    started = tmp_path / "workers.txt"
    made = []

    class NotingDataLoader(DataLoader):
        def __init__(self, *args, **kwargs):
            made.append(1)
            super().__init__(*args, worker_init_fn=partial(_note_worker, str(started)),
                             **kwargs)

    monkeypatch.setattr(loader_module, "DataLoader", NotingDataLoader)
    loader = make_loader(spec(str(even), loader_workers=2), "train")
    stream = loader.stream(0)
    assert len(list(islice(stream, 4 * loader.batches_per_epoch))) == 4 * 32  # 4 epochs
    assert len(made) == 1  # one DataLoader …
    assert sorted(line.split()[1] for line in started.read_text().splitlines()) == ["0", "1"]
    assert len(multiprocessing.active_children()) == 2  # … whose 2 workers are still running
    stream.close()
    assert multiprocessing.active_children() == []  # and stop when the stream is closed
    stream = loader.stream(5)
    next(stream)
    assert len(multiprocessing.active_children()) == 2
    del stream  # garbage collection stops them too
    assert multiprocessing.active_children() == []
