"""Atomic, rotating DeepSpeed checkpoints.

Layout: `<dir>/step_00000100/` is one DeepSpeed tag (model and optimizer shards from every
rank) plus `COMPLETE`, a JSON marker rank 0 writes only after every rank has finished writing.
A save killed halfway leaves a tag without the marker, which loading ignores and the next
successful save deletes — so the last good checkpoint is never replaced by a partial one.
DeepSpeed's own `latest` file is not used (it is written by rank 0 alone, before other ranks
are known to have finished).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phmscale.train.dist import DistEnv, barrier

MARKER = "COMPLETE"
_TAG = re.compile(r"^step_(\d{8})$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


@dataclass(frozen=True)
class CheckpointRef:
    directory: Path
    tag: str
    step: int

    @property
    def path(self) -> Path:
        return self.directory / self.tag


def list_checkpoints(directory: str | Path, complete_only: bool = True) -> list[CheckpointRef]:
    """Checkpoints in `directory`, oldest first."""
    root = Path(directory)
    if not root.is_dir():
        return []
    refs = []
    for child in root.iterdir():
        match = _TAG.match(child.name)
        if match and child.is_dir() and (not complete_only or (child / MARKER).is_file()):
            refs.append(CheckpointRef(root, child.name, int(match.group(1))))
    return sorted(refs, key=lambda r: r.step)


def latest_checkpoint(directory: str | Path) -> CheckpointRef | None:
    refs = list_checkpoints(directory)
    return refs[-1] if refs else None


def save(engine: Any, directory: str | Path, step: int, client_state: dict[str, Any],
         env: DistEnv, keep: int) -> CheckpointRef:
    """Save on every rank (DeepSpeed requires it), mark complete, rotate. Collective."""
    root = Path(directory)
    tag = tag_for(step)
    if env.is_main:
        root.mkdir(parents=True, exist_ok=True)
        stale = root / tag  # a partial save of the same step from a killed run
        if stale.exists() and not (stale / MARKER).exists():
            shutil.rmtree(stale)
    barrier(env)
    engine.save_checkpoint(str(root), tag=tag, client_state=client_state, save_latest=False)
    barrier(env)  # every rank's shards are on disk before the marker says so
    if env.is_main:
        marker = {"step": step, "time": time.time(), "world_size": env.world_size}
        tmp = root / tag / (MARKER + ".tmp")
        tmp.write_text(json.dumps(marker))
        tmp.rename(root / tag / MARKER)  # atomic on POSIX
        _rotate(root, keep)
    barrier(env)
    return CheckpointRef(root, tag, step)


def _rotate(root: Path, keep: int) -> None:
    complete = list_checkpoints(root)
    newest = complete[-1].step if complete else -1
    for ref in complete[:-keep]:
        shutil.rmtree(ref.path, ignore_errors=True)
    for ref in list_checkpoints(root, complete_only=False):
        if ref.step < newest and not (ref.path / MARKER).exists():
            shutil.rmtree(ref.path, ignore_errors=True)  # debris of an interrupted save


def load(engine: Any, ref: CheckpointRef) -> dict[str, Any]:
    """Load model, optimizer and scheduler state on every rank; return the client state."""
    path, client_state = engine.load_checkpoint(
        str(ref.directory), tag=ref.tag, load_optimizer_states=True,
        load_lr_scheduler_states=True,
    )
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {ref.path}")
    return dict(client_state or {})
