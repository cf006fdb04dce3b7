"""Forward FLOPs per sample: analytic from the spec, and measured with `FlopCounterMode`.

Conventions (both counts):
- A multiply-add is 2 FLOPs; only matrix products count (linear, conv, attention's QKᵀ and
  AV). Norms, softmax, activations, pooling, residual and bias adds are left out, as
  FlopCounterMode leaves them out: each costs a few FLOPs per activation, against 2·fan-in per
  output of a product.
- A PHM or fixed-algebra layer counts as the dense GEMM/conv on its materialized weight
  W = Σᵢ Aᵢ⊗Sᵢ, since that is what training executes. Building W is a per-forward cost
  independent of batch size; the measurement separates it by differencing batches of 2 and 1.
- Attention counts the full T×T products even when causal, as FlopCounterMode does (a flash
  kernel skips about half of them; the math path computes them all, then masks).
- An LM "sample" is one sequence of seq_len bytes; divide by seq_len for FLOPs per token.
- Training FLOPs per sample = 3 × forward: backward forms gradients for activations and for
  weights, each a product the size of the forward one (Kaplan et al. 2020's 6N per token).

`algebra_forward_flops` also reports AlgebraNets' count, in which a hypercomplex layer costs
dense·mults/n² (layers.ALGEBRA_MULTS): what a kernel exploiting the algebra would execute.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from phmscale.models.layers import REAL, Algebra
from phmscale.models.registry import build_model, build_on_meta, resolve_spec
from phmscale.models.resnet_plan import layer_shapes
from phmscale.models.transformer import patch_grid
from phmscale.spec import ModelSpec

TRAIN_FLOPS_MULTIPLIER = 3  # forward + backward (2× forward), see the module docstring


@dataclass(frozen=True)
class FlopTerm:
    """A group of products: its forward FLOPs per sample and the algebra that runs it."""

    name: str
    flops: int
    alg: Algebra  # REAL for attention scores, embeddings and real stems/heads


def transformer_flop_terms(spec: ModelSpec) -> list[FlopTerm]:
    """Analytic forward FLOPs per sample of a PHM-Transformer, grouped by role."""
    alg = Algebra.of(spec)
    d, h, e = spec.dim, spec.heads, spec.dim // spec.heads
    terms: list[FlopTerm] = []
    if spec.task == "causal_lm":
        t = spec.seq_len
    else:
        patches, patch_dim = patch_grid(spec)
        stem = REAL if spec.real_stem else alg
        terms.append(FlopTerm("patch_embed", 2 * patches * stem.round_up(patch_dim) * d, stem))
        t = patches + (spec.pool == "cls")
    proj = {  # per block: (attention projection FLOPs, width of q/k, width of v) per token
        "standard": (2 * d * d * 4, e, e),
        "collapsed_qk": (2 * d * h * d + 2 * d * d * 2, d, e),
        # value_output none: only Wqk (the values are the tokens themselves)
        "collapsed_qk_vo": (2 * d * h * d * (2 if spec.value_output == "matrix" else 1), d, d),
        "symmetric": (2 * d * d * 3, e, e),
    }[spec.attention]
    per_token, qk_width, v_width = proj
    L = spec.depth
    terms.append(FlopTerm("attention_proj", L * t * per_token, alg))
    # QKᵀ: (T, w_qk)·(w_qk, T) and AV: (T, T)·(T, w_v) for each of H heads.
    terms.append(FlopTerm("attention_scores", L * 2 * h * t * t * (qk_width + v_width), REAL))
    hidden = int(spec.mlp_ratio * d)
    if hidden:
        terms.append(FlopTerm("mlp", L * t * 2 * 2 * d * hidden, alg))
    if spec.task == "causal_lm":
        terms.append(FlopTerm("lm_head", 2 * t * d * spec.vocab_size, REAL))  # tied embedding
    else:
        head = REAL if spec.real_head else alg
        terms.append(FlopTerm("head", 2 * d * head.round_up(spec.num_classes), head))
    return terms


def resnet_flop_terms(spec: ModelSpec) -> list[FlopTerm]:
    """Analytic forward FLOPs per sample of an AlgebraNet/PHC ResNet, grouped by stage."""
    groups: dict[tuple[str, Algebra], int] = defaultdict(int)
    for layer in layer_shapes(resolve_spec(spec)):
        groups[(layer.name.split(".")[0], layer.alg)] += layer.flops
    return [FlopTerm(name, flops, alg) for (name, alg), flops in groups.items()]


def flop_terms(spec: ModelSpec) -> list[FlopTerm]:
    """Analytic forward FLOPs per sample, by group, for any model kind."""
    if spec.kind == "resnet":
        return resnet_flop_terms(spec)
    return transformer_flop_terms(spec)


def forward_flops(spec: ModelSpec) -> int:
    """Analytic forward FLOPs per sample (dense GEMM on materialized weights)."""
    return sum(t.flops for t in flop_terms(spec))


def train_flops_per_sample(spec: ModelSpec) -> int:
    """Training FLOPs per sample: 3 × forward (backward ≈ 2 × forward)."""
    return TRAIN_FLOPS_MULTIPLIER * forward_flops(spec)


def algebra_forward_flops(spec: ModelSpec) -> int:
    """Forward FLOPs per sample as AlgebraNets count them (structure-exploiting kernels)."""
    return round(sum(t.flops * t.alg.flop_ratio for t in flop_terms(spec)))


# -- measured ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredFlops:
    """FlopCounterMode's count of one forward, split into per-sample and per-forward parts."""

    per_sample: int  # F(batch 2) − F(batch 1)
    per_forward: int  # F(1) − per_sample: batch-independent work, e.g. building W = Σ Aᵢ⊗Sᵢ
    by_op: dict[str, int]  # per-sample FLOPs by aten op


def example_input(spec: ModelSpec, batch: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """A zero batch in the data contract's form: float (B, *input_shape) or int64 (B, seq_len)."""
    if spec.task == "causal_lm":
        return torch.zeros(batch, spec.seq_len, dtype=torch.long, device=device)
    return torch.zeros(batch, *spec.input_shape, device=device)


def _cpu_flash_sdpa_flops(q, k, v, *args, out_shape=None, **kwargs) -> int:  # type: ignore[no-untyped-def]
    return sdpa_flop_count(q, k, v)


# torch 2.13's FlopCounterMode knows the CUDA SDPA kernels but not the CPU flash kernel SDPA
# picks for equal q/k/v widths on CPU (it would count 0); the meta device decomposes SDPA into
# bmm instead. Counting that kernel as the same QKᵀ + AV products keeps CPU, CUDA and meta equal.
_EXTRA_FORMULAS = {
    op: _cpu_flash_sdpa_flops
    for op in [getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)]
    if op is not None
}


class _GlobalOnly:
    """FlopCounterMode's module tracker, reduced to what we read: every count under "Global".
    The real `ModuleTracker` registers process-wide module forward hooks (and grad hooks on
    the outputs) while counting, which would reach a model training in another thread: the
    MLflow hook summarizes the model in a thread beside the training loop. The dispatch mode
    that does the counting is thread-local, so without the tracker nothing leaks."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _count(model: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    counter.mod_tracker = _GlobalOnly()  # type: ignore[assignment]
    with torch.no_grad(), counter:
        model(x)
    return {str(op): int(f) for op, f in counter.get_flop_counts()["Global"].items()}


def measure_forward_flops(spec: ModelSpec, device: str | torch.device = "meta") -> MeasuredFlops:
    """Count one forward at batch 1 and batch 2 with `torch.utils.flop_counter.FlopCounterMode`.

    On the meta device (default) nothing is computed or allocated, so this is cheap even for
    ResNet-50 at 224×224; the counts are the same as on a real device.
    """
    if torch.device(device).type == "meta":
        model = build_on_meta(spec).eval()
    else:
        with torch.device(device):
            model = build_model(spec).eval()
    for layer in model.modules():
        # Count the path training takes: phmscale.nn caches W in eval under no_grad (batch 2
        # would then skip the build batch 1 paid for, breaking the difference), and its `auto`
        # algorithm picks the structured kernel for layers that see few rows, as the head does
        # at batch 1–2 (never at training batches: rows·n·4 > in), adding its 2·R·n²·out mix.
        if hasattr(layer, "cache_weight"):
            layer.cache_weight = False
        if hasattr(layer, "algorithm"):
            layer.algorithm = "materialize"
    one, two = (_count(model, example_input(spec, b, device)) for b in (1, 2))
    by_op = {op: two.get(op, 0) - one.get(op, 0) for op in set(one) | set(two)}
    per_sample = sum(by_op.values())
    return MeasuredFlops(per_sample, sum(one.values()) - per_sample,
                         {k: v for k, v in sorted(by_op.items()) if v})
