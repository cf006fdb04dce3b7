"""Hooks: how tracking (MLflow) and launchers (Ray Train reports) watch the loop.

The loop calls every hook on every rank at the same points with the same (all-reduced) values,
so a hook that must be collective (Ray's `train.report`) can be, and a hook that must run once
(MLflow) checks `rank == 0` itself. The loop never knows which launcher started it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from phmscale.spec import JobSpec


@dataclass
class RunInfo:
    """What hooks learn at start."""

    spec: JobSpec
    rank: int
    world_size: int
    start_step: int
    resumed: bool
    run_id: str | None  # the tracking run id from the checkpoint, when resuming
    deepspeed_config: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # the torch module being trained (for logging it at the end)
    # Waits a hook adds for its own part of the checkpoint of step N to be done (Ray Train's
    # commit) before a tracking hook treats steps up to N as safe to log. A tracking hook calls
    # them off the loop thread (its flush thread), so the loop is not held up by them.
    checkpoint_gates: list[Callable[[int], None]] = field(default_factory=list)


class Hooks:
    """No-op base; override what you need."""

    def on_start(self, info: RunInfo) -> str | None:
        """Called once before the first step; may return a tracking run id to checkpoint."""
        return None

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Training metrics every `train.log_every` steps."""

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        """Validation metrics every `train.eval_every` steps and at the end."""

    def on_checkpoint(self, step: int, path: str) -> None:
        """After a checkpoint is complete on every rank."""

    def on_end(self, result: Any) -> None:
        """After the last step, or after an interrupt was handled."""


class HookList(Hooks):
    """Fan out to several hooks in order."""

    def __init__(self, hooks: list[Hooks] | None = None):
        self.hooks = list(hooks or [])

    def on_start(self, info: RunInfo) -> str | None:
        run_id = None
        for hook in self.hooks:
            run_id = hook.on_start(info) or run_id
            if run_id:
                info.run_id = run_id
        return run_id

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        for hook in self.hooks:
            hook.on_metrics(step, metrics)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        for hook in self.hooks:
            hook.on_eval(step, metrics)

    def on_checkpoint(self, step: int, path: str) -> None:
        for hook in self.hooks:
            hook.on_checkpoint(step, path)

    def on_end(self, result: Any) -> None:
        for hook in self.hooks:
            hook.on_end(result)
