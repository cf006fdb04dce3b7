"""A learning-rate scheduler that DeepSpeed can step and checkpoint.

torch's LambdaLR refuses DeepSpeed's ZeRO optimizer wrappers (they are not `torch.optim.
Optimizer` subclasses), so this sets `lr` in the wrapper's param groups directly, the way
DeepSpeed's own schedules do, with state_dict/load_state_dict for exact resume.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class LambdaSchedule:
    def __init__(self, optimizer: Any, factor: Callable[[int], float]):
        self.optimizer = optimizer
        self.factor = factor
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_step = 0  # optimizer steps taken; the next step uses factor(last_step)
        self._apply()

    def _apply(self) -> None:
        scale = self.factor(self.last_step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * scale

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "base_lrs": self.base_lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = state["last_step"]
        self.base_lrs = state["base_lrs"]
        self._apply()
