"""A run's checkpoint folder: who it belongs to (`run.json`) and who is using it (`.lock`).

`run.json` holds the fingerprint and identity fields of the run that owns the folder (see
`phmscale.spec.identity`), and its MLflow run id as soon as there is one: a job restarted
before its first checkpoint (torchrun, a preempted node) reopens the same MLflow run.

- A job whose fingerprint differs is refused (exit 2), naming each differing field with both
  values: its checkpoints would load into the wrong model, or silently continue another seed.
- A second live job on the folder is refused: the first holds an exclusive `flock` on `.lock`
  for as long as it runs, released by the kernel when its process dies (kill -9 included), so
  a stale lock never blocks a restart.
- A folder with checkpoints but no `run.json` (an older phmscale) is refused unless
  `checkpoint.resume=false`, which then claims it.

The folder is a local (or mounted shared) path; NFS v4 and Lustre honour flock across nodes.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from phmscale.errors import InvalidInputError
from phmscale.spec import JobSpec
from phmscale.spec.identity import differences

RUN_FILE = "run.json"
LOCK_FILE = ".lock"


class FolderInUse(InvalidInputError):
    """Another live job holds the folder's lock."""


def read_run(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / RUN_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise InvalidInputError(
            f"{path} cannot be read ({error}): it records which job owns the checkpoint "
            "folder; restore it, or move the folder away to start over") from None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    import threading  # two threads of one process may write (Ray's driver: main and watch)

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one


def mismatch_message(spec: JobSpec, folder: str | Path, theirs: dict[str, Any]) -> str:
    rows = differences(spec.identity(shown=True), theirs.get("identity", {}))
    lines = [f"checkpoint folder {spec.mask(str(folder))} belongs to another run (job "
             f"{theirs.get('job', '?')!r}, fingerprint {theirs.get('fingerprint', '?')}); "
             f"this job's fingerprint is {spec.fingerprint()}. What differs (this job / the "
             "folder's run):"]
    lines += [f"  {field}: {mine!r} / {other!r}" for field, mine, other in rows]
    if not rows:
        lines.append("  the value of a secret ${VAR} (shown as ***) in one of the fields")
    lines.append("Leave checkpoint.dir unset (each variant then trains in a folder of its "
                 f"own under checkpoints/{spec.name}/), name another checkpoint.dir, or undo "
                 "the change to resume that run.")
    return "\n".join(lines)


def check_identity(spec: JobSpec, folder: str | Path) -> dict[str, Any] | None:
    """Raise if `folder` belongs to another run; return its run record (None if unclaimed)."""
    theirs = read_run(folder)
    if theirs is None:
        has_checkpoints = any(Path(folder).glob("step_*")) if Path(folder).is_dir() else False
        if has_checkpoints and spec.checkpoint.resume:
            raise InvalidInputError(
                f"checkpoint folder {folder} holds checkpoints but no {RUN_FILE} (written by "
                "an older phmscale), so nothing says which job made them. Move them away, or "
                "set checkpoint.resume=false to train afresh in this folder.")
        return None
    if theirs.get("fingerprint") != spec.fingerprint():
        raise InvalidInputError(mismatch_message(spec, folder, theirs))
    return theirs


def _in_use(folder: str | Path, holder: str) -> str:
    return (f"checkpoint folder {folder} is in use by a live job ({holder}); two jobs in one "
            "folder would overwrite and rotate each other's checkpoints. Wait for it to end "
            "or stop it, or give this job another name or checkpoint.dir.")


_FORKED_CLOSE: set[int] = set()  # lock descriptors a forked child closes at once


def _close_in_child() -> None:
    for fd in list(_FORKED_CLOSE):
        try:
            os.close(fd)
        except OSError:
            pass
    _FORKED_CLOSE.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunFolder:
    """`with RunFolder(spec, folder) as claimed:` — locked, identity checked, `run.json`
    written; `claimed.record_run_id(id)` stores the MLflow run id in it."""

    def __init__(self, spec: JobSpec, folder: str | Path):
        self.spec, self.folder = spec, Path(folder)
        self.record: dict[str, Any] = {}
        self._fd: int | None = None

    def __enter__(self) -> RunFolder:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            theirs = check_identity(self.spec, self.folder)
            self.record = theirs or {
                "job": self.spec.name, "fingerprint": self.spec.fingerprint(),
                "identity": self.spec.identity(shown=True), "created": time.time(),
                "run_id": None,
            }
            if not self.spec.checkpoint.resume:
                self.record["run_id"] = None  # a fresh start is a new MLflow run
            _write_json(self.folder / RUN_FILE, self.record)
        except BaseException:
            self._unlock()
            raise
        return self

    @property
    def run_id(self) -> str | None:
        return self.record.get("run_id")

    def record_run_id(self, run_id: str | None) -> None:
        if run_id and run_id != self.record.get("run_id"):
            self.record["run_id"] = run_id
            _write_json(self.folder / RUN_FILE, self.record)

    def _lock(self) -> None:
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 512).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FolderInUse(_in_use(self.folder, holder)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._fd = fd
        # A flock lives as long as any copy of its descriptor: forked children (DataLoader
        # workers) would keep it for seconds after this process is killed. Not theirs to keep.
        os.set_inheritable(fd, False)
        _FORKED_CLOSE.add(fd)

    def _unlock(self) -> None:
        if self._fd is not None:
            _FORKED_CLOSE.discard(self._fd)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __exit__(self, *exc: object) -> None:
        self._unlock()


def probe(spec: JobSpec, folder: str | Path) -> None:
    """What `RunFolder` would refuse, checked without claiming anything: for launchers that
    hand the job to a cluster and want the refusal now, not in a worker's log."""
    if "://" in str(folder):
        return  # object storage: checked by the job's driver (Ray) where it runs
    check_identity(spec, folder)
    path = Path(folder) / LOCK_FILE
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)  # flock needs no write access: another user's file works
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 512).decode(errors="replace").strip() or "another process"
        raise FolderInUse(_in_use(folder, holder)) from None
    finally:
        os.close(fd)
