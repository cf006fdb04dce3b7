"""What a job costs one rank before it runs: peak memory and communication per optimizer step.

Memory, per rank, for P trainable parameters, w bytes per weight (4 fp32, 2 bf16/fp16), W
data-parallel ranks, under DeepSpeed's ZeRO stage s (Rajbhandari et al., SC'20, §5):

- parameters w·P, sharded (÷W) from s = 3;
- fp32 master weights 4·P: DeepSpeed's ZeRO optimizers (s ≥ 1) keep an fp32 copy of their
  partition even when the model is fp32 (measured: 2·4·P live after the engine is built);
  at s = 0 only bf16/fp16 keep one; sharded from s = 1;
- optimizer state: Adam's m and v 8·P, SGD's momentum 4·P; sharded from s = 1;
- gradients w·P, held from backward to the step; sharded from s = 2;
- the step's transient: ZeRO-1/2 flatten the gradients (w·P; at s = 2 the reduce bucket,
  `reduce_bucket_size` values) and keep their fp32 partition (4·P/W) while the optimizer runs;
- activations (models/activations.py): what forward keeps for backward at the micro batch;
  with activation checkpointing each unit's input plus one unit's internals, and then every
  gradient may already exist while a unit is recomputed.

The peak is the larger of "into backward" (states + activations) and "optimizer step" (states
+ gradients + the step's transient). Measured on CPU (LM width 256, depth 6, seq 512, n = 4,
ZeRO-1, batch 1): 91.2 MiB plain, of which 68.1 activations, and 40.0 MiB checkpointed; this
model says 89.0 and 42.2 (docs/benchmarks.md, "Memory estimate").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from phmscale.models.activations import activation_bytes
from phmscale.spec import JobSpec

WEIGHT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
REDUCE_BUCKET_SIZE = 500_000_000  # DeepSpeed's default zero_optimization.reduce_bucket_size


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one rank holds at its peak, by part (see the module docstring)."""

    workers: int
    zero_stage: int
    precision: str
    activation_checkpointing: bool
    parameters: int
    master_weights: int
    optimizer_state: int
    gradients: int
    step_transient: int
    activations: int  # as trained: checkpointed when the job says so
    activations_plain: int
    activations_checkpointed: int

    @property
    def states(self) -> int:
        """Held across steps: parameters, master weights, optimizer state."""
        return self.parameters + self.master_weights + self.optimizer_state

    @property
    def peak_bytes(self) -> int:
        return max(self._into_backward, self._optimizer_step)

    @property
    def peak_at(self) -> str:
        return "backward" if self._into_backward >= self._optimizer_step else "optimizer step"

    @property
    def _into_backward(self) -> int:
        grads = self.gradients if self.activation_checkpointing else 0
        return self.states + self.activations + grads

    @property
    def _optimizer_step(self) -> int:
        return self.states + self.gradients + self.step_transient

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak_bytes": self.peak_bytes, "peak_at": self.peak_at}


def _shard(total: int, workers: int, sharded: bool) -> int:
    return math.ceil(total / workers) if sharded else total


def estimate_memory(spec: JobSpec, workers: int | None = None) -> MemoryEstimate:
    """Peak bytes per rank for `spec` at `workers` data-parallel ranks (default: the job's)."""
    t = spec.train
    world = spec.resources.workers if workers is None else workers
    import torch

    from phmscale.models.registry import build_on_meta

    model = build_on_meta(spec.model)
    p = sum(q.numel() for q in model.parameters() if q.requires_grad)
    params = sum(q.numel() for q in model.parameters())
    w, s = WEIGHT_BYTES[t.precision], t.zero_stage
    half = t.precision != "fp32"
    state = {"adamw": 8, "adam": 8, "sgd": 4 if t.optimizer.momentum > 0 else 0}
    transient = 0
    if s in (1, 2):  # flattened gradients (stage 2: the contiguous bucket), fp32 partition
        bucket = int(t.deepspeed.get("zero_optimization", {}).get(
            "reduce_bucket_size", REDUCE_BUCKET_SIZE))
        transient = w * (p if s == 1 else bucket) + _shard(4 * p, world, True)
    elif s == 0 and half:  # DeepSpeed's BF16_Optimizer accumulates fp32 gradients
        transient = 4 * p
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision, torch.float32)
    acts = activation_bytes(spec.model, spec.data.batch_size, dtype)
    return MemoryEstimate(
        workers=world, zero_stage=s, precision=t.precision,
        activation_checkpointing=t.activation_checkpointing,
        parameters=_shard(w * params, world, s >= 3),
        master_weights=_shard(4 * p, world, s >= 1) if (s >= 1 or half) else 0,
        optimizer_state=_shard(state[t.optimizer.name] * p, world, s >= 1),
        gradients=_shard(w * p, world, s >= 2),
        step_transient=transient,
        activations=acts.checkpointed if t.activation_checkpointing else acts.plain,
        activations_plain=acts.plain, activations_checkpointed=acts.checkpointed,
    )


@dataclass(frozen=True)
class CommEstimate:
    """Bytes one rank sends per optimizer step (ring collectives)."""

    workers: int
    zero_stage: int
    parameters: int
    bytes_per_value: int
    gradient_bytes: int  # all-reduce (s ≤ 1) or reduce-scatter (s ≥ 2) of the gradients
    parameter_bytes: int  # all-gathers of the parameters (s ≥ 2)

    @property
    def total_bytes(self) -> int:
        return self.gradient_bytes + self.parameter_bytes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_bytes": self.total_bytes}


def estimate_comm(spec: JobSpec, workers: int | None = None) -> CommEstimate:
    """Bytes each rank sends per optimizer step for the job's ZeRO stage.

    A ring all-reduce of M bytes sends 2·(W−1)/W·M per rank (a reduce-scatter and an
    all-gather, (W−1)/W·M each). ZeRO paper (Rajbhandari et al., SC'20, §7.2): stages 0-2
    move 2Ψ, as plain data parallelism; stage 3 3Ψ (an all-gather of the parameters in forward
    and another in backward, and the gradients' reduce-scatter). DeepSpeed reduces at the
    accumulation boundary for stages 0-1 but every micro-step from stage 2 (gradients are
    partitioned as backward produces them), and stage 3 gathers the parameters every micro-step.
    Values travel in the model's dtype (DeepSpeed's communication_data_type default). PHM's
    algebra layers hold 1/n of the dense weights, so their traffic is 1/n; embeddings are not
    algebra layers and move in full.
    """
    t = spec.train
    world = spec.resources.workers if workers is None else workers
    from phmscale.models.registry import build_on_meta

    p = sum(q.numel() for q in build_on_meta(spec.model).parameters() if q.requires_grad)
    w, s, accum = WEIGHT_BYTES[t.precision], t.zero_stage, t.grad_accum
    one = (world - 1) / world * p * w  # one reduce-scatter or all-gather of every value
    if s <= 1:
        grads, params = 2 * one, 0.0
    elif s == 2:
        grads, params = accum * one, one  # reduce-scatter per micro-step; updated partitions
    else:
        grads, params = accum * one, accum * 2 * one  # + gathers in forward and backward
    return CommEstimate(world, s, p, w, round(grads), round(params))
