"""Packing what a job reads before training starts: the built-ins (`builtin:<name>`), on first
use, into the cache (builtins.py says where). `train.job.run_job` calls `prepare_data` on every
rank before it builds a loader; `phmscale data verify builtin:…` and the benches call
`ensure_builtin`.

Several processes may start at once (all ranks of a job): the first takes an fcntl lock and
packs into a temporary folder that is renamed into place; the others wait on the lock, then
find the finished folder.
"""

from __future__ import annotations

import fcntl
import logging
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from phmscale.data.builtins import (
    BUILTIN_SHARDS,
    TEXT_CHUNK_LEN,
    builtin_dir,
    check_name,
    pystdlib_bytes,
    pystdlib_max_bytes,
)
from phmscale.data.index import INDEX_NAME
from phmscale.data.packer import pack
from phmscale.data.sources import Source, arrays_source, text_source

if TYPE_CHECKING:
    from phmscale.spec import JobSpec

log = logging.getLogger("phmscale.data")


def builtin_source(name: str, seed: int = 0) -> Source:
    """The Source of a built-in dataset."""
    check_name(name)
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = (d.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8) in [0, 1]
        return arrays_source("digits", {"all": (x, d.target.astype(np.int64))},
                             split="train=0.9,val=0.1", seed=seed, num_classes=10)
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        d = make_dataset(get_dataset_args())
        native = {"train": (d["x"].astype(np.float32)[:, None], d["y"].astype(np.int64)),
                  "test": (d["x_test"].astype(np.float32)[:, None], d["y_test"].astype(np.int64))}
        return arrays_source("mnist1d", native, split=None, seed=seed, num_classes=10)
    data = pystdlib_bytes(pystdlib_max_bytes())
    return text_source("pystdlib", data, split="train=0.9,val=0.1", chunk_len=TEXT_CHUNK_LEN,
                       extra={"python": sysconfig.get_python_version()})


def ensure_builtin(name: str, cache_dir: str | None, progress: bool | None = None) -> Path:
    """The packed folder of a built-in, packing it first if no process has yet."""
    final = builtin_dir(name, cache_dir)
    if (final / INDEX_NAME).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f"{final.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also on a crash
        if (final / INDEX_NAME).exists():  # another process packed it while we waited
            return final
        log.info("packing builtin:%s into %s (first use)", name, final)
        show = sys.stderr.isatty() if progress is None else progress
        pack(builtin_source(name), final, shards=BUILTIN_SHARDS, seed=0, progress=show)
    return final


def prepare_data(spec: JobSpec) -> None:
    """Pack every built-in spec.data names that is not packed yet."""
    for value in (spec.data.train, spec.data.val):
        if value is not None and value.startswith("builtin:"):
            ensure_builtin(value.removeprefix("builtin:"), spec.data.cache_dir)
