"""Data on WebDataset: packing sources into shards, verifying them, and the training loader.

Modules, read in this order:
- `sources`  — dataset readers (image-folder, cifar, mnist-idx, npz, text) → encoded samples
- `builtins` — offline built-ins (digits, mnist1d, pystdlib): what they are, where they are packed
- `prepare`  — packing the built-ins a job names before training starts
- `packer`   — `pack`: samples → deterministic `{split}-{000000}.tar` shards + `shards.json`
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

import importlib
from typing import Any

# Every public name, by the module that holds it, imported on first use: importing the
# training loader (phmscale.data.loader) runs this package's __init__ first, and an eager
# import here would load the packers with it; `validate` and `submit` need neither torch nor
# webdataset. A name that is also a submodule's would become the module once that is imported
# (`verify`): take such a function from its module, phmscale.data.verify.
_HOMES = {
    "BUILTINS": "builtins", "FORMATS": "sources", "INDEX_NAME": "index",
    "ShardLoader": "loader", "ShardReport": "verify", "builtin_source": "prepare",
    "check_data": "check", "detect_format": "sources", "ensure_builtin": "prepare",
    "make_loader": "loader", "open_source": "sources", "pack": "packer",
    "prepare_data": "prepare", "read_index": "index",
    "verify_or_raise": "verify",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'phmscale.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"phmscale.data.{home}"), name)
