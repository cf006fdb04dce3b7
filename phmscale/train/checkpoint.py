"""Atomic, rotating DeepSpeed checkpoints.

Layout: `<dir>/step_00000100/` is one DeepSpeed tag (model and optimizer shards from every
rank) plus `COMPLETE`, a JSON marker with the save's time. A save is written aside, as
`step_00000100.partial/`, by every rank; once all have finished, rank 0 writes the marker into
it and renames it into place (one atomic rename). So a name `step_*` only ever holds a whole
checkpoint: a save killed halfway leaves a `.partial` folder that nothing loads and the next
save removes, and re-saving a step that exists (a fresh start with checkpoint.resume=false)
replaces the old folder only once the new one is whole.

Rotation and resume go by save time, not step number: after a fresh start over an older run's
folder, its own new (lower-step) saves are the newest, and rotation never deletes what was
just written. DeepSpeed's own `latest` file is not used (rank 0 writes it alone, before other
ranks are known to have finished).

A save is two halves, so the files can be written while training goes on (async_save.py):
`begin` (collective, in the loop: DeepSpeed gathers the state; with `SnapshotEngine` it copies
it to CPU and a thread writes it) and `finish` (collective, in the loop once every rank's
writer is done: the marker, the rename, rotation). `save` is both at once.
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
PARTIAL = ".partial"
_TAG = re.compile(r"^step_(\d{8})$")


def is_tag(name: str) -> bool:
    """A whole checkpoint's folder name (`step_00000100`), not a `.partial` or `.old` one."""
    return _TAG.match(name) is not None


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


@dataclass(frozen=True)
class CheckpointRef:
    directory: Path
    tag: str
    step: int
    saved: float = 0.0  # the marker's time: orders saves across fresh starts

    @property
    def path(self) -> Path:
        return self.directory / self.tag


def _saved_at(folder: Path) -> float | None:
    try:
        return float(json.loads((folder / MARKER).read_text())["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no marker (or a foreign one): not a whole checkpoint


def list_checkpoints(directory: str | Path) -> list[CheckpointRef]:
    """Whole checkpoints in `directory`, oldest save first."""
    root = Path(directory)
    if not root.is_dir():
        return []
    refs = []
    for child in root.iterdir():
        match = _TAG.match(child.name)
        if match and child.is_dir() and (saved := _saved_at(child)) is not None:
            refs.append(CheckpointRef(root, child.name, int(match.group(1)), saved))
    return sorted(refs, key=lambda r: (r.saved, r.step))


def latest_checkpoint(directory: str | Path) -> CheckpointRef | None:
    """The newest save."""
    refs = list_checkpoints(directory)
    return refs[-1] if refs else None


def owner(ref: CheckpointRef) -> dict[str, Any]:
    """Which run saved it: {job, fingerprint, identity, run_id (MLflow)} from its marker ({}
    before phmscale recorded it)."""
    marker = json.loads((ref.path / MARKER).read_text())
    return {k: marker[k] for k in ("job", "fingerprint", "identity", "run_id") if k in marker}


@dataclass(frozen=True)
class PendingSave:
    """A save begun on this rank: its files are written (or being written) under `aside`."""

    directory: Path
    tag: str
    step: int

    @property
    def aside(self) -> Path:
        return self.directory / (self.tag + PARTIAL)


def begin(engine: Any, directory: str | Path, step: int, client_state: dict[str, Any],
          env: DistEnv) -> PendingSave:
    """Every rank hands its state to DeepSpeed (it requires all ranks), to be written aside.
    Collective. With the engine's checkpoint engine a `SnapshotEngine` the files are still
    being written when this returns (`async_save.snapshot_engine(engine).written()`)."""
    pending = PendingSave(Path(directory), tag_for(step), step)
    if env.is_main:
        pending.directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(pending.aside, ignore_errors=True)  # a save of this step killed halfway
    # No barrier of our own before DeepSpeed's: `save_checkpoint` barriers after rank 0's
    # makedirs, before any rank creates a file, so rank 0 has cleared the folder by then.
    engine.save_checkpoint(str(pending.directory), tag=pending.aside.name,
                           client_state=client_state, save_latest=False)
    return pending


def finish(pending: PendingSave, env: DistEnv, keep: int,
           owner: dict[str, Any] | None = None) -> CheckpointRef:
    """Mark complete, rename into place, rotate. Collective; call once every rank's files of
    `pending` are written."""
    root, tag, aside = pending.directory, pending.tag, pending.aside
    barrier(env)  # every rank's shards are on disk before the marker says so
    saved = time.time()
    if env.is_main:
        # The marker also names the run (its fingerprint and identity fields, secrets as ***):
        # a checkpoint copied or uploaded elsewhere (Ray Train storage) still says whose it is.
        marker = {"step": pending.step, "time": saved, "world_size": env.world_size,
                  **(owner or {})}
        (aside / MARKER).write_text(json.dumps(marker))
        _put_in_place(aside, root / tag)
        _rotate(root, keep, just_saved=tag)
    barrier(env)
    if not env.is_main and aside.exists():
        # This rank's folder is its own (Ray Train: worker-local scratch, merged in storage
        # by Ray): rank 0 renamed only its copy, so rename this one too.
        _put_in_place(aside, root / tag)
    return CheckpointRef(root, tag, pending.step, saved)


def save(engine: Any, directory: str | Path, step: int, client_state: dict[str, Any],
         env: DistEnv, keep: int, owner: dict[str, Any] | None = None) -> CheckpointRef:
    """Save on every rank, mark complete, rename into place, rotate: `begin` and `finish` at
    once (waiting for a `SnapshotEngine`'s writer in between). Collective."""
    from phmscale.train.async_save import snapshot_engine

    pending = begin(engine, directory, step, client_state, env)
    if (snap := snapshot_engine(engine)) is not None:
        snap.wait()
    return finish(pending, env, keep, owner)


def _put_in_place(aside: Path, final: Path) -> None:
    """Rename the finished save to its name. An older folder of that name (an earlier run's
    save of the same step) is moved off first and deleted after: in between, the name is
    briefly empty, never torn."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    aside.rename(final)  # atomic on POSIX
    shutil.rmtree(old, ignore_errors=True)


def _rotate(root: Path, keep: int, just_saved: str) -> None:
    """Keep the `keep` newest saves (never the one just written), and clear debris."""
    complete = list_checkpoints(root)
    for ref in complete[:-keep]:
        if ref.tag != just_saved:
            shutil.rmtree(ref.path, ignore_errors=True)
    for child in root.glob("step_*"):
        if child.is_dir() and not _TAG.match(child.name) and child.name != just_saved + PARTIAL:
            shutil.rmtree(child, ignore_errors=True)  # `.partial`/`.old` of an interrupted save


def load(engine: Any, ref: CheckpointRef) -> dict[str, Any]:
    """Load model, optimizer and scheduler state on every rank; return the client state."""
    path, client_state = engine.load_checkpoint(
        str(ref.directory), tag=ref.tag, load_optimizer_states=True,
        load_lr_scheduler_states=True,
    )
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {ref.path}")
    return dict(client_state or {})
