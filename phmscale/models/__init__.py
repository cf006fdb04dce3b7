"""Hypercomplex models: PHM-Transformer (with the reduced attention variants), AlgebraNet and
PHC ResNets, the registry that builds them from a `ModelSpec`, their dense twins, FLOP counts
and the summary `phmscale model summary` prints. Imports torch, phmscale.nn and phmscale.spec
only."""

from phmscale.models.attention import VARIANTS, Attention, KVCache, make_attention
from phmscale.models.flops import (
    TRAIN_FLOPS_MULTIPLIER,
    FlopTerm,
    MeasuredFlops,
    algebra_forward_flops,
    example_input,
    flop_terms,
    forward_flops,
    measure_forward_flops,
    train_flops_per_sample,
)
from phmscale.models.generate import decode_bytes, encode_bytes, generate, next_token
from phmscale.models.layers import ALGEBRA_MULTS, Algebra, is_algebra_layer
from phmscale.models.pretrained import fold_dense, load_pretrained
from phmscale.models.registry import (
    build_model,
    build_on_meta,
    dense_twin,
    resolve_spec,
    twin_spec,
)
from phmscale.models.resnet import AlgebraResNet
from phmscale.models.resnet_plan import layer_shapes, resnet_params
from phmscale.models.summary import MemoryEstimate, ModelSummary, memory_per_worker, summarize
from phmscale.models.transformer import PHMTransformer, bits_per_byte

__all__ = [
    "ALGEBRA_MULTS",
    "Algebra",
    "AlgebraResNet",
    "Attention",
    "FlopTerm",
    "KVCache",
    "MeasuredFlops",
    "MemoryEstimate",
    "ModelSummary",
    "PHMTransformer",
    "TRAIN_FLOPS_MULTIPLIER",
    "VARIANTS",
    "algebra_forward_flops",
    "bits_per_byte",
    "build_model",
    "build_on_meta",
    "decode_bytes",
    "dense_twin",
    "encode_bytes",
    "example_input",
    "flop_terms",
    "fold_dense",
    "forward_flops",
    "generate",
    "is_algebra_layer",
    "layer_shapes",
    "load_pretrained",
    "make_attention",
    "measure_forward_flops",
    "memory_per_worker",
    "next_token",
    "resnet_params",
    "resolve_spec",
    "summarize",
    "train_flops_per_sample",
    "twin_spec",
]
