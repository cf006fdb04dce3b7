"""Activation bytes of one training forward, counted on the meta device (no memory, no compute).

What autograd keeps for backward is exactly the tensors its saved-tensor hooks see: a forward
of the model built on the meta device under `saved_tensors_hooks` counts them by storage (a
view and its base are one storage), leaving out the parameters themselves. The count is split
by activation-checkpointing unit (transformer block, ResNet stage: `checkpoint_units`), so the
checkpointed footprint follows without a second trace: every unit keeps only its input, and
backward recomputes one unit at a time.

On meta, `F.scaled_dot_product_attention` falls back to the math path and would save the
(B, H, T, T) probabilities; the fused kernels the training runs (CUDA flash / memory-efficient,
CPU flash) keep only q, k, v, the output and a (B, H, T) log-sum-exp. The trace calls the CPU
flash kernel's meta function instead, which saves that same set: at width 256, depth 6,
sequence 512 the math path would add 48 MiB per sample to 68 MiB.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from phmscale.models.registry import build_on_meta
from phmscale.spec import ModelSpec


@dataclass(frozen=True)
class ActivationBytes:
    """Saved-for-backward bytes of one forward + loss at a batch size.

    outside: saved outside any unit (embeddings, stem, final norm, head, the loss's
    log-softmax (B, T, V) in fp32); units: (input bytes, saved bytes) per checkpoint unit.
    """

    batch: int
    outside: int
    units: tuple[tuple[int, int], ...]

    @property
    def plain(self) -> int:
        """Kept from the end of forward into backward without checkpointing."""
        return self.outside + sum(saved for _, saved in self.units)

    @property
    def checkpointed(self) -> int:
        """With checkpointing: every unit's input, plus the largest unit's internals while
        backward recomputes it."""
        inputs = sum(inp for inp, _ in self.units)
        return self.outside + inputs + max((saved for _, saved in self.units), default=0)


def checkpoint_units(model: nn.Module) -> list[nn.Module]:
    """The modules `set_activation_checkpointing` recomputes: transformer blocks, ResNet
    stages."""
    for name in ("blocks", "stages"):
        units = getattr(model, name, None)
        if isinstance(units, nn.Module):
            return list(units.children())
    return []


class _FusedAttention(TorchFunctionMode):
    """SDPA as the fused CPU flash kernel (its meta function): see the module docstring."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        q, k, v = args[:3]
        out, _ = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, kwargs.get("dropout_p", 0.0), kwargs.get("is_causal", False),
            attn_mask=kwargs.get("attn_mask"), scale=kwargs.get("scale"))
        return out  # (B, H, T, e_v)


def _sample_input(spec: ModelSpec, batch: int, dtype: torch.dtype) -> torch.Tensor:
    if spec.task == "causal_lm":
        return torch.zeros(batch, spec.seq_len, dtype=torch.long, device="meta")  # (B, T)
    return torch.zeros(batch, *spec.input_shape, dtype=dtype, device="meta")  # (B, C, …)


def activation_bytes(spec: ModelSpec, batch: int,
                     dtype: torch.dtype = torch.float32) -> ActivationBytes:
    """Count what one training forward of `spec` at `batch` samples keeps for backward, with
    parameters and buffers in `dtype` (the engine casts the model to the job's precision) and
    the loss in fp32 (train.evaluate.loss_fn)."""
    model = build_on_meta(spec).to(dtype).train()
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    units = checkpoint_units(model)
    inputs = [0] * len(units)
    saved: list[dict[int, int]] = [{} for _ in range(len(units) + 1)]  # last: outside
    current = [len(units)]

    def enter(i: int):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple) -> None:
            current[0] = i
            inputs[i] = args[0].untyped_storage().nbytes()
        return hook

    def leave(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        current[0] = len(units)

    handles = []
    for i, unit in enumerate(units):
        handles += [unit.register_forward_pre_hook(enter(i)), unit.register_forward_hook(leave)]

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            saved[current[0]][storage._cdata] = storage.nbytes()
        return t

    x = _sample_input(spec, batch, dtype)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _FusedAttention():
            logits = model(x)  # (B, classes) or (B, T, V)
            target = torch.zeros(logits.shape[:-1], dtype=torch.long, device="meta")
            F.cross_entropy(logits.float().flatten(0, -2), target.flatten())
    finally:
        for handle in handles:
            handle.remove()
    # A storage first saved inside a unit and again outside it (a unit's output is the next
    # one's input) is counted once, where it was first seen.
    outside = {k: v for k, v in saved[-1].items() if not any(k in s for s in saved[:-1])}
    return ActivationBytes(
        batch, sum(outside.values()),
        tuple((inputs[i], sum(saved[i].values())) for i in range(len(units))))
