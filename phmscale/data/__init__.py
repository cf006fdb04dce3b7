"""Data on WebDataset: packing sources into shards, verifying them, and the training loader.

Modules, read in this order:
- `sources`  — dataset readers (image-folder, cifar, mnist-idx, npz, text) → encoded samples
- `builtins` — offline built-ins (digits, mnist1d, pystdlib) and their pack-on-first-use cache
- `pack`     — samples → deterministic `{split}-{000000}.tar` shards + `shards.json`
- `index`    — the shards.json format
- `urls`     — patterns (brace, glob, pipe:, fsspec) → URLs → byte streams
- `shards`   — a `data.train`/`data.val` string → shard URLs and sample counts
- `verify`   — reading every shard and reporting what is wrong with it
- `check`    — validate-time `check_data(spec, world_size)`
- `plan`     — which shards each rank and loader role reads per epoch; batches per epoch
- `augment`  — `data.augment` (cifar, imagenet) on decoded pixels, seeded per sample
- `decode`   — a sample → parsed (label, array or image bytes) → model inputs; batches
- `pipeline` — what each loader worker runs: one role's batches, epoch after epoch
- `loader`   — `make_loader(spec, split, rank, world_size)` → `ShardLoader`

No Ray, DeepSpeed or MLflow here: the engine passes rank and world size in.
"""

from typing import Any

from phmscale.data.builtins import BUILTINS, builtin_source, ensure_builtin
from phmscale.data.check import check_data
from phmscale.data.index import INDEX_NAME, read_index
from phmscale.data.pack import pack
from phmscale.data.sources import FORMATS, detect_format, open_source
from phmscale.data.verify import ShardReport, verify, verify_or_raise

__all__ = [
    "BUILTINS",
    "FORMATS",
    "INDEX_NAME",
    "ShardLoader",
    "ShardReport",
    "builtin_source",
    "check_data",
    "detect_format",
    "ensure_builtin",
    "make_loader",
    "open_source",
    "pack",
    "read_index",
    "verify",
    "verify_or_raise",
]


def __getattr__(name: str) -> Any:
    """The loader on first use: it imports torch and webdataset (slow imports), which `validate`
    and `submit` (check_data) never need; webdataset itself waits for `urls.webdataset()`."""
    if name in ("ShardLoader", "make_loader"):
        from phmscale.data import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'phmscale.data' has no attribute {name!r}")
