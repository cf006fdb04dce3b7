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
`digits`, `mnist1d`, `pystdlib`, and `jpeg`.

`jpeg`: ImageNet-like JPEGs (350–500 px a side, ~110 KB, quality 90) packed from a class
folder, read with `data.augment: imagenet` at 224×224. The reference is the same decode +
augment + normalize (`materialize`, then `collate` per batch) of the same bytes in a tight loop
in this process; the loader's rows
give samples/s per worker for 1 and 2 workers and their ratio to that loop (the rest is the
loader's own cost: tar read, parse, shuffle, collate, normalize, hand-over).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds

from phmscale.data.builtins import BUILTINS
from phmscale.data.index import read_index, split_urls
from phmscale.data.loader import make_loader
from phmscale.data.packer import pack
from phmscale.data.prepare import ensure_builtin
from phmscale.data.sources import arrays_source
from phmscale.spec import JobSpec

SOURCES = ("synthetic", *BUILTINS, "jpeg")
JPEG_SIZE = 224


def synthetic_jpegs(out: Path, count: int, classes: int = 4, seed: int = 0,
                    sizes: tuple[int, int] = (350, 500)) -> Path:
    """A class folder out/train/<class>/*.jpg (+ a few in out/val) of photo-like JPEGs: a smooth
    random colour field with fine noise, so they compress like photographs (~110 KB at
    500×375, quality 90) rather than like noise (3× larger) or flat colour (20× smaller)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        part = "val" if i % 10 == 9 else "train"
        folder = out / part / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        w, h = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, size=2))
        coarse = rng.integers(0, 256, size=(h // 32 + 2, w // 32 + 2, 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.int16)
        noisy = np.clip(field + rng.integers(-24, 25, size=field.shape), 0, 255)
        Image.fromarray(noisy.astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    return out


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
    if source == "jpeg":
        return _jpeg_rows(quick, batch_size, repeats)
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


def _jpeg_rows(quick: bool, batch_size: int, repeats: int) -> list[dict[str, Any]]:
    """Tight decode + augment loop, then the loader with 1 and 2 workers, on the same JPEGs."""
    from phmscale.data.decode import collate, materialize, parse, to_model
    from phmscale.data.loader import decode_config
    from phmscale.data.sources import image_folder

    batch_size = min(batch_size, 64)
    with tempfile.TemporaryDirectory(prefix="phmscale-bench-") as tmp:
        images = synthetic_jpegs(Path(tmp) / "jpegs", 320 if quick else 1600)
        folder = Path(tmp) / "packed"
        pack(image_folder(images, split=None, seed=0), folder, shards=8, progress=False)
        index = read_index(str(folder))
        assert index is not None
        urls = split_urls(index, str(folder), "train")
        mb = sum(index["shards"][Path(u).name]["bytes"] for u in urls) / 1e6

        def job(workers: int) -> JobSpec:
            return JobSpec(name="bench-loader-jpeg", model={
                "kind": "resnet", "algebra": "real", "input_shape": [3, JPEG_SIZE, JPEG_SIZE],
                "num_classes": 4}, data={"train": str(folder), "batch_size": batch_size,
                                         "loader_workers": workers, "augment": "imagenet"})

        cfg = decode_config(job(1), True, index["dataset"])
        samples = [s for u in urls for s in wds.WebDataset(u, shardshuffle=False,
                                                          empty_check=False)]
        parsed = [parse(s, cfg, "") for s in samples]

        def tight() -> int:  # the transform a torchvision user writes, batched: no read,
            for i in range(0, len(parsed), batch_size):  # no shuffle, no hand-over
                x, _ = collate([materialize(p, cfg, 0) for p in parsed[i : i + batch_size]], cfg)
                to_model(x, cfg)
            return len(parsed)

        timings = [("decode + augment + normalize, tight loop", 1, _time(tight, repeats))]
        for workers in (1, 2):
            loader = make_loader(job(workers), "train")
            timings.append((f"phmscale loader, {workers} worker(s)", workers, _time(
                lambda loader=loader: sum(len(y) for _, y in loader.iterate(0)), repeats)))
    rows = []
    for reader, workers, (seconds, count) in timings:
        rows.append({"source": "jpeg", "reader": reader, "workers": workers, "samples": count,
                     "MB": round(mb, 2), "seconds": seconds, "samples_per_s": count / seconds,
                     "samples_per_s_per_worker": count / seconds / workers})
    for row in rows:
        row["per_worker_vs_tight"] = (row["samples_per_s_per_worker"]
                                      / rows[0]["samples_per_s_per_worker"])
    return rows
