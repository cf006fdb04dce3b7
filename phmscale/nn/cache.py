"""A cache for tensors derived from a layer's parameters (the materialized W) that cannot go stale.

A cached entry is reused only if every source tensor (A, S, the pruning mask) is
- the same object (held by weak reference, so a replaced parameter never matches a dead one's
  recycled id),
- at the same storage address, with the same dtype, device and shape (`.to()`, `.data = …`),
- at the same `_version` (every in-place write through autograd-visible ops bumps it:
  `load_state_dict`'s `copy_`, foreach optimizers, `with no_grad(): p.add_(…)`),
and no optimizer has stepped since it was built. The last check exists because fused optimizers
(`torch.optim.AdamW(fused=True)`, DeepSpeed's) write parameters without bumping `_version`; a
global optimizer-step hook counts steps, which costs one integer increment per step.

The one write no check can see is `p.data.copy_(…)` (`.data` detaches the version counter):
call `invalidate_cache()` on the layer after such a write.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_post_hook

_optimizer_steps = 0
_hook_handle: object | None = None


def _count_step(optimizer: object, args: object, kwargs: object) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


def _ensure_step_hook() -> None:
    """Register the global optimizer-step counter once, when the first entry is stored."""
    global _hook_handle
    if _hook_handle is None:
        _hook_handle = register_optimizer_step_post_hook(_count_step)


def _state(t: Tensor | None) -> tuple[object, ...] | None:
    if t is None:
        return None
    return (t.data_ptr(), t._version, t.dtype, t.device, t.shape)


class DerivedCache:
    """Named entries, each computed from `sources` tensors, valid while those are unchanged."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tuple[object, ...], int, list[object], Any]] = {}

    def get(self, name: str, sources: Sequence[Tensor | None], build: Callable[[], Any]) -> Any:
        """The entry `name` if still valid for `sources`, else `build()` (stored for next time)."""
        states = tuple(_state(t) for t in sources)
        entry = self._entries.get(name)
        if entry is not None:
            old_states, steps, refs, value = entry
            if (
                steps == _optimizer_steps
                and old_states == states
                and all((r is None) if t is None else (r is not None and r() is t)
                        for r, t in zip(refs, sources, strict=True))
            ):
                return value
        _ensure_step_hook()
        value = build()
        refs = [None if t is None else weakref.ref(t) for t in sources]
        self._entries[name] = (states, _optimizer_steps, refs, value)
        return value

    def clear(self) -> None:
        """Drop every entry (frees the memory of a cached W)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # Pickling (torch.save of a whole module) and deepcopy start empty: weak references cannot be
    # pickled, and a copy's sources are new tensors anyway.
    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self._entries = {}
