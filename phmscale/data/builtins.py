"""Offline built-in datasets (`builtin:<name>` in a job): what they are and where they are
packed. Packing them is `prepare.py`'s, before training starts, so the training loader, which
finds them here, never imports the packers.

- `digits`: scikit-learn's 1,797 8×8 digits (shipped with sklearn, no download); x float32
  (1, 8, 8) scaled to [0, 1] (pixels are 0..16), 10 classes; seeded 90/10 split (1617/180).
- `mnist1d`: `mnist1d.data.make_dataset(get_dataset_args())`, generated locally (its seed 42);
  x float32 (1, 40), 10 classes; its own split, 4000 train / 1000 val.
- `pystdlib`: the bytes of the running Python's standard-library `.py` files in sorted path
  order, capped at $PHMSCALE_PYSTDLIB_BYTES (default 4 MB: ~7,000 chunks, packs in about a
  second), as 513-byte chunks (model.seq_len up to 512); contiguous 90/10 split. The bytes
  depend on the Python version, which is part of the cache key.

Every built-in is packed with 8 shards per split, so 4 ranks × 2 loader workers each get a
shard. The cache lives in `phmscale.paths.cache_root`: `data.cache_dir`, else $PHMSCALE_CACHE, else
~/.cache/phmscale, under
`builtin/<name>-<hash of what determines the bytes>/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from pathlib import Path
from typing import Any

from phmscale.errors import InvalidInputError
from phmscale.paths import cache_root

BUILTINS = ("digits", "mnist1d", "pystdlib")
BUILTIN_SHARDS = 8  # per split: enough for 4 ranks × 2 loader workers
PYSTDLIB_ENV = "PHMSCALE_PYSTDLIB_BYTES"
PYSTDLIB_DEFAULT_BYTES = 4_000_000
TEXT_CHUNK_LEN = 513  # seq_len + 1 for seq_len up to 512 (the loader crops longer chunks)
_CACHE_VERSION = 1  # bump when the packed bytes of a built-in change

# What each built-in's shards.json `dataset` block says, known without packing (check_data uses
# it at validate time; tests/data checks it against a real pack).
BUILTIN_DATASETS: dict[str, dict[str, Any]] = {
    "digits": {"task": "classify", "keys": ["cls", "npy"], "shape": [1, 8, 8],
               "dtype": "float32", "num_classes": 10},
    "mnist1d": {"task": "classify", "keys": ["cls", "npy"], "shape": [1, 40],
                "dtype": "float32", "num_classes": 10},
    "pystdlib": {"task": "causal_lm", "keys": ["bin"], "shape": [TEXT_CHUNK_LEN],
                 "dtype": "uint8", "num_classes": None, "chunk_len": TEXT_CHUNK_LEN,
                 "vocab_size": 256},
}


def check_name(name: str) -> None:
    if name not in BUILTINS:
        raise InvalidInputError(
            f"unknown built-in dataset {name!r}: choose builtin:{', builtin:'.join(BUILTINS)}"
        )


def pystdlib_max_bytes() -> int:
    raw = os.environ.get(PYSTDLIB_ENV, str(PYSTDLIB_DEFAULT_BYTES))
    try:
        return max(1, int(raw))
    except ValueError as error:
        raise InvalidInputError(f"${PYSTDLIB_ENV}={raw!r} is not a byte count") from error


def pystdlib_bytes(max_bytes: int) -> bytes:
    """The standard library's .py sources (no site-packages), sorted by path, capped."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        (p for p in root.rglob("*.py")
         if not {"site-packages", "dist-packages", "__pycache__"} & set(p.parts)),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    out = bytearray()
    for path in files:
        out += path.read_bytes()[: max_bytes - len(out)]
        if len(out) >= max_bytes:
            break
    return bytes(out)


def _params(name: str) -> dict[str, Any]:
    """Everything that determines a built-in's packed bytes (its cache key)."""
    params: dict[str, Any] = {"name": name, "version": _CACHE_VERSION, "seed": 0,
                              "shards": BUILTIN_SHARDS}
    if name == "pystdlib":
        params |= {"max_bytes": pystdlib_max_bytes(), "chunk_len": TEXT_CHUNK_LEN,
                   "python": sysconfig.get_python_version()}
    return params


def builtin_dir(name: str, cache_dir: str | None) -> Path:
    """Where a built-in is (or will be) packed; nothing is created."""
    check_name(name)
    key = hashlib.sha256(json.dumps(_params(name), sort_keys=True).encode()).hexdigest()[:10]
    return cache_root(cache_dir) / "builtin" / f"{name}-{key}"
