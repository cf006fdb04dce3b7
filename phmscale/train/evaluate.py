"""Validation and the loss both tasks train on.

Classification reports accuracy, causal LMs bits per byte: the quality metric each job's
tracking, `phmscale compare` and the best-checkpoint bookkeeping read.

Bits per byte, so that byte-level and BPE models compare: a byte model's tokens are bytes, so
val_bpb = val_loss / ln 2. A BPE model (data.tokenizer set) keeps val_loss per token and
divides the summed token losses by the UTF-8 bytes its target tokens cover instead
(val_bpb = Σ loss / ln 2 / Σ bytes(y), from `Tokenizer.token_bytes`): at ~3.6 bytes per token
(a 4096-token BPE on pystdlib) its per-token loss is ~3.6× a byte model's at equal quality.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from phmscale.spec import JobSpec
from phmscale.train.dist import DistEnv, all_reduce_sum

Batch = tuple[torch.Tensor, torch.Tensor]


class BatchSource(Protocol):
    """What the loop needs of a loader (phmscale.data.loader.ShardLoader is one)."""

    batches_per_epoch: int

    def stream(self, start_batch: int = 0) -> Iterator[Batch]: ...

    def iterate(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]: ...


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for both tasks: (B, C) vs (B,) or (B, T, V) vs (B, T)."""
    return F.cross_entropy(logits.float().flatten(0, -2), y.flatten())


def quality_name(spec: JobSpec) -> str:
    return "val_bpb" if spec.model.task == "causal_lm" else "val_accuracy"


def is_better(spec: JobSpec, new: float, best: float | None) -> bool:
    """Bits per byte improve downwards, accuracy upwards."""
    if best is None:
        return True
    return new < best if quality_name(spec) == "val_bpb" else new > best


@torch.no_grad()
def evaluate(engine: Any, spec: JobSpec, source: BatchSource, env: DistEnv,
             dtype: torch.dtype) -> dict[str, float]:
    """Loss and quality over the validation split (sharded over ranks, summed)."""
    engine.eval()
    limit = spec.train.eval_batches or source.batches_per_epoch
    token_bytes = _token_bytes(spec, env.device)
    loss_sum = correct = count = byte_count = 0.0
    for i, (x, y) in enumerate(source.iterate(epoch=0)):
        if i >= limit:
            break
        x = x.to(env.device, dtype if x.is_floating_point() else None)
        y = y.to(env.device)
        logits = engine(x).float()
        loss_sum += F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="sum").item()
        count += y.numel()
        if spec.model.task == "classify":
            correct += (logits.argmax(-1) == y).sum().item()
        elif token_bytes is not None:
            byte_count += token_bytes[y].sum().item()  # (B, T) ids → the bytes they cover
    engine.train()
    loss_sum, correct, count, byte_count = all_reduce_sum(
        [loss_sum, correct, count, byte_count], env)
    count = max(count, 1.0)
    out = {"val_loss": loss_sum / count}
    if spec.model.task == "causal_lm":
        # nats → bits, per byte (a byte model's tokens are its bytes)
        per = max(byte_count, 1.0) if token_bytes is not None else count
        out["val_bpb"] = loss_sum / math.log(2) / per
    else:
        out["val_accuracy"] = correct / count
    return out


def _token_bytes(spec: JobSpec, device: torch.device) -> torch.Tensor | None:
    """(vocab_size,) int64 on `device`: the bytes each token id covers, for a job with
    data.tokenizer (None for byte models)."""
    if spec.model.task != "causal_lm" or spec.data.tokenizer is None:
        return None
    from phmscale.data.tokenizer import load_tokenizer

    table = load_tokenizer(spec.data.tokenizer).token_bytes()
    return torch.from_numpy(table).to(device)
