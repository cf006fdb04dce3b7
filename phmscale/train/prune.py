"""Algebra-element pruning during training (`train.prune`), as AlgebraNets do it.

The loop calls `Pruner.after_step(done)` at every step boundary. Between `start_step` and
`end_step` the target sparsity ramps up as in Zhu & Gupta (2017), "To prune, or not to prune":

    s(t) = s_f · (1 − (1 − (t − t0) / (t1 − t0))³)      t0 ≤ t ≤ t1, every `every` steps

so most elements go early, while the net still has many steps to adapt, and the last ones go
slowly. s(t0) = 0, so elements first go at t0 + every; one-shot pruning (t0 = t1) jumps to s_f
at t0. After t1 the net fine-tunes at s_f until `train.steps`. Each event calls
`phmscale.nn.prune.prune_elements` on the pruned layers: the smallest-L2 elements (over their n
components) are masked. Already pruned elements have magnitude 0, so sparsity only grows.

Every rank computes the same masks without talking to the others: data-parallel ranks hold
bitwise-identical parameters after each step (ZeRO-1/2 all-gather the updated partitions), and
the ranking breaks ties by position. Under ZeRO-3 the parameters are partitioned, so each event
gathers S for the ranking (every rank calls it at the same step: it is a collective). The mask,
a buffer every rank keeps whole, is what prunes: the optimizer may move a pruned S value again
(AdamW's momentum and weight decay, DeepSpeed's fp32 master copy), but forward only ever sees
S·mask, so a pruned element contributes nothing and its gradient is zero.

The masks are persistent buffers of the model, so DeepSpeed checkpoints carry them and a
resumed run continues with the same pruned elements. The reported sparsity and parameter count
come from the masks alone (no gather).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from torch import nn

from phmscale.errors import InvalidInputError
from phmscale.nn.base import PHMBase
from phmscale.nn.prune import phm_layers, prune_elements, sparsity_report
from phmscale.spec import JobSpec


def target_sparsity(spec: JobSpec, done: int) -> float | None:
    """The sparsity to prune to after `done` steps, or None when no event is due then."""
    p = spec.train.prune
    if not p.enabled or done < p.start_step or done > p.last_step:
        return None
    t0, t1 = p.start_step, p.last_step
    if done != t1 and (done - t0) % p.every:
        return None
    if t1 == t0:
        return p.sparsity
    return p.sparsity * (1.0 - (1.0 - (done - t0) / (t1 - t0)) ** 3)


def pruned_layers(model: nn.Module, keep_first_last: bool) -> list[PHMBase]:
    """The layers pruning acts on: every PHM layer in module order, less the first and last
    (the stem and the classifier) when asked."""
    layers = [layer for _, layer in phm_layers(model)]
    return layers[1:-1] if keep_first_last else layers


@dataclass
class PruneState:
    """What the metrics report: element sparsity of the pruned layers, and the parameters
    left (all parameters less n per pruned element)."""

    sparsity: float
    params_nonzero: int


class Pruner:
    """Applies `train.prune` to the engine's model at the scheduled step boundaries."""

    def __init__(self, spec: JobSpec, model: nn.Module, zero_stage: int):
        self.spec, self.zero_stage = spec, zero_stage
        self.enabled = spec.train.prune.enabled
        self.layers: list[PHMBase] = []
        self.state: PruneState | None = None
        if not self.enabled:
            return
        self.layers = pruned_layers(model, spec.train.prune.keep_first_last)
        if not self.layers:
            found = len(phm_layers(model))
            raise InvalidInputError(
                f"train.prune: the model has {found} weight layer(s) and "
                "train.prune.keep_first_last leaves none to prune; set keep_first_last: false "
                "or use a deeper model")
        # ZeRO-3 leaves each parameter an empty placeholder; ds_numel is its full size.
        self.params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
        self.refresh()

    def refresh(self) -> None:
        """Recount from the masks (after pruning, or after a checkpoint brought masks back)."""
        if not self.enabled:
            return
        if all(layer.mask is None for layer in self.layers):  # nothing pruned yet
            self.state = PruneState(0.0, self.params)
            return
        # prune_elements masks every layer it is given, and a checkpoint brings all the masks
        # back, so each layer is counted from its mask (no gather under ZeRO-3).
        report = sparsity_report(self.layers)
        removed = sum(row.pruned * layer.n
                      for row, layer in zip(report.layers, self.layers, strict=True))
        self.state = PruneState(report.sparsity, self.params - removed)

    def after_step(self, done: int) -> PruneState | None:
        """Prune if an event is due after `done` steps; returns the new state, else None."""
        target = target_sparsity(self.spec, done) if self.enabled else None
        if not target:  # None, or the ramp's first event (s(t0) = 0): nothing to remove
            return None
        with self._gathered():  # collective under ZeRO-3: every rank calls this at `done`
            prune_elements(self.layers, target, self.spec.train.prune.scope)
        self.refresh()
        return self.state

    def _gathered(self):  # noqa: ANN202 (a context manager)
        if self.zero_stage < 3:
            return nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters([layer.S for layer in self.layers],
                                                 modifier_rank=None)
