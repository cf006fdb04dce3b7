"""What PHMLinear and PHMConv1d/2d/3d share: argument checks, the A/S/bias/mask tensors, the
materialized `weight`, its eval-time cache, and initialization.

State: `A` (n, n, n) is an nn.Parameter for learned rules (`phm`) and a *non-persistent* buffer
for a fixed algebra. Non-persistent because the rules are a constant of the algebra's name: the
state_dict holds only what training changed (S, bias, a pruning mask), a checkpoint can never
carry stale or foreign rules into a fixed-algebra layer (loading a `phm` checkpoint, which has an
`A` key, into a fixed-algebra layer fails loudly as an unexpected key), and parameter counts
equal the contract's out·in/n (+ out). The buffer still follows `.to()` like any buffer.

`mask` (pruning, see prune.py) is None until set; once set it is a persistent bool buffer of
S's element shape (p, q, *kernel), multiplied onto S along axis 0, and loading a state_dict that
holds a mask recreates it on a fresh layer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from phmscale.nn.algebras import algebra_rules, check_algebra, resolve_n
from phmscale.nn.cache import DerivedCache
from phmscale.nn.functional import pack_structured, phm_weight
from phmscale.nn.init import init_bias_, init_phm_, target_variance


def check_divisible(name: str, value: int, divisor: int, what: str) -> None:
    """ValueError naming the argument and the fix when value % divisor != 0."""
    if value <= 0:
        raise ValueError(f"{name}={value} must be a positive integer")
    if value % divisor:
        raise ValueError(
            f"{name}={value} is not divisible by {what}={divisor}: use a multiple of {divisor}"
        )


class PHMBase(nn.Module):
    """Shared state and behaviour of the PHM layers (not used directly).

    Subclasses pass their feature/channel counts and kernel; the weight is
    W = Σᵢ kron(Aᵢ, Sᵢ) over the first two axes, shape (out, in/groups, *kernel).
    """

    A: Tensor
    S: Tensor
    bias: Tensor | None
    mask: Tensor | None

    def __init__(self, in_size: int, out_size: int, n: int | None, algebra: str, bias: bool,
                 kernel: tuple[int, ...] = (), groups: int = 1, init: str = "kaiming",
                 cache_weight: bool = True,
                 names: tuple[str, str] = ("in_features", "out_features"),
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.algebra = check_algebra(algebra)
        self.n = resolve_n(self.algebra, n)
        in_name, out_name = names
        if groups < 1:
            raise ValueError(f"groups={groups} must be >= 1")
        check_divisible(out_name, out_size, self.n, "n")
        if groups == 1:
            check_divisible(in_name, in_size, self.n, "n")
        else:
            check_divisible(out_name, out_size, groups, "groups")
            check_divisible(in_name, in_size, self.n * groups, "n*groups")
        target_variance(1, 1, init)  # raises ValueError for an unknown init mode
        self.groups = groups
        self.init = init
        # Reuse the materialized W in eval mode under no_grad (see cache.py); off saves memory.
        self.cache_weight = cache_weight
        self._cache = DerivedCache()
        factory = {"device": device, "dtype": dtype}
        n = self.n
        p, q = out_size // n, in_size // (n * groups)
        self.S = nn.Parameter(torch.empty(n, p, q, *kernel, **factory))  # (n, out/n, in/(n·g), *k)
        if self.algebra == "phm":
            self.A = nn.Parameter(torch.empty(n, n, n, **factory))
        else:  # on S's device: honours `with torch.device(...)` as the factory calls do
            rules = algebra_rules(self.algebra, self.S.dtype, self.S.device)
            self.register_buffer("A", rules, persistent=False)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_size, **factory))
        else:
            self.register_parameter("bias", None)
        self.register_buffer("mask", None)
        self.reset_parameters()

    # -- fan-in/out of the equivalent dense layer ------------------------------------------------
    @property
    def fan_in(self) -> int:
        return self.n * math.prod(self.S.shape[2:])  # in/groups · prod(kernel)

    @property
    def fan_out(self) -> int:
        return self.n * self.S.shape[1] * math.prod(self.S.shape[3:])  # out · prod(kernel)

    @property
    def learned_rules(self) -> bool:
        return self.algebra == "phm"

    def reset_parameters(self, init: str | None = None) -> None:
        """Re-draw A (if learned), S and bias; W gets the dense variance (see init.py)."""
        mode = init or self.init
        init_phm_(self.A, self.S, self.fan_in, self.fan_out, mode, learned=self.learned_rules)
        if self.bias is not None:
            init_bias_(self.bias, self.fan_in)
        self.invalidate_cache()

    # -- weights ---------------------------------------------------------------------------------
    def effective_S(self) -> Tensor:
        """S with the pruning mask applied: (n, p, q, *kernel)."""
        return self.S if self.mask is None else self.S * self.mask

    @property
    def weight(self) -> Tensor:
        """Dense W = Σᵢ kron(Aᵢ, Sᵢ) (mask applied): (out, in/groups, *kernel). Built fresh on
        every access (differentiable when grad is on); forward uses the cache where allowed."""
        return phm_weight(self.A, self.effective_S())

    def _use_cache(self) -> bool:
        # Only eval + no_grad: training needs the graph through W, and a cached tensor must not
        # leak into autograd. Compilers trace the build instead (Python-side state would not be
        # guarded by the compiled graph).
        return (
            self.cache_weight
            and not self.training
            and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
        )

    def dense_weight(self) -> Tensor:
        """W for the forward pass: cached in eval under no_grad, else built fresh."""
        if self._use_cache():
            return self._cache.get("W", (self.A, self.S, self.mask), lambda: self.weight)
        return self.weight

    def packed_operands(self) -> tuple[Tensor, Tensor]:
        """(mix, S_cat) of functional.packed_structured_linear, cached like W."""
        def build() -> tuple[Tensor, Tensor]:
            return pack_structured(self.A, self.effective_S())

        return self._cache.get("packed", (self.A, self.S, self.mask), build)

    def invalidate_cache(self) -> None:
        """Drop cached tensors; needed only after writes through `.data` (see cache.py)."""
        self._cache.clear()

    # -- module plumbing -------------------------------------------------------------------------
    def train(self, mode: bool = True) -> PHMBase:
        self._cache.clear()  # the cache lives only within one eval phase
        return super().train(mode)

    def _apply(self, fn: Any, recurse: bool = True) -> PHMBase:
        self._cache.clear()  # .to()/.half(): the key would miss anyway; free the memory now
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # A pruned checkpoint carries `mask`; give a fresh (unpruned) layer a buffer to copy into,
        # shaped like the saved one: S may be a partitioned placeholder here (DeepSpeed ZeRO-3
        # loads module states before gathering parameters), its shape (0,).
        saved = state_dict.get(prefix + "mask")
        if self.mask is None and saved is not None:
            self.mask = torch.ones(saved.shape, dtype=torch.bool, device=self.S.device)
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._cache.clear()

    def _describe(self) -> str:
        parts = [f"n={self.n}", f"algebra={self.algebra!r}"]
        if self.mask is not None:
            parts.append("pruned")
        return ", ".join(parts)
