"""`phmscale bench loader`: the training loader against a plain sequential read, in one run.

Both sides read the same shards from the same folder (page cache warm after the pack):

- `plain`: `wds.WebDataset(urls, shardshuffle=False)` iterated in this process, no decoding —
  the cost of reading and splitting the tars, the floor any loader pays.
- `phmscale`: `make_loader(spec, "train").iterate(0)` with data.loader_workers processes —
  shard split, shuffle buffer, decode to float32 tensors, collate, merge, exact batches; includes
  starting the workers, as every epoch does.

Rows report samples/s and MB/s (shard bytes ÷ wall time) and the ratio loader ÷ plain (> 1:
the loader's worker processes outrun one plain reader). Best of `repeats` runs per side.
Sources: `synthetic` (uint8 3×32×32 CIFAR-like images, the default: big enough to time),
`digits`, `mnist1d`, `pystdlib`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from phmscale.data.builtins import BUILTINS, ensure_builtin
from phmscale.data.index import read_index, split_urls
from phmscale.data.loader import make_loader
from phmscale.data.pack import pack
from phmscale.data.sources import arrays_source
from phmscale.spec import JobSpec

SOURCES = ("synthetic", *BUILTINS)


def _synthetic(out: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)  # (N, C, H, W)
    y = rng.integers(0, 10, size=count, dtype=np.int64)
    pack(arrays_source("synthetic", {"all": (x, y)}, split="train=1", seed=0, num_classes=10),
         out, shards=16, progress=False)
    return out


def _spec(folder: Path, source: str, workers: int, batch: int) -> JobSpec:
    dataset = read_index(str(folder))["dataset"]  # type: ignore[index]
    model: dict[str, Any] = {"algebra": "real", "task": dataset["task"]}
    if dataset["task"] == "classify":
        model |= {"input_shape": dataset["shape"], "num_classes": dataset["num_classes"],
                  "patch_size": 1}
    else:
        model |= {"seq_len": 128}
    return JobSpec(name=f"bench-loader-{source}", model=model,
                   data={"train": str(folder), "batch_size": batch, "loader_workers": workers})


def _time(fn: Any, repeats: int) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - start)
    return best, count


def run(quick: bool = False, source: str = "synthetic", workers: int = 2,
        batch_size: int = 256) -> list[dict[str, Any]]:
    """Rows: one per reader, with samples/s, MB/s and the ratio to the plain read."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: choose one of {', '.join(SOURCES)}")
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="phmscale-bench-") as tmp:
        if source == "synthetic":
            folder = _synthetic(Path(tmp) / "synthetic", 4_000 if quick else 40_000)
        else:
            folder = ensure_builtin(source, tmp, progress=False)
        index = read_index(str(folder))
        assert index is not None
        urls = split_urls(index, str(folder), "train")
        mb = sum(index["shards"][Path(u).name]["bytes"] for u in urls) / 1e6
        spec = _spec(folder, source, workers, batch_size)

        def plain() -> int:
            return sum(1 for _ in wds.WebDataset(urls, shardshuffle=False, empty_check=False))

        def loader() -> int:
            return sum(len(y) for _, y in make_loader(spec, "train").iterate(0))

        plain_s, plain_n = _time(plain, repeats)
        loader_s, loader_n = _time(loader, repeats)
    rows = []
    for reader, seconds, samples, procs in (("plain wds (no decode)", plain_s, plain_n, 1),
                                            ("phmscale loader", loader_s, loader_n, workers)):
        rows.append({"source": source, "reader": reader, "workers": procs, "samples": samples,
                     "MB": round(mb, 2), "seconds": seconds, "samples_per_s": samples / seconds,
                     "MB_per_s": mb / seconds})
    for row in rows:
        row["ratio_vs_plain"] = row["samples_per_s"] / rows[0]["samples_per_s"]
    return rows
