"""Small datasets and specs for the data tests: every sample's input encodes its id."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phmscale.data import open_source, pack
from phmscale.data.sources import arrays_source
from phmscale.spec import JobSpec

ROOT = Path(__file__).resolve().parents[2]


def id_dataset(out: Path, sizes: list[int], *, seed: int = 0) -> Path:
    """Shards whose sample i has x = [[i, i, i, i]] (float32, shape (1, 4)) and y = i % 10;
    shard j holds sizes[j] samples (packed with exactly len(sizes) shards)."""
    total = sum(sizes)
    x = np.repeat(np.arange(total, dtype=np.float32)[:, None, None], 4, axis=2)  # (N, 1, 4)
    y = np.arange(total, dtype=np.int64) % 10
    source = arrays_source("ids", {"all": (x, y)}, split="train=1", seed=seed)
    pack(source, out, shards=len(sizes), progress=False)
    # Balanced packing gives sizes differing by at most one; uneven tests rewrite shards.
    return out


def write_shards(out: Path, sizes: list[int], *, prefix: str = "part") -> str:
    """Foreign shards (webdataset.TarWriter, no shards.json) with arbitrary sizes; sample ids
    run 0… across shards. Returns a brace pattern naming them."""
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    i = 0
    for j, size in enumerate(sizes):
        with wds.TarWriter(str(out / f"{prefix}-{j:04d}.tar")) as writer:
            for _ in range(size):
                x = np.full((1, 4), i, dtype=np.float32)
                writer.write({"__key__": f"s{i:06d}", "npy": x, "cls": i % 10})
                i += 1
    return str(out / f"{prefix}-{{0000..{len(sizes) - 1:04d}}}.tar")


def npz_file(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((n, 1, 4)), y=rng.integers(0, 10, n))
    return path


def spec(train: str, val: str | None = None, *, model: dict[str, Any] | None = None,
         **data: Any) -> JobSpec:
    """A JobSpec for the (1, 4)-input id datasets unless `model` says otherwise."""
    m = {"algebra": "real", "input_shape": [1, 4], "patch_size": 1, "num_classes": 10,
         "dim": 8, "heads": 2, "depth": 1}
    d = {"train": train, "val": val, "batch_size": 4, "loader_workers": 2,
         "shuffle_buffer": 10, **data}
    return JobSpec(name="data-test", model={**m, **(model or {})}, data=d)


def ids(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
    """The sample ids in a list of id-dataset batches, in order."""
    return [int(v) for x, _ in batches for v in x[:, 0, 0]]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "phmscale.cli.main", *args], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=300)


__all__ = ["cli", "id_dataset", "ids", "npz_file", "open_source", "spec"]
