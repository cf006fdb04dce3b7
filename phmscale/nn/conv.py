"""PHMConv1d/2d/3d: convolutions whose kernel is Σᵢ Aᵢ ⊗ Sᵢ over the two channel axes
(Grassucci et al., PHNNs), with learned rules (`phm`) or a fixed algebra's (AlgebraNets)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn.modules.utils import _ntuple

from phmscale.nn.base import PHMBase
from phmscale.nn.functional import phm_conv

IntOrTuple = int | tuple[int, ...]


class _PHMConvNd(PHMBase):
    """W = Σᵢ kron(Aᵢ, Sᵢ) over the channel axes: S (n, out/n, in/(n·groups), *kernel) gives
    W (out, in/groups, *kernel), then the ordinary convolution. Parameters: n³ (learned A only)
    + out·in·prod(kernel)/(n·groups) + out (bias). Channels hold the n components as n
    contiguous blocks, as for PHMLinear."""

    dims: int = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTuple,
                 n: int | None = None, algebra: str = "phm", stride: IntOrTuple = 1,
                 padding: IntOrTuple | str = 0, dilation: IntOrTuple = 1, groups: int = 1,
                 bias: bool = True, *, init: str = "kaiming", cache_weight: bool = True,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        tup = _ntuple(self.dims)
        kernel = tuple(int(k) for k in tup(kernel_size))
        if any(k < 1 for k in kernel):
            raise ValueError(f"kernel_size={kernel_size!r} must be positive")
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ValueError(
                f"padding={padding!r} is unknown: use an int, a tuple, 'same' or 'valid'"
            )
        super().__init__(in_channels, out_channels, n, algebra, bias, kernel=kernel, groups=groups,
                         init=init, cache_weight=cache_weight,
                         names=("in_channels", "out_channels"), device=device, dtype=dtype)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel
        self.stride = tup(stride)
        self.padding = padding if isinstance(padding, str) else tup(padding)
        self.dilation = tup(dilation)

    def forward(self, x: Tensor) -> Tensor:
        return phm_conv(x, self.A, self.S, self.bias, self.stride, self.padding, self.dilation,
                        self.groups, weight=self.dense_weight())

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, {self._describe()}"
        )
        if self.padding != (0,) * self.dims:
            text += f", padding={self.padding}"
        if self.dilation != (1,) * self.dims:
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + f", bias={self.bias is not None}"


class PHMConv1d(_PHMConvNd):
    """PHM 1-d convolution: input (B, in, L) → (B, out, L')."""

    dims = 1


class PHMConv2d(_PHMConvNd):
    """PHM 2-d convolution: input (B, in, H, W) → (B, out, H', W')."""

    dims = 2


class PHMConv3d(_PHMConvNd):
    """PHM 3-d convolution: input (B, in, D, H, W) → (B, out, D', H', W')."""

    dims = 3
