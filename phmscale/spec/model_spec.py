"""The job's `model` section: what every model kind shares (`ModelSpecBase`), the
PHM-Transformer's and the ResNet's own fields, and the union tagged by `kind` a job's `model`
is parsed as.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, TypeAdapter, model_validator

# One table for spec and nn (see phmscale.algebra_dims); re-exported for `phmscale.spec` users.
from phmscale.algebra_dims import ALGEBRA_DIMS
from phmscale.spec.sections import Section

Algebra = Literal[
    "phm", "real", "complex", "quaternion", "octonion", "sedenion", "m2r", "m2c", "m3r", "m4r"
]
ModelKind = Literal["phm_transformer", "resnet"]


class ModelSpecBase(Section):
    """What every model kind shares: the algebra, the task and the input. A job's `model` is
    one of its subclasses, chosen by `kind` (see `ModelSpec`)."""

    kind: ModelKind = Field(
        "phm_transformer",
        description="Architecture family: phm_transformer (the default) or resnet. A field "
        "marked with one kind belongs to it alone: in a job of the other kind it is an error.",
    )
    algebra: Algebra = Field(
        "real",
        description="Weight algebra: phm (learned rules, needs n) or a fixed algebra "
        "(real, complex, quaternion, octonion, sedenion, m2r, m2c, m3r, m4r). The default, "
        "real, is the dense baseline.",
    )
    n: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Algebra dimension n (1/n parameters). Required for phm; for a fixed "
        "algebra leave it out or give the algebra's own dimension.",
    )
    task: Literal["classify", "causal_lm"] = Field(
        "classify",
        description="classify (images/sequences → class) or causal_lm (bytes → next byte; "
        "phm_transformer only).",
    )
    num_classes: int = Field(10, ge=2, description="Classes for task=classify.")
    input_shape: list[int] = Field(
        default_factory=lambda: [1, 8, 8],
        min_length=2,
        max_length=3,
        description="Input shape for task=classify, channels first: [C, H, W] for images, "
        "[C, L] for sequences (MNIST-1D is [1, 40]; phm_transformer only).",
    )
    real_stem: bool = Field(
        True, description="Keep the stem real-valued: the ResNet's first convolution or the "
        "transformer's patch/token embedding (AlgebraNets' choice)."
    )
    real_head: bool = Field(
        True, description="Keep the classifier real-valued (AlgebraNets' choice); a "
        "hypercomplex head pads its logits to a multiple of n and drops the extra ones."
    )

    @property
    def algebra_dim(self) -> int:
        """The resolved n: the spec's n for phm, the algebra's dimension otherwise."""
        if self.algebra == "phm":
            assert self.n is not None  # enforced by the validator
            return self.n
        return ALGEBRA_DIMS[self.algebra]

    @model_validator(mode="after")
    def _check_algebra(self) -> ModelSpecBase:
        if self.algebra == "phm":
            if self.n is None:
                raise ValueError("algebra 'phm' learns its rules and needs `n` (e.g. n: 4)")
        elif self.n is not None and self.n != ALGEBRA_DIMS[self.algebra]:
            raise ValueError(
                f"n={self.n} disagrees with algebra '{self.algebra}', whose dimension is "
                f"{ALGEBRA_DIMS[self.algebra]}: remove `n` or set n: {ALGEBRA_DIMS[self.algebra]}"
            )
        return self


class TransformerSpec(ModelSpecBase):
    """kind: phm_transformer — a PHM-Transformer classifier or byte-level language model."""

    kind: Literal["phm_transformer"] = Field(
        "phm_transformer", description=ModelSpecBase.model_fields["kind"].description
    )
    dim: int = Field(128, ge=1, description="Transformer width (model dimension).")
    depth: int = Field(4, ge=1, le=256, description="Number of transformer blocks.")
    heads: int = Field(4, ge=1, description="Attention heads; dim must divide by heads.")
    head_dim: int | None = Field(
        None, ge=1, description="Per-head width; if given, heads·head_dim must equal dim."
    )
    mlp_ratio: float = Field(4.0, ge=0, description="MLP hidden width / dim; 0 removes the MLP.")
    attention: Literal["standard", "collapsed_qk", "collapsed_qk_vo", "symmetric"] = Field(
        "standard",
        description="Attention variant (Bermeitinger et al. 2024): standard, collapsed_qk "
        "(one matrix for WqWkᵀ), collapsed_qk_vo (also WvWo), symmetric (symmetric similarity).",
    )
    value_output: Literal["matrix", "none"] = Field(
        "matrix",
        description="collapsed_qk_vo only: one per-head matrix in place of WvWo (matrix), or "
        "none (the attended tokens are averaged over heads, no value/output parameters).",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout probability.")
    patch_size: int = Field(
        2, ge=1, description="Patch side (images) or length (sequences) for the transformer."
    )
    pool: Literal["cls", "mean"] = Field(
        "cls", description="Classification pooling: class token or mean over tokens."
    )
    seq_len: int = Field(128, ge=2, description="Context length for task=causal_lm.")
    vocab_size: int = Field(256, ge=2, description="Vocabulary for task=causal_lm (256 = bytes).")

    @model_validator(mode="after")
    def _check(self) -> TransformerSpec:
        n = self.algebra_dim
        if self.dim % self.heads:
            raise ValueError(
                f"dim={self.dim} is not divisible by heads={self.heads}: "
                f"choose a dim that is a multiple of {self.heads}"
            )
        if self.head_dim is not None and self.head_dim * self.heads != self.dim:
            raise ValueError(
                f"heads·head_dim = {self.heads}·{self.head_dim} = "
                f"{self.heads * self.head_dim} must equal dim={self.dim}"
            )
        if self.dim % n:
            raise ValueError(
                f"dim={self.dim} is not divisible by the algebra dimension n={n}: "
                f"choose a dim that is a multiple of {n}"
            )
        hidden = self.mlp_ratio * self.dim
        if self.mlp_ratio and (hidden != int(hidden) or int(hidden) % n):
            raise ValueError(
                f"the MLP width mlp_ratio·dim = {hidden:g} must be an integer divisible "
                f"by n={n}: adjust mlp_ratio"
            )
        if self.task == "classify":
            for side in self.input_shape[1:]:
                if side % self.patch_size:
                    raise ValueError(
                        f"input_shape {self.input_shape} is not divisible into patches of "
                        f"patch_size={self.patch_size}: choose a patch_size dividing {side}"
                    )
        return self


def _kind_required(schema: dict[str, Any]) -> None:
    # In the JSON schema a mapping without `kind` must match the transformer alone (the
    # loader's default), or editors would report a `oneOf` matched twice.
    schema["required"] = [*schema.get("required", []), "kind"]


class ResNetSpec(ModelSpecBase):
    """kind: resnet — an AlgebraNets / PHC ResNet image classifier."""

    model_config = ConfigDict(json_schema_extra=_kind_required)

    kind: Literal["resnet"] = Field(
        "resnet", description=ModelSpecBase.model_fields["kind"].description
    )
    # Narrowed from the base: a ResNet classifies images.
    task: Literal["classify"] = Field(
        "classify", description=ModelSpecBase.model_fields["task"].description
    )
    input_shape: list[int] = Field(
        default_factory=lambda: [1, 8, 8],
        min_length=3,
        max_length=3,
        description=ModelSpecBase.model_fields["input_shape"].description,
    )
    arch: Literal["resnet18", "resnet34", "resnet50", "resnet20", "resnet56"] = Field(
        "resnet20", description="ResNet depth (20/56 are CIFAR-style)."
    )
    stem: Literal["imagenet", "small"] = Field(
        "small", description="ResNet stem: imagenet (7×7/2 + maxpool) or small (3×3/1)."
    )
    width: int | None = Field(
        None,
        ge=1,
        description="ResNet base width (channels of the first stage); default 64 for "
        "resnet18/34/50 and 16 for resnet20/56. Must divide by n.",
    )
    width_match: Literal["none", "params", "flops"] = Field(
        "none",
        description="Scale ResNet widths so the net matches its real baseline in parameters "
        "or FLOPs (none keeps the given width). flops uses AlgebraNets' count (a product in "
        "an algebra of dimension n costs its multiplications ÷ n²).",
    )

    @property
    def base_width(self) -> int:
        """ResNet base width with its per-architecture default."""
        if self.width is not None:
            return self.width
        return 16 if self.arch in ("resnet20", "resnet56") else 64

    @model_validator(mode="after")
    def _check(self) -> ResNetSpec:
        n = self.algebra_dim
        if self.width_match == "none" and self.base_width % n:
            raise ValueError(
                f"width={self.base_width} is not divisible by the algebra dimension n={n}: "
                f"set model.width to a multiple of {n} (or width_match: params)"
            )
        return self


def _model_kind(data: Any) -> str:
    """The tag of a model mapping: its `kind`, else phm_transformer, the documented default
    (a job may leave `kind` out)."""
    kind = data.get("kind", "phm_transformer") if isinstance(data, dict) else getattr(
        data, "kind", "phm_transformer")
    return kind if isinstance(kind, str) else repr(kind)  # a tag must be hashable


# A job's `model`: exactly one kind's fields, so a ResNet field in a transformer job (or the
# reverse) is an unknown key, not a value silently ignored.
ModelSpec = Annotated[
    Annotated[TransformerSpec, Tag("phm_transformer")] | Annotated[ResNetSpec, Tag("resnet")],
    Discriminator(_model_kind),
]

_model_adapter: TypeAdapter[ModelSpec] = TypeAdapter(ModelSpec)


def parse_model_spec(data: Any) -> TransformerSpec | ResNetSpec:
    """A `model:` mapping (or a dumped one) as the spec of its kind."""
    return _model_adapter.validate_python(data)
