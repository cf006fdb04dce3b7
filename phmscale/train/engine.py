"""Everything the loop needs before its first step: the DeepSpeed engine on this rank.

Order matters: the config is checked by DeepSpeed's own parser before any process group
starts (a bad `train.deepspeed` key fails in a second, not after a rendezvous), the model is
built under the job's seed on every rank (identical init without a broadcast), and DeepSpeed
is imported only after DS_ACCELERATOR is pinned for CPU runs.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from typing import Any

import torch

from phmscale.errors import InvalidInputError
from phmscale.spec import JobSpec
from phmscale.train.config import check_deepspeed_config, deepspeed_config, lr_lambda, merge
from phmscale.train.dist import DistEnv, dist_env, init_distributed, pin_cpu_accelerator
from phmscale.train.schedule import LambdaSchedule
from phmscale.train.tensor_peak import TensorPeak

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class EngineParts:
    env: DistEnv
    engine: Any  # deepspeed.DeepSpeedEngine
    scheduler: Any  # ours (LambdaSchedule) or DeepSpeed's, from train.deepspeed
    model: torch.nn.Module
    config: dict[str, Any]
    dtype: torch.dtype
    memory: TensorPeak  # the tensor peak, counted from before the model was built


def check_compile() -> None:
    """`train.compile` on CPU needs a C++ compiler for Inductor's kernels: refuse plainly,
    before any process group starts, where there is none (on GPU, Triton writes them)."""
    if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        raise InvalidInputError(
            "train.compile: torch.compile needs a C++ compiler (g++ or clang++) on PATH for its "
            "CPU kernels; install one or set train.compile=false"
        )


def check_fused_optimizer() -> None:
    """torch.optim's fused kernels are the CUDA ones this field asks for: refuse on CPU rather
    than train with another kernel than the job says."""
    raise InvalidInputError(
        "train.fused_optimizer: the fused optimizer kernel runs on CUDA and this rank has no "
        "GPU; set train.fused_optimizer=false to train on CPU"
    )


def set_tf32(enabled: bool) -> None:
    """train.tf32 before any model exists: CUDA matmuls and cuDNN convolutions may round
    their inputs to TF32 (no effect on CPU kernels). False leaves torch's defaults."""
    if enabled:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def build_engine(spec: JobSpec, use_gpu: bool) -> EngineParts:
    """Config → process group → model → `deepspeed.initialize` for this rank."""
    env = dist_env(use_gpu)
    if env.device.type == "cpu":
        if spec.train.compile:
            check_compile()
        if spec.train.fused_optimizer:
            check_fused_optimizer()
        pin_cpu_accelerator()
    set_tf32(spec.train.tf32)
    from deepspeed.utils import logger as ds_logger

    ds_logger.setLevel(logging.WARNING)  # its INFO lines per engine/checkpoint drown the bar

    config = deepspeed_config(spec, env.world_size)
    check_deepspeed_config(config, spec.mask)
    init_distributed(env)

    memory = TensorPeak(env.device).start()
    try:
        parts = _build(spec, env, config)
    except BaseException:
        memory.stop()
        raise
    # On the engine, not the model: a compiled model (train.compile) would trace the hook.
    memory.watch(parts[1], spec.train.grad_accum)
    return EngineParts(*parts, memory=memory)


def _build(spec: JobSpec, env: DistEnv, config: dict[str, Any]) -> tuple[Any, ...]:
    """Model → `deepspeed.initialize`: (env, engine, scheduler, model, config, dtype)."""
    import deepspeed

    from phmscale.models import build_model

    torch.manual_seed(spec.train.seed)  # identical init on every rank
    model = build_model(spec.model)
    dtype = DTYPES.get(spec.train.precision, torch.float32)
    # DeepSpeed casts parameters to bf16/fp16 but leaves buffers (fixed algebra rules A,
    # BatchNorm statistics) in fp32; a layer mixing the two would fail its first matmul.
    model.to(dtype)
    if spec.train.activation_checkpointing:
        model.set_activation_checkpointing(True)
    if spec.train.compile:
        # In place (nn.Module.compile): the module keeps its own state-dict keys, so checkpoints
        # and exports hold no `_orig_mod.` prefix and load into a plain model.
        model.compile()
    schedule = None if "scheduler" in config else (
        lambda opt: LambdaSchedule(opt, lr_lambda(spec))
    )
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=config,
        lr_scheduler=schedule,
    )
    # DeepSpeed stores `engine.config` in every checkpoint (ds_config): keep a secret from
    # train.deepspeed (a monitor's api key) out of them, and out of the config hooks log.
    # Its components read their settings at initialize, above, so they keep the real value.
    config = spec.mask_tree(merge(config, spec.public_dump()["train"]["deepspeed"]))
    engine.config = config
    return env, engine, scheduler, model, config, dtype

