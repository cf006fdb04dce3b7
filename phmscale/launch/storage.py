"""A run's folder in checkpoint storage, read through pyarrow's filesystems as Ray Train
reads it (local paths and object stores alike), on the client and on the cluster. No Ray
import here: the client reads storage before it starts a local cluster, whose token settings
Ray reads once, at import.

For sweeps: a cell is a job: its checkpoints live where `phmscale submit` would keep that job's
(`<checkpoint_dir>/<name>/step_*`, checkpoint_dir made from the cell's fingerprint), so a
cell is finished when its newest checkpoint marker is at `train.steps` — or when the sweep's
early stopping ended it (an `EARLY_STOPPED` file beside the checkpoints: resubmitting the
sweep must not train a cell that ASHA already judged).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from phmscale.spec import JobSpec

EARLY_STOPPED = "EARLY_STOPPED"


def latest_marker(storage: str, name: str) -> dict[str, Any] | None:
    """The newest checkpoint marker in Ray Train's run folder `<storage>/<name>`."""
    import pyarrow.fs as pafs

    from phmscale.train.checkpoint import MARKER, is_tag

    fs, root = pafs.FileSystem.from_uri(storage)
    selector = pafs.FileSelector(f"{root.rstrip('/')}/{name}", allow_not_found=True)
    markers = []
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.Directory and is_tag(info.base_name):
            try:
                with fs.open_input_stream(f"{info.path}/{MARKER}") as stream:
                    markers.append(json.loads(stream.read()))
            except (OSError, ValueError):
                continue  # not a whole checkpoint
    return max(markers, key=lambda m: m.get("time", 0), default=None)


def sweep_storage(cell_dir: str) -> str:
    """The folder holding every cell's folder (`checkpoints/<name>` by default): Ray Tune's
    storage_path for the sweep's own records."""
    return cell_dir.rstrip("/").rsplit("/", 1)[0]


def _storage(spec: JobSpec) -> str:
    """The cell's checkpoint folder as pyarrow takes it: a URL, or an absolute path."""
    folder = spec.checkpoint_dir
    return folder if "://" in folder else os.path.abspath(folder)


def _run_dir(spec: JobSpec) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(_storage(spec))
    return fs, f"{root.rstrip('/')}/{spec.name}"


def state(spec: JobSpec) -> str:
    """`finished`, `early_stopped`, `started` (checkpoints short of train.steps) or `new`."""
    import pyarrow.fs as pafs

    fs, run_dir = _run_dir(spec)
    if fs.get_file_info(f"{run_dir}/{EARLY_STOPPED}").type == pafs.FileType.File:
        return "early_stopped"
    marker = latest_marker(_storage(spec), spec.name)
    if marker is None:
        return "new"
    if marker.get("fingerprint") == spec.fingerprint() and marker.get("step", 0) >= \
            spec.train.steps:
        return "finished"
    return "started"


def mark_early_stopped(spec: JobSpec, step: int | None, metric: str) -> None:
    fs, run_dir = _run_dir(spec)
    fs.create_dir(run_dir, recursive=True)
    with fs.open_output_stream(f"{run_dir}/{EARLY_STOPPED}") as stream:
        stream.write(json.dumps({"step": step, "metric": metric, "time": time.time()}).encode())
