"""`shards.json`: the index `phmscale data pack` writes next to its shards.

One JSON file per packed dataset directory::

    {
      "format": "phmscale-shards/1",
      "dataset": {"source": "digits", "task": "classify", "keys": ["cls", "npy"],
                  "num_classes": 10, "shape": [1, 8, 8], "dtype": "float32", ...},
      "splits": {"train": {"count": 1617, "shards": ["train-000000.tar", ...]}, ...},
      "shards": {"train-000000.tar": {"split": "train", "count": 203, "bytes": 133120,
                                       "sha256": "…"}, ...}
    }

The loader takes per-shard sample counts from it (so every rank computes the same batches per
epoch without reading data); `data verify` compares counts, sizes and checksums against it.
Shard names are relative to the index's directory, so a packed directory can be moved or copied
to object storage as is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from phmscale.data import urls as U
from phmscale.errors import InvalidInputError

INDEX_NAME = "shards.json"
FORMAT = "phmscale-shards/1"

Index = dict[str, Any]


def write_index(out_dir: Path, dataset: dict[str, Any], shards: dict[str, dict[str, Any]]) -> Index:
    """Write `out_dir/shards.json` deterministically (sorted keys, no timestamps)."""
    splits: dict[str, dict[str, Any]] = {}
    for name, entry in shards.items():
        split = splits.setdefault(entry["split"], {"count": 0, "shards": []})
        split["count"] += entry["count"]
        split["shards"].append(name)
    for split in splits.values():
        split["shards"].sort()
    index = {"format": FORMAT, "dataset": dataset, "splits": splits, "shards": shards}
    text = json.dumps(index, indent=2, sort_keys=True) + "\n"
    (out_dir / INDEX_NAME).write_text(text)
    return index


def read_index(location: str) -> Index | None:
    """The index in a directory (path or URL) or at a shards.json path; None if there is none.

    A file that exists but is not a phmscale index is an InvalidInputError.
    """
    path = location if U.basename(location) == INDEX_NAME else U.join(location, INDEX_NAME)
    if U.is_local(path):
        if not os.path.isfile(U.local_path(path)):
            return None
        text = Path(U.local_path(path)).read_text()
    elif U.url_scheme(path) == "pipe":
        return None
    else:
        try:
            with U.open_stream(path) as stream:
                text = stream.read().decode()
        except Exception:  # noqa: BLE001 - a remote index is optional: absent means "count"
            return None
    try:
        index = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInputError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise InvalidInputError(
            f"{path}: not a phmscale shard index (expected format {FORMAT!r}); "
            f"remove it or repack with `phmscale data pack`"
        )
    return index


def split_urls(index: Index, location: str, split: str) -> list[str]:
    """The URLs of one split's shards, in order."""
    return [U.join(location, name) for name in index["splits"][split]["shards"]]


def lookup_counts(urls: list[str]) -> tuple[list[int | None], Index | None]:
    """Per-URL sample counts from the shards.json next to each URL (None where unknown).

    Also returns the first index found (its `dataset` block describes the samples).
    """
    cache: dict[str, Index | None] = {}
    counts: list[int | None] = []
    first: Index | None = None
    for url in urls:
        if U.url_scheme(url) == "pipe":
            counts.append(None)
            continue
        where = U.dirname(url)
        if where not in cache:
            cache[where] = read_index(where)
        index = cache[where]
        entry = index["shards"].get(U.basename(url)) if index else None
        counts.append(int(entry["count"]) if entry else None)
        if entry and first is None:
            first = index
    return counts, first
