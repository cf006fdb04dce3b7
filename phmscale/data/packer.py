"""Writing a `Source` as WebDataset shards `OUT/{split}-{000000}.tar` plus `OUT/shards.json`.

Deterministic: the same inputs and seed give byte-identical shards and index. Sample order comes
from the source (seeded); every tar member gets mtime 0, uid/gid 0, user/group "phmscale" and
mode 0444 through webdataset's TarWriter; the index has sorted keys and no timestamps or paths.
mtime is the int 0: a float mtime makes tarfile add a PAX header (1 KiB) to every file, which
doubled the size of digits' shards (2 KiB of tar per 385-byte sample became 4 KiB).

Shard sizes are balanced: a split of N samples cut into K shards gets sizes N//K or N//K + 1,
never one short tail shard. That keeps the loader's per-rank sample counts (and so its common
batch count) within one sample per shard of each other.

Atomic: shards are written to a hidden sibling folder that is renamed onto OUT at the end, so a
reader never sees half a dataset and a crash leaves OUT untouched.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from phmscale.data.index import INDEX_NAME, Index, write_index
from phmscale.data.sources import Source
from phmscale.data.urls import webdataset
from phmscale.errors import InvalidInputError

DEFAULT_SHARD_SIZE = 1000


def shard_sizes(
    count: int, *, shard_size: int | None = None, shards: int | None = None
) -> list[int]:
    """Balanced shard sizes for `count` samples: `shards` of them, or as few as keep each
    at most `shard_size`."""
    if count == 0:
        return []
    k = shards if shards else math.ceil(count / (shard_size or DEFAULT_SHARD_SIZE))
    k = max(1, min(k, count))
    return [count // k + (i < count % k) for i in range(k)]


class _HashingWriter:
    """A write-only file wrapper that counts and hashes what passes through (no second read)."""

    def __init__(self, file: IO[bytes]):
        self.file, self.bytes, self._sha = file, 0, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._sha.update(data)
        self.bytes += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{out} is a file: pack into a new folder")
    if out.exists() and any(out.iterdir()) and not (overwrite and (out / INDEX_NAME).exists()):
        hint = ("pass --overwrite to replace it" if (out / INDEX_NAME).exists()
                else "it is not a packed dataset, so it is never overwritten")
        raise InvalidInputError(f"{out} exists and is not empty: choose a new folder or {hint}")


def pack(
    source: Source,
    out: Path,
    *,
    shard_size: int | None = None,
    shards: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Index:
    """Pack every split of `source` into `out`; returns the index written to out/shards.json."""
    out = Path(out)
    _check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        entries = _write_shards(source, tmp, shard_size=shard_size, shards=shards,
                                progress=progress)
        dataset: dict[str, Any] = {**source.describe(), "seed": seed}
        index = write_index(tmp, dataset, entries)
        _publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index


def _write_shards(
    source: Source, tmp: Path, *, shard_size: int | None, shards: int | None, progress: bool
) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        for split in source.splits:
            task = bar.add_task(f"{source.name} {split.name}", total=split.count)
            samples = split.samples()
            index = 0
            for j, size in enumerate(shard_sizes(split.count, shard_size=shard_size,
                                                 shards=shards)):
                name = f"{split.name}-{j:06d}.tar"
                with open(tmp / name, "wb") as file:
                    sink = _HashingWriter(file)
                    writer = webdataset().TarWriter(sink, encoder=False, mtime=0, user="phmscale",
                                           group="phmscale", mode=0o444)
                    for _ in range(size):
                        writer.write({"__key__": f"{split.name}_{index:08d}", **next(samples)})
                        index += 1
                    writer.close()
                bar.advance(task, size)
                entries[name] = {"split": split.name, "count": size, "bytes": sink.bytes,
                                 "sha256": sink.sha256}
    return entries


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished folder onto `out` (rename: atomic on one file system)."""
    if out.exists():
        if overwrite and (out / INDEX_NAME).exists():
            shutil.rmtree(out)
        else:
            out.rmdir()  # empty (checked before packing)
    os.rename(tmp, out)
