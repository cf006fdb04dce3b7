"""The DeepSpeed config, generated from the spec in one place, and checked by DeepSpeed itself.

The learning-rate schedule is not a DeepSpeed `scheduler` block: DeepSpeed's Warmup* schedules
start at lr 0 for the first two steps (log warmup with at least 2 warmup steps), so a spec with
`warmup_steps: 0` would waste steps. `lr_lambda` below is passed to `deepspeed.initialize` as
the scheduler; DeepSpeed steps it and stores its state in every checkpoint. A raw
`train.deepspeed.scheduler` block, if given, replaces it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

from phmscale.errors import InvalidInputError
from phmscale.spec import JobSpec

_OPTIMIZER_TYPES = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `over` into a copy of `base` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _zero(stage: int) -> dict[str, Any]:
    """The ZeRO block. Stage 1 partitions only optimizer states, so gradients need no
    contiguous buffer: DeepSpeed's default (contiguous_gradients: true) would still hook every
    parameter's gradient and copy it into a bucket as backward produces it. Off, the gradients
    are reduced once after backward. The per-tensor hooks are a fixed cost per step, which
    shows most on small models with short steps (the quickstart's: docs/benchmarks.md, "ZeRO-1
    gradient hooks"). Stages 2-3 partition gradients and keep the default."""
    block: dict[str, Any] = {"stage": stage}
    if stage == 1:
        block["contiguous_gradients"] = False
    return block


def deepspeed_config(spec: JobSpec, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config for `spec` at `world_size` data-parallel ranks, raw keys merged."""
    t, opt = spec.train, spec.train.optimizer
    if opt.name == "sgd":
        params: dict[str, Any] = {
            "lr": opt.lr, "momentum": opt.momentum, "weight_decay": opt.weight_decay
        }
    else:
        # torch_adam: use torch.optim's Adam/AdamW. DeepSpeed's FusedAdam needs CUDA, and its
        # CPUAdam would compile another op; torch's is as fast for these model sizes.
        params = {
            "lr": opt.lr,
            "betas": list(opt.betas),
            "eps": opt.eps,
            "weight_decay": opt.weight_decay,
            "torch_adam": True,
        }
        if opt.name == "adamw":
            params["adam_w_mode"] = True
    if t.fused_optimizer:  # DeepSpeed passes unknown params on to the torch.optim class
        params["fused"] = True
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": spec.data.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "train_batch_size": spec.global_batch_size(world_size),
        "optimizer": {"type": _OPTIMIZER_TYPES[opt.name], "params": params},
        "gradient_clipping": float(t.grad_clip),
        "zero_optimization": _zero(t.zero_stage),
        "fp16": {"enabled": t.precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "bf16": {"enabled": t.precision == "bf16"},
        "steps_per_print": 10**9,  # the loop prints; DeepSpeed's own line per step is noise
        "wall_clock_breakdown": False,
        "seed": t.seed,
    }
    if opt.name == "sgd" and t.zero_stage:
        # DeepSpeed vets Adam-family optimizers under ZeRO and asks for this flag for others;
        # torch's SGD keeps no state beyond momentum, which ZeRO partitions like Adam's.
        config["zero_allow_untested_optimizer"] = True
    return merge(config, t.deepspeed)


def check_deepspeed_config(config: dict[str, Any],
                           mask: Callable[[str], str] = lambda text: text) -> None:
    """Run DeepSpeed's own config parser before any process group starts.

    DeepSpeed reads the world size from the process group, which does not exist yet; the batch
    arithmetic for the real world size was already checked by the spec, so we check here with
    the world-size-1 view of the same config.
    """
    from deepspeed.runtime.config import DeepSpeedConfig

    view = copy.deepcopy(config)
    view["train_batch_size"] = (
        view["train_micro_batch_size_per_gpu"] * view["gradient_accumulation_steps"]
    )
    try:
        DeepSpeedConfig(view)
    except Exception as error:  # DeepSpeed raises assorted types for bad configs
        raise InvalidInputError(
            f"train.deepspeed: DeepSpeed rejects the merged config: {mask(str(error))}. "
            "Fix or remove the offending raw key under train.deepspeed."
        ) from None


def lr_lambda(spec: JobSpec) -> Callable[[int], float]:
    """lr multiplier at optimizer step k: linear warmup from 1/(w+1), then decay to min ratio."""
    s, total = spec.train.schedule, spec.train.steps
    warm, floor = s.warmup_steps, s.min_lr_ratio

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if s.decay == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if s.decay == "cosine" else 1 - progress
        return floor + (1 - floor) * shape

    return factor
