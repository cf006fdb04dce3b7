"""AlgebraNet ResNets (Hoffmann et al. 2020) and PHC-ResNets (Grassucci et al., PHNNs).

Every convolution and the classifier is an algebra layer: a fixed algebra (complex, quaternion,
m2r, …) gives an AlgebraNet ResNet, `phm` (learned rules) a PHC-ResNet, `real` the baseline.
Channel counts are multiples of n, an activation's n components are n contiguous channel
blocks, and ReLU acts per component (split activation, as in both papers).

Choices, stated once:
- Normalization: plain `BatchNorm2d` over all channels, i.e. per real component. AlgebraNets
  found per-component BN adequate; whitening an algebra element (Trabelsi et al.) costs n×n per
  channel group and is left out.
- Stems: `imagenet` is conv 7×7/2 + BN + ReLU + maxpool 3×3/2 (224 → 56); `small` is conv 3×3/1
  + BN + ReLU (CIFAR; 8×8 digits stay 8×8). `real_stem`/`real_head` keep them real.
- Input channels n does not divide (RGB with n = 4, digits' 1 channel): with a real stem this is
  moot; a hypercomplex stem zero-pads the input channels up to a multiple of n, as PHNN does
  (3 → 4 for n = 4, 1 → 16 for M₄(ℝ)); the padded channels add stem FLOPs, not information.
- Shortcuts: a 1×1 algebra conv + BN where the shape changes (option B), also for the
  CIFAR-style resnet20/56 (He et al. used zero padding there; B trains as well, +~0.3% params).
- The last BN of each residual branch starts at zero (Goyal et al. 2017): each block begins as
  the identity, which lets 20–56-layer nets train at the jobs' short schedules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from phmscale.models.layers import REAL, Algebra, pad_features
from phmscale.spec import ModelSpec

BlockKind = Literal["basic", "bottleneck"]

# arch → (block, blocks per stage). Stage s has width base·2^s and stride 2 from stage 1 on.
ARCHS: dict[str, tuple[BlockKind, tuple[int, ...]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet20": ("basic", (3, 3, 3)),  # 6·3 + 2 layers, CIFAR-style (He et al. 2016, §4.2)
    "resnet56": ("basic", (9, 9, 9)),
}
EXPANSION: dict[BlockKind, int] = {"basic": 1, "bottleneck": 4}


class BasicBlock(nn.Module):
    """3×3 → 3×3 with an identity or 1×1 projection shortcut."""

    def __init__(self, cin: int, width: int, stride: int, alg: Algebra) -> None:
        super().__init__()
        cout = width
        self.conv1 = alg.conv2d(cin, width, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = alg.conv2d(width, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)
        self.shortcut = _shortcut(cin, cout, stride, alg)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) → (B, C', H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride here, ResNet v1.5) → 1×1 expanding to 4·width."""

    def __init__(self, cin: int, width: int, stride: int, alg: Algebra) -> None:
        super().__init__()
        cout = width * EXPANSION["bottleneck"]
        self.conv1 = alg.conv2d(cin, width, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = alg.conv2d(width, width, 3, stride=stride, padding=1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = alg.conv2d(width, cout, 1)
        self.bn3 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn3.weight)
        self.shortcut = _shortcut(cin, cout, stride, alg)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


@contextmanager
def _keep_bn_stats(module: nn.Module) -> Iterator[None]:
    """Around a checkpoint's recomputation: a BatchNorm in training mode would update its
    running statistics a second time for the same batch; restore them as they were."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [[b.clone() for b in m.buffers()] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, bufs in zip(norms, saved, strict=True):
                for b, old in zip(m.buffers(), bufs, strict=True):
                    b.copy_(old)


def _shortcut(cin: int, cout: int, stride: int, alg: Algebra) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(alg.conv2d(cin, cout, 1, stride=stride), nn.BatchNorm2d(cout))


class AlgebraResNet(nn.Module):
    """ResNet-18/34/50 or CIFAR-style ResNet-20/56 with algebra layers throughout.

    `spec.width` must already be resolved (registry.resolve_spec applies width_match).
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        alg = Algebra.of(spec)
        kind, counts = ARCHS[spec.arch]
        base = spec.base_width
        stem_alg = REAL if spec.real_stem else alg
        self.in_channels = stem_alg.round_up(spec.input_shape[0])  # zero-padded input channels
        if spec.stem == "imagenet":
            self.stem = nn.Sequential(
                stem_alg.conv2d(self.in_channels, base, 7, stride=2, padding=3),
                nn.BatchNorm2d(base), nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(
                stem_alg.conv2d(self.in_channels, base, 3, stride=1, padding=1),
                nn.BatchNorm2d(base), nn.ReLU(inplace=True),
            )
        block = BasicBlock if kind == "basic" else Bottleneck
        stages, cin = [], base
        for s, count in enumerate(counts):
            width = base * 2**s
            blocks = []
            for i in range(count):
                blocks.append(block(cin, width, 2 if (s > 0 and i == 0) else 1, alg))
                cin = width * EXPANSION[kind]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        head_alg = REAL if spec.real_head else alg
        self.num_classes = spec.num_classes
        # A hypercomplex head emits a multiple of n logits; the extra ones are dropped.
        self.head = head_alg.linear(cin, head_alg.round_up(spec.num_classes))
        self.activation_checkpointing = False

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each stage's activations in backward instead of keeping them (training
        calls with autograd on only): less activation memory for about one more forward.
        The function, its gradients and the BatchNorm running statistics are unchanged (the
        recomputation's statistics update is undone)."""
        self.activation_checkpointing = enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) → (B, classes)
        x = pad_features(x, self.in_channels, dim=1)  # (B, C', H, W), C' a multiple of n
        x = self.stem(x)
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            for stage in self.stages:
                if torch.compiler.is_compiling():
                    # Traced, the recomputation is part of the backward graph and buffer
                    # updates happen once, in the forward graph (and dynamo takes no context_fn).
                    x = checkpoint(stage, x, use_reentrant=False)
                else:
                    x = checkpoint(stage, x, use_reentrant=False,
                                   context_fn=lambda stage=stage: (nullcontext(),
                                                                   _keep_bn_stats(stage)))
        else:
            x = self.stages(x)  # (B, C_last, H/s, W/s)
        x = torch.flatten(self.pool(x), 1)  # (B, C_last)
        return self.head(x)[:, : self.num_classes]
