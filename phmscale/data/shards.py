"""From a `data.train` / `data.val` string to the list of shard URLs and their sample counts.

Forms accepted (DataSpec.train's description):

- `builtin:<name>`: its folder in the cache, packed before training starts (prepare.py);
  `data.train` takes its train split, `data.val` its val split.
- a folder (or its shards.json; a URL ending in / for object storage) written by
  `phmscale data pack`: that split's shards.
- a brace/glob pattern of local tars, a `pipe:` command, an fsspec URL: the expanded list.

Counts come from the shards.json beside the shards; shards without one are counted by reading
them once (a sequential pass, logged), so foreign shards work but pay one extra read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from phmscale.data import urls as U
from phmscale.data.builtins import builtin_dir
from phmscale.data.index import INDEX_NAME, Index, lookup_counts, read_index, split_urls
from phmscale.errors import InvalidInputError

log = logging.getLogger("phmscale.data")


@dataclass
class ShardSet:
    """The shards one spec field names."""

    field: str  # "data.train" or "data.val"
    value: str  # the field's text
    urls: list[str]
    counts: list[int] | None  # samples per shard, None until known
    dataset: dict[str, Any] | None  # shards.json's `dataset` block, when there is one

    @property
    def total(self) -> int:
        return sum(self.counts or [])


def packed_folder(value: str) -> str | None:
    """The folder of a packed dataset if `value` names one: a local folder or shards.json, or
    a URL ending in / or /shards.json (read from object storage)."""
    if U.url_scheme(value) == "pipe":
        return None
    if not U.is_local(value):
        if value.endswith("/" + INDEX_NAME):
            return value[: -len(INDEX_NAME) - 1]
        return value.rstrip("/") if value.endswith("/") else None
    path = os.path.expanduser(U.local_path(value))
    if os.path.basename(path) == INDEX_NAME and os.path.isfile(path):
        return os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, INDEX_NAME)):
        return os.path.abspath(path)
    return None


def _split_of(index: Index, where: str, split: str, field: str) -> list[str]:
    if split not in index["splits"]:
        have = ", ".join(sorted(index["splits"])) or "none"
        raise InvalidInputError(
            f"{field}: {where} has no '{split}' split (it has: {have}); repack with "
            f"--split train=0.9,val=0.1 or name the shards with a pattern"
        )
    return split_urls(index, where, split)


def resolve(value: str, split: str, cache_dir: str | None, *, count: bool = True,
            skip_errors: bool = False) -> ShardSet:
    """The shards `value` names for `split` ("train" or "val"); packs a builtin if needed.

    With count=True, shards missing from any index are counted by reading them.
    """
    field = f"data.{split}"
    if value.startswith("builtin:"):
        name = value.removeprefix("builtin:")
        folder = str(builtin_dir(name, cache_dir))
        if read_index(folder) is None:
            raise InvalidInputError(
                f"{field}: {value} is not packed yet (in {folder}): jobs pack it before "
                f"training starts (data.prepare.prepare_data, called by every launcher); "
                f"`phmscale data verify {value}` packs it too")
    else:
        folder = packed_folder(value)
    if folder is not None:
        index = read_index(folder)
        if index is None:
            raise InvalidInputError(f"{field}: no {INDEX_NAME} in {folder}: pack the data there "
                                    f"(phmscale data pack) or name the shards with a pattern")
        urls = _split_of(index, folder, split, field)
        counts = [int(index["shards"][U.basename(u)]["count"]) for u in urls]
        return ShardSet(field, value, urls, counts, index["dataset"])
    urls = U.expand(value)
    if not urls:
        raise InvalidInputError(f"{field}: {value!r} matches no shards")
    found, index = lookup_counts(urls)
    dataset = index["dataset"] if index else None
    if not count:
        known = None if None in found else [int(c) for c in found if c is not None]
        return ShardSet(field, value, urls, known, dataset)
    missing = [u for u, c in zip(urls, found, strict=True) if c is None]
    if missing:
        log.warning("%s: %d shard(s) have no shards.json entry; counting their samples by "
                    "reading them once", field, len(missing))
        counted = dict(zip(missing, count_samples(missing, skip_errors=skip_errors), strict=True))
        found = [c if c is not None else counted[u] for u, c in zip(urls, found, strict=True)]
    return ShardSet(field, value, urls, [int(c) for c in found if c is not None], dataset)


def count_samples(urls: list[str], *, skip_errors: bool = False) -> list[int]:
    """Samples per shard, by reading each (no decoding)."""
    wds = U.webdataset()
    handler = wds.ignore_and_continue if skip_errors else wds.reraise_exception
    counts = []
    for url in urls:
        pipeline = wds.DataPipeline(lambda url=url: iter([{"url": url}]),
                                    wds.tarfile_to_samples(handler=handler))
        try:
            counts.append(sum(1 for _ in pipeline))
        except Exception as error:
            raise InvalidInputError(
                f"cannot read shard {url} ({error}); run `phmscale data verify {url}`"
            ) from error
    return counts
