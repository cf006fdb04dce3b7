"""What a job's model costs: parameters, savings against its dense twin, FLOPs, and memory.

Everything is counted on the meta device: no weights are allocated, so summarizing a
ResNet-50 costs milliseconds and no memory.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from phmscale.models.flops import (
    TRAIN_FLOPS_MULTIPLIER,
    algebra_forward_flops,
    forward_flops,
    measure_forward_flops,
)
from phmscale.models.layers import is_algebra_layer
from phmscale.models.registry import build_on_meta, dense_twin, resolve_spec
from phmscale.spec import JobSpec

MIB = 2**20


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per worker for parameters, gradients and optimizer states under ZeRO.

    fp32: weights and grads 4 B each, Adam's m and v 8 B (the weights are the fp32 masters).
    bf16/fp16: weights and grads 2 B, optimizer 12 B (fp32 master copy + m + v), the ZeRO
    paper's 2 + 2 + 12 = 16 B per parameter. Stage 1 shards optimizer states over the
    workers, stage 2 also gradients, stage 3 also parameters. Activations are not included.
    """

    precision: str
    zero_stage: int
    workers: int
    optimizer: str
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes


def memory_per_worker(
    params: int, trainable: int, precision: str, zero_stage: int, workers: int,
    optimizer: str = "adamw", momentum: float = 0.9,
) -> MemoryEstimate:
    """Parameter, gradient and optimizer-state bytes one worker holds (see MemoryEstimate)."""
    half = precision in ("bf16", "fp16")
    weight_bytes = 2 if half else 4
    state_bytes = {"adamw": 8, "adam": 8, "sgd": 4 if momentum > 0 else 0}[optimizer]
    state_bytes += 4 if half else 0  # fp32 master weights
    def shard(total: int, from_stage: int) -> int:
        return math.ceil(total / workers) if zero_stage >= from_stage else total
    return MemoryEstimate(
        precision, zero_stage, workers, optimizer,
        params_bytes=shard(weight_bytes * params, 3),
        grads_bytes=shard(weight_bytes * trainable, 2),
        optimizer_bytes=shard(state_bytes * trainable, 1),
    )


def layer_kind(module: nn.Module) -> str:
    """A label for parameter accounting: class, and for PHM layers the algebra and n; a
    container's own parameters (position embedding, class token) are named."""
    name = type(module).__name__
    rules = getattr(module, "A", None)
    if not isinstance(rules, torch.Tensor):
        if next(module.children(), None) is not None:
            own = ", ".join(n for n, _ in module.named_parameters(recurse=False))
            return f"{name} ({own})"
        return name
    algebra = getattr(module, "algebra", None)
    if not isinstance(algebra, str):
        n = rules.shape[0]
        algebra = "phm" if isinstance(rules, nn.Parameter) else ("real" if n == 1 else "fixed")
    return f"{name} ({algebra}, n={rules.shape[0]})"


def params_by_kind(model: nn.Module) -> dict[str, int]:
    """Parameters grouped by the kind of module that owns them directly."""
    counts: dict[str, int] = defaultdict(int)
    for module in model.modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if own:
            counts[layer_kind(module)] += own
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def algebra_layer_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if is_algebra_layer(m)]


def _params_of(model: nn.Module, names: list[str]) -> int:
    modules = dict(model.named_modules())
    return sum(p.numel() for name in names for p in modules[name].parameters())


@dataclass(frozen=True)
class ModelSummary:
    """The numbers `phmscale model summary` prints; `to_dict()` for JSON and MLflow params."""

    job: str
    kind: str
    arch: str
    algebra: str
    n: int
    task: str
    sample: str  # what "per sample" means
    params_total: int
    params_trainable: int
    params_by_kind: dict[str, int]
    algebra_layer_params: int  # in PHM layers with learned rules or a fixed algebra n > 1
    twin_params: int  # the same architecture with real layers
    twin_algebra_layer_params: int  # the twin's params in those same layers
    forward_flops_analytic: int  # per sample; dense GEMM on materialized weights
    forward_flops_measured: int  # FlopCounterMode, per sample (batch 2 − batch 1)
    materialize_flops_per_forward: int  # batch-independent part of the measurement
    algebra_flops: int  # AlgebraNets' count (structure-exploiting kernels)
    train_flops_per_sample: int  # 3 × forward analytic
    memory: MemoryEstimate
    notes: list[str] = field(default_factory=list)

    @property
    def savings_ratio(self) -> float:
        """Dense twin params ÷ params: 3.5 means 3.5× fewer parameters."""
        return self.twin_params / self.params_total

    @property
    def algebra_layer_savings(self) -> float:
        """Twin ÷ own params over the algebra layers only (≈ n; exactly n for fixed algebras;
        1.0 for a real net, which has none)."""
        if self.algebra_layer_params == 0:
            return 1.0
        return self.twin_algebra_layer_params / self.algebra_layer_params

    @property
    def flops_rel_diff(self) -> float:
        """|analytic − measured| ÷ measured."""
        return abs(self.forward_flops_analytic - self.forward_flops_measured) / max(
            self.forward_flops_measured, 1)

    @property
    def flops_per_param(self) -> float:
        """Compute density: forward FLOPs per sample per parameter."""
        return self.forward_flops_analytic / self.params_total

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["memory"]["total_bytes"] = self.memory.total_bytes
        out.update(
            savings_ratio=self.savings_ratio,
            algebra_layer_savings=self.algebra_layer_savings,
            flops_rel_diff=self.flops_rel_diff,
            flops_per_param=self.flops_per_param,
        )
        return out


def summarize(job: JobSpec) -> ModelSummary:
    """Count a job's model (built on the meta device) and estimate its per-worker memory."""
    spec = resolve_spec(job.model)
    model = build_on_meta(spec)
    twin = dense_twin(spec)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    names = algebra_layer_names(model)
    measured = measure_forward_flops(spec)
    analytic = forward_flops(spec)
    if spec.kind == "resnet":
        arch = f"{spec.arch}, {spec.stem} stem, width {spec.base_width}"
        sample = f"one {spec.input_shape} image"
    else:
        arch = f"dim {spec.dim} × depth {spec.depth}, {spec.heads} heads, {spec.attention} " \
               f"attention, mlp_ratio {spec.mlp_ratio:g}"
        sample = (f"one {spec.seq_len}-byte sequence" if spec.task == "causal_lm"
                  else f"one {spec.input_shape} input")
    notes = [f"training FLOPs = {TRAIN_FLOPS_MULTIPLIER} × forward (backward ≈ 2 × forward)"]
    if job.model.kind == "resnet" and job.model.width_match != "none":
        notes.append(f"width_match={job.model.width_match}: width {job.model.base_width} → "
                     f"{spec.base_width}")
    opt = job.train.optimizer
    return ModelSummary(
        job=job.name, kind=spec.kind, arch=arch, algebra=spec.algebra, n=spec.algebra_dim,
        task=spec.task, sample=sample,
        params_total=total, params_trainable=trainable, params_by_kind=params_by_kind(model),
        algebra_layer_params=_params_of(model, names),
        twin_params=sum(p.numel() for p in twin.parameters()),
        twin_algebra_layer_params=_params_of(twin, names),
        forward_flops_analytic=analytic, forward_flops_measured=measured.per_sample,
        materialize_flops_per_forward=measured.per_forward,
        algebra_flops=algebra_forward_flops(spec),
        train_flops_per_sample=TRAIN_FLOPS_MULTIPLIER * analytic,
        memory=memory_per_worker(total, trainable, job.train.precision, job.train.zero_stage,
                                 job.resources.workers, opt.name, opt.momentum),
        notes=notes,
    )
