"""Default locations on the local disk, in one place for every package.

Dependency-free (the standard library only), so data, launch and the CLI may all import it.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CACHE = "~/.cache/phmscale"


def cache_root(cache_dir: str | None = None) -> Path:
    """phmscale's local cache: `cache_dir` when given (a job's data.cache_dir), else
    $PHMSCALE_CACHE, else ~/.cache/phmscale. Read at each call: tests and workers set the
    variable after import."""
    root = cache_dir or os.environ.get("PHMSCALE_CACHE") or DEFAULT_CACHE
    return Path(root).expanduser()
