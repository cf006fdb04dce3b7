"""`run_job`: the one way a job runs, whoever started the process.

`phmscale run`, every Ray Train worker and every torchrun rank (TorchX) call it with the spec
and a `Launch` that says only what the launcher knows: its name, its own hooks, where this
rank keeps checkpoints, and how a stop reaches it. Everything else is decided here, once:

- the device (`use_gpu`): a GPU when there is one and the job may use it;
- the run folder (`RunFolder`): locked, its identity checked, the MLflow run id kept;
- the hooks, in order: the launcher's first (Ray's reports), MLflow on rank 0, the launcher's
  late ones (progress bar, Ray's log lines);
- stopping: the launcher's event, or SIGINT/SIGTERM in a main thread, checkpoints at the
  current step, ends the MLflow run KILLED, and returns status "interrupted".
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from phmscale.spec import JobSpec
from phmscale.train.dist import use_gpu
from phmscale.train.hooks import HookList, Hooks, RunInfo
from phmscale.train.loop import TrainResult, train


@dataclass
class Launch:
    """What a launcher tells `run_job`."""

    launcher: str  # local | ray | torchx (tags the MLflow run)
    hooks: Sequence[Hooks] = ()  # before tracking: they may supply the run id (Ray)
    late_hooks: Sequence[Hooks] = ()  # after tracking: they see the run id
    tags: dict[str, str] = field(default_factory=dict)  # extra MLflow tags
    checkpoint_dir: str | None = None  # this rank's engine folder (Ray: worker scratch)
    own_folder: bool = True  # lock and claim spec.checkpoint_dir here (Ray's driver does it)
    stop: threading.Event | None = None
    resume: bool | None = None  # None: checkpoint.resume decides
    tracking: bool = True
    max_steps: int | None = None
    dry_run: bool = False
    peak_flops: float | None = None


class _KeepRunId(Hooks):
    """After MLflow: writes the run id into the run folder's `run.json`, so a job restarted
    before its first checkpoint reopens the same MLflow run."""

    def __init__(self, folder: Any):
        self.folder = folder

    def on_start(self, info: RunInfo) -> str | None:
        if info.rank == 0:
            self.folder.record_run_id(info.run_id)
        return None


def run_job(spec: JobSpec, launch: Launch) -> TrainResult:
    """Train `spec` on this rank as `launch` says; see the module docstring."""
    rank = int(os.environ.get("RANK", "0"))
    claim = launch.own_folder and not launch.dry_run
    if claim and "://" in spec.checkpoint_dir:
        from phmscale.errors import InvalidInputError

        raise InvalidInputError(
            f"checkpoint.dir={spec.mask(spec.checkpoint_dir)}: this launcher writes checkpoints "
            "to a local (or mounted shared) path; object-store URLs go through `phmscale "
            "submit --address …` (Ray Train storage)")
    hooks: list[Hooks] = list(launch.hooks)
    if launch.tracking and not launch.dry_run:  # an unreachable server fails before anything
        from phmscale.tracking import tracking_hooks  # is written

        hooks += tracking_hooks(spec, launch.launcher, launch.tags)
    with contextlib.ExitStack() as stack:
        folder = None
        if claim and rank == 0:
            from phmscale.train.run_folder import RunFolder

            folder = stack.enter_context(RunFolder(spec, spec.checkpoint_dir))
            hooks.append(_KeepRunId(folder))
        elif claim:  # other torchrun ranks: the folder is rank 0's to lock; only check it
            from phmscale.train.run_folder import check_identity

            check_identity(spec, spec.checkpoint_dir)
        hooks += launch.late_hooks
        return train(spec, hooks=HookList(hooks), max_steps=launch.max_steps,
                     dry_run=launch.dry_run, peak_flops=launch.peak_flops,
                     use_gpu=use_gpu(spec, launch.launcher),
                     checkpoint_dir=launch.checkpoint_dir, stop=launch.stop,
                     resume=launch.resume,
                     run_id=folder.run_id if folder is not None else None)
