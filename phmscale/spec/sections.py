"""The sections of a job spec, one pydantic model each; the model section's kinds are in
`model_spec.py`.

Every model forbids unknown keys (`extra="forbid"`) so a typo fails at load time with the
closest valid key, not minutes into a run on a cluster. Field descriptions feed `phmscale schema`
and the README's reference table. Cross-section checks live in `job.py`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """Base of every spec model: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSpec(Section):
    """Where the samples come from and how each worker batches them."""

    train: str = Field(
        ...,
        description="Training shards: a folder written by `phmscale data pack` (its train "
        "split), a brace/glob pattern of local tars, a pipe: command, an fsspec URL (s3://, "
        "gs://, http://), or builtin:<digits|mnist1d|pystdlib>.",
    )
    val: str | None = Field(
        None, description="Validation shards, same forms as train (a packed folder gives its "
        "val split)."
    )
    tokenizer: str | None = Field(
        None, description="causal_lm: the tokenizer.json the text was packed with (`phmscale "
        "data pack … --tokenizer`); model.vocab_size must equal its size. Validation then "
        "reports bits per byte from the bytes each token covers; generate and exports use it. "
        "None: byte-level tokens (vocab 256).",
    )
    batch_size: int = Field(64, ge=1, description="Samples per worker per micro-step.")
    loader_workers: int = Field(
        2, ge=0, le=64,
        description="DataLoader processes per worker that read, decode and augment shards; "
        "each plays one share of the rank's shards for the whole run (0: read in the training "
        "process).",
    )
    shuffle_buffer: int = Field(
        1000, ge=0, description="Sample shuffle buffer size per loader worker (0: no shuffle)."
    )
    resampled: bool = Field(
        False,
        description="Stream shards with replacement (never runs out; needed when there are "
        "fewer shards than ranks × loader workers).",
    )
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="A bad sample or shard: raise (names it) or skip and count it."
    )
    cache_dir: str | None = Field(
        None,
        description="Where builtin: datasets are packed on first use; default "
        "$PHMSCALE_CACHE or ~/.cache/phmscale.",
    )
    memory_cache_mib: int = Field(
        0, ge=0,
        description="Parsed samples each loader process may keep in memory across epochs, in "
        "MiB (0: off, every epoch streams from the shards). For small splits read many "
        "times: a shard read whole once is then served from memory, in the same order.",
    )
    augment: Literal["none", "cifar", "imagenet"] = Field(
        "none",
        description="Image augmentation, seeded per (train.seed, epoch, sample key): none "
        "(fit to model.input_shape); cifar (pad 4, random crop, horizontal flip); imagenet "
        "(train: random resized crop, scale 0.08-1, + flip; val: resize to 1.14x, center "
        "crop). Validation never flips or crops at random.",
    )
    mean: list[float] | None = Field(
        None, description="Per-channel mean of pixels scaled to [0, 1], subtracted after "
        "scaling (None: the statistics `phmscale data pack` recorded for image data, else "
        "none).",
    )
    std: list[float] | None = Field(
        None, description="Per-channel standard deviation, divided after the mean (None: as "
        "for mean).",
    )

    @model_validator(mode="after")
    def _check_normalize(self) -> DataSpec:
        if (self.mean is None) != (self.std is None):
            raise ValueError("data.mean and data.std go together: set both (one value per "
                             "channel) or neither")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std):
                raise ValueError(f"data.mean has {len(self.mean)} values but data.std has "
                                 f"{len(self.std)}: give one per channel in both")
            if any(s <= 0 for s in self.std):
                raise ValueError("data.std: every value must be > 0")
        return self


class OptimizerSpec(Section):
    """The optimizer DeepSpeed builds."""

    name: Literal["adamw", "adam", "sgd"] = Field("adamw", description="Optimizer.")
    lr: float = Field(3.0e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas.")
    eps: float = Field(1e-8, gt=0, description="Adam epsilon.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")


class ScheduleSpec(Section):
    """Learning-rate schedule: linear warmup, then decay to min_lr_ratio·lr."""

    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps.")
    decay: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay shape.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final lr as a fraction of lr.")


class PruneSpec(Section):
    """Pruning of whole algebra elements (AlgebraNets): magnitude over each weight element's n
    components, ramped up during training and then fine-tuned at the final sparsity."""

    sparsity: float = Field(
        0.0, ge=0, lt=1, description="Final fraction of algebra elements pruned (0: no pruning)."
    )
    start_step: int = Field(
        1, ge=1, description="Optimizer steps done when the ramp starts (its target is 0 "
        "there: elements first go at start_step + every; one-shot pruning prunes here)."
    )
    end_step: int | None = Field(
        None, ge=1, description="Step at which the final sparsity is reached (None: start_step, "
        "one-shot); in between, sparsity ramps up cubically (Zhu & Gupta 2017). Must leave "
        "steps after it to fine-tune.",
    )
    every: int = Field(10, ge=1, description="Prune every k steps between start and end step.")
    scope: Literal["global", "layer"] = Field(
        "global", description="Rank elements across all pruned layers (global) or within each."
    )
    keep_first_last: bool = Field(
        True, description="Leave the first and last weight layer (stem, classifier) unpruned, "
        "as AlgebraNets and most pruning studies do.",
    )

    @property
    def enabled(self) -> bool:
        return self.sparsity > 0

    @property
    def last_step(self) -> int:
        return self.start_step if self.end_step is None else self.end_step

    @model_validator(mode="after")
    def _check(self) -> PruneSpec:
        if self.end_step is not None and self.end_step < self.start_step:
            raise ValueError(
                f"end_step={self.end_step} is before start_step={self.start_step}: "
                "set end_step >= start_step (or leave it out for one-shot pruning)"
            )
        return self


class TrainSpec(Section):
    """The optimization: steps, batches, precision, ZeRO."""

    steps: int = Field(500, ge=1, description="Optimizer steps.")
    eval_every: int = Field(100, ge=1, description="Evaluate every k steps (and at the end).")
    eval_batches: int | None = Field(
        None, ge=1, description="Validation batches per evaluation (None: the whole split)."
    )
    log_every: int = Field(10, ge=1, description="Log metrics every k steps.")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="Optimizer.")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec, description="LR schedule.")
    grad_clip: float = Field(1.0, ge=0, description="Gradient-norm clip (0 disables).")
    grad_accum: int = Field(1, ge=1, description="Micro-steps per optimizer step.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32, bf16 (GPU, or CPU where supported) or fp16 (GPU only)."
    )
    zero_stage: int = Field(1, ge=0, le=3, description="DeepSpeed ZeRO stage 0..3.")
    seed: int = Field(0, ge=0, description="Seed for init, data order and dropout.")
    deepspeed: dict[str, Any] = Field(
        default_factory=dict,
        description="Raw DeepSpeed config keys merged over the generated config; keys that "
        "contradict the spec (batch sizes, ZeRO stage, precision, clipping) are errors.",
    )
    prune: PruneSpec = Field(
        default_factory=PruneSpec, description="Algebra-element pruning (off by default)."
    )
    compile: bool = Field(
        False, description="torch.compile the model (Inductor; CPU needs a C++ compiler). The "
        "first steps, and the first evaluation, pay the compile time (tens of seconds on CPU), "
        "later ones run the compiled graph. Checkpoints and exports keep the plain model's "
        "keys. Not part of the run's identity: it trains the same function.",
    )
    activation_checkpointing: bool = Field(
        False, description="Recompute activations in backward instead of keeping them, per "
        "transformer block / ResNet stage: less activation memory for about one more forward "
        "per step. Not part of the run's identity: outputs and gradients are unchanged.",
    )
    fused_optimizer: bool = Field(
        False, description="The optimizer's fused CUDA kernel (torch.optim's fused=True: one "
        "kernel for every parameter's update). GPU only: refused on CPU. Not part of the run's "
        "identity: the same update, rounded apart in the last bits.",
    )
    tf32: bool = Field(
        False, description="Allow TF32 in CUDA matmuls and cuDNN convolutions (Ampere and "
        "later: ~8x the fp32 tensor throughput at a 10-bit mantissa); false leaves torch's "
        "defaults. Applies to CUDA only, harmless on CPU. Not part of the run's identity.",
    )

    @model_validator(mode="after")
    def _check(self) -> TrainSpec:
        if self.schedule.warmup_steps > self.steps:
            raise ValueError(
                f"schedule.warmup_steps={self.schedule.warmup_steps} exceeds steps={self.steps}"
            )
        if self.prune.enabled and self.prune.last_step >= self.steps:
            raise ValueError(
                f"prune.{'end_step' if self.prune.end_step is not None else 'start_step'}="
                f"{self.prune.last_step} must be below steps={self.steps}: the net needs steps "
                "after the last pruning to recover; lower it or raise steps"
            )
        return self


class CheckpointSpec(Section):
    """Where and how often the engine saves; a restarted job resumes from the newest one."""

    dir: str | None = Field(
        None, description="Checkpoint directory or URL; default checkpoints/<job name>/"
        "<fingerprint>, so a job changed in what it trains (seed, n, lr, …) gets a run of its "
        "own. A named directory holding another run's checkpoints is refused."
    )
    every: int = Field(100, ge=1, description="Save every k steps (and at the end).")
    keep: int = Field(3, ge=1, description="Checkpoints kept (the oldest saves deleted first).")
    resume: bool = Field(
        True, description="Resume from the newest checkpoint in dir (saved by a job with the "
        "same fingerprint); false trains afresh, in a new MLflow run.")
    async_save: bool = Field(
        True, description="Write checkpoint files in a background thread: the loop is blocked "
        "only while the state is copied to CPU memory (which holds one extra copy of this "
        "rank's model and optimizer state while a save is in flight); false writes them in "
        "the loop.")


class ResourcesSpec(Section):
    """Processes and devices for distributed runs (Ray Train / TorchX)."""

    workers: int = Field(1, ge=1, le=4096, description="Training processes (data-parallel ranks).")
    cpus_per_worker: float = Field(1, gt=0, le=512, description="CPUs reserved per worker.")
    gpus_per_worker: float = Field(0, ge=0, le=16, description="GPUs per worker (0: CPU, gloo).")
    max_failures: int = Field(
        2, ge=-1, description="Worker-group restarts Ray Train (or torchrun, under TorchX) "
        "allows (-1: unlimited)."
    )
    stop_grace_s: int = Field(
        60, ge=5, le=3600,
        description="Seconds a stopped job (`phmscale stop`, Ctrl-C) has to checkpoint at its "
        "current step and close its MLflow run before it is killed. Ray: the job's "
        "RAY_JOB_STOP_WAIT_TIME_S. Under torchrun and Kubernetes their own grace periods "
        "apply (torchrun: 30 s; a pod: terminationGracePeriodSeconds).",
    )

    @model_validator(mode="after")
    def _check(self) -> ResourcesSpec:
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise ValueError(
                f"gpus_per_worker={self.gpus_per_worker}: above 1 it must be a whole number"
            )
        return self


class TrackingSpec(Section):
    """MLflow tracking (rank 0 logs)."""

    uri: str | None = Field(
        None,
        description="MLflow tracking URI; None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db.",
    )
    experiment: str = Field("phmscale", min_length=1, description="MLflow experiment name.")
    run_name: str | None = Field(None, description="MLflow run name; default the job name.")
    log_model: bool = Field(False, description="Log the trained model at the end.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra MLflow tags.")
