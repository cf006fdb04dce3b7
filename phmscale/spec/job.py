"""`JobSpec`: the whole job, and the checks that span sections.

Derived values (checkpoint dir, global batch size) are computed here and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field, PrivateAttr, model_validator

from phmscale.spec.identity import fingerprint, identity
from phmscale.spec.model_spec import ModelSpec, TransformerSpec
from phmscale.spec.secrets import SecretRefs
from phmscale.spec.sections import (
    CheckpointSpec,
    DataSpec,
    ResourcesSpec,
    Section,
    TrackingSpec,
    TrainSpec,
)


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


class JobSpec(Section):
    """A phmscale training job: what to train, on what data, how, where, and where to log."""

    name: str = Field(
        ...,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Job name: letters, digits, '.', '_' and '-'. Names the checkpoint "
        "directory and the MLflow run.",
    )
    model: ModelSpec = Field(default_factory=TransformerSpec, description="The network.")
    data: DataSpec = Field(..., description="The data.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="The optimization.")
    checkpoint: CheckpointSpec = Field(
        default_factory=CheckpointSpec, description="Checkpointing and resume."
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Workers and devices."
    )
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="MLflow tracking.")
    public_env: list[str] = Field(
        default_factory=list,
        description="Environment variables whose values may be shown and logged (paths such "
        "as DATA_ROOT). Every other ${VAR} in the job is a secret: shown as ***, kept out of "
        "MLflow, checkpoints and job metadata, and passed to cluster workers in their "
        "environment, never inside the job.",
    )

    # What `load_job` learnt about ${VAR} references (see phmscale.spec.secrets); survives
    # pickling (Ray ships the spec to its workers that way).
    _secrets: SecretRefs = PrivateAttr(default_factory=SecretRefs)

    def attach_secrets(self, refs: SecretRefs) -> JobSpec:
        self._secrets = refs
        return self

    # -- views without secrets -------------------------------------------------------------
    def public_dump(self) -> dict[str, Any]:
        """The job as it may be printed, logged or stored: secrets as ***, no URI userinfo."""
        return self._secrets.masked(self.model_dump(mode="json"))

    def portable_dump(self) -> dict[str, Any]:
        """The job as it may be shipped to a cluster: secrets as `${VAR}` references, read
        again where it runs (`secret_env` holds their values for the workers' environment)."""
        return self._secrets.templated(self.model_dump(mode="json"))

    @property
    def secret_env(self) -> dict[str, str]:
        return dict(self._secrets.env)

    def mask(self, text: str) -> str:
        """Free text with this job's secret values and URI userinfo masked."""
        return self._secrets.mask_text(text)

    def mask_tree(self, tree: Any) -> Any:
        """`mask` over every string of a JSON-like tree (a DeepSpeed config)."""
        return self._secrets.mask_tree(tree)

    # -- derived values -------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> str:
        """checkpoint.dir, else `checkpoints/<name>/<fingerprint>`: a job changed in what it
        trains (seed, n, lr, …) gets a folder, and so a run, of its own."""
        return self.checkpoint.dir or f"checkpoints/{self.name}/{self.fingerprint()}"

    def identity(self, shown: bool = False) -> dict[str, Any]:
        """The fields that decide what is trained (see `phmscale.spec.identity`); `shown`:
        with secrets as ***, for run.json and messages."""
        tree = self.public_dump() if shown else self.model_dump(mode="json")
        return identity(tree, self.data.train, self.data.tokenizer)

    def fingerprint(self) -> str:
        return fingerprint(self.identity())

    def global_batch_size(self, world_size: int | None = None) -> int:
        """train_batch_size as DeepSpeed defines it: micro batch × grad accum × data-parallel."""
        world = self.resources.workers if world_size is None else world_size
        return self.data.batch_size * self.train.grad_accum * world

    def spec_hash(self) -> str:
        """A short stable hash of the resolved spec (names jobs on the cluster dashboard)."""
        blob = json.dumps(self.portable_dump(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    # -- cross-section checks -------------------------------------------------------------
    @model_validator(mode="after")
    def _check(self) -> JobSpec:
        if self.checkpoint.every > self.train.steps:
            raise ValueError(
                f"checkpoint.every={self.checkpoint.every} exceeds train.steps="
                f"{self.train.steps}: no checkpoint would be written before the end; "
                f"set checkpoint.every <= {self.train.steps}"
            )
        on_cpu = self.resources.gpus_per_worker == 0
        if self.train.precision == "fp16" and on_cpu:
            raise ValueError(
                "train.precision=fp16 needs a GPU (resources.gpus_per_worker > 0); "
                "on CPU use fp32 or bf16"
            )
        if self.model.task == "causal_lm" and self.model.vocab_size > 256 and (
            self.data.train.startswith("builtin:pystdlib")
        ):
            raise ValueError("builtin:pystdlib is a byte corpus: model.vocab_size must be <= 256")
        self._check_raw_deepspeed()
        return self

    def _check_raw_deepspeed(self) -> None:
        """Raw `train.deepspeed` keys may add settings, never contradict the spec's own."""
        raw = self.train.deepspeed
        t = self.train
        expected: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": self.data.batch_size,
            "gradient_accumulation_steps": t.grad_accum,
            "train_batch_size": self.global_batch_size(),
            "zero_optimization.stage": t.zero_stage,
            "fp16.enabled": t.precision == "fp16",
            "bf16.enabled": t.precision == "bf16",
        }
        where = {
            "train_micro_batch_size_per_gpu": "data.batch_size",
            "gradient_accumulation_steps": "train.grad_accum",
            "train_batch_size": "data.batch_size × train.grad_accum × resources.workers",
            "zero_optimization.stage": "train.zero_stage",
            "fp16.enabled": "train.precision",
            "bf16.enabled": "train.precision",
        }
        for key, want in expected.items():
            got = _lookup(raw, key)
            if got is not None and got != want:
                raise ValueError(
                    f"train.deepspeed.{key}={got!r} contradicts {where[key]} (which gives "
                    f"{want!r}): set it through {where[key]} and drop the raw key"
                )
        clip = raw.get("gradient_clipping")
        if clip is not None:
            if isinstance(clip, bool) or not isinstance(clip, (int, float)):
                raise ValueError(
                    f"train.deepspeed.gradient_clipping={clip!r} must be a number; "
                    "prefer train.grad_clip"
                )
            if float(clip) != t.grad_clip:
                raise ValueError(
                    f"train.deepspeed.gradient_clipping={clip!r} contradicts train.grad_clip="
                    f"{t.grad_clip}: set train.grad_clip and drop the raw key"
                )

