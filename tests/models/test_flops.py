"""Analytic FLOPs agree with FlopCounterMode within 2% on every shipped job and more."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from phmscale.models import (
    ALGEBRA_MULTS,
    algebra_forward_flops,
    forward_flops,
    measure_forward_flops,
    train_flops_per_sample,
)
from phmscale.nn import PHMLinear
from phmscale.spec import ALGEBRA_DIMS, ModelSpec, load_job
from tests.models.helpers import lm, resnet, vit

JOBS = sorted((Path(__file__).resolve().parents[2] / "jobs").glob("*.yaml"))


def _agree(spec: ModelSpec) -> None:
    analytic = forward_flops(spec)
    measured = measure_forward_flops(spec).per_sample
    assert analytic > 0
    assert abs(analytic - measured) <= 0.02 * measured, (analytic, measured)


def test_jobs_exist() -> None:
    assert len(JOBS) >= 15


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.stem)
def test_job_flops_agree(job: Path) -> None:
    _agree(load_job(job).model)


@pytest.mark.parametrize(
    "spec",
    [
        lm(attention="collapsed_qk", mlp_ratio=0),
        lm(attention="collapsed_qk_vo"),
        lm(attention="symmetric", algebra="m2r", n=None),
        vit(attention="collapsed_qk_vo", pool="mean", real_stem=False, real_head=False, n=4),
        vit(input_shape=[1, 40], patch_size=4, attention="symmetric"),
        resnet(arch="resnet50", stem="imagenet", width=64, input_shape=[3, 224, 224],
               num_classes=1000, algebra="quaternion"),
        resnet(arch="resnet18", stem="imagenet", width=8, input_shape=[3, 32, 32],
               real_stem=False, real_head=False),
        resnet(arch="resnet56", algebra="m3r", width=9, width_match="flops"),
    ],
    ids=["lm-cqk-nomlp", "lm-cqkvo", "lm-sym-m2r", "vit-cqkvo-hc-stem", "vit-mnist1d-sym",
         "resnet50-224", "resnet18-hc-stem-head", "resnet56-m3r-flops-matched"],
)
def test_more_configs_agree(spec: ModelSpec) -> None:
    _agree(spec)


def test_resnet50_flops_match_the_usual_figure() -> None:
    spec = resnet(arch="resnet50", stem="imagenet", width=64, input_shape=[3, 224, 224],
                  num_classes=1000, algebra="real")
    # ResNet-50 is quoted at 4.1 GMACs (8.2 GFLOPs) per 224×224 image.
    assert 8.0e9 < forward_flops(spec) < 8.4e9


def test_meta_and_cpu_measurements_agree() -> None:
    spec = vit(n=4, dim=32)
    cpu, meta = measure_forward_flops(spec, "cpu"), measure_forward_flops(spec, "meta")
    # The ops differ (CPU runs a fused SDPA kernel, meta decomposes it into bmm), not the count.
    assert (cpu.per_sample, cpu.per_forward) == (meta.per_sample, meta.per_forward)


def test_training_flops_are_three_forwards() -> None:
    spec = vit()
    assert train_flops_per_sample(spec) == 3 * forward_flops(spec)


@pytest.mark.parametrize("algebra", [a for a in ALGEBRA_DIMS if a != "real"])
def test_algebra_mult_table_matches_the_rules(algebra: str) -> None:
    n = ALGEBRA_DIMS[algebra]
    layer = PHMLinear(n, n, algebra=algebra)
    assert int(torch.count_nonzero(layer.A)) == ALGEBRA_MULTS[algebra]


def test_algebranets_flop_count() -> None:
    m4r = resnet(algebra="m4r", width=16, real_stem=False, real_head=False,
                 input_shape=[16, 8, 8])
    assert algebra_forward_flops(m4r) * 4 == forward_flops(m4r)  # M₄(ℝ): 64/256
    quaternion = resnet(algebra="quaternion", width=16)
    assert algebra_forward_flops(quaternion) == forward_flops(quaternion)


def test_width_match_flops() -> None:
    from phmscale.models import resolve_spec
    assert resolve_spec(resnet(algebra="quaternion", width=16, width_match="flops")).width == 16
    m4r = resolve_spec(resnet(algebra="m4r", width=16, width_match="flops"))
    assert m4r.width == 32  # 4× cheaper products → ≈ 2× the width for equal FLOPs


def test_counting_registers_no_process_wide_hooks():
    """The MLflow hook counts FLOPs in a thread beside training: FlopCounterMode's module
    tracker would hook every module's forward in the process while it counts."""
    import torch
    from torch import nn
    from torch.nn.modules import module as torch_module

    from phmscale.models.flops import _count

    seen = []

    class Probe(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            seen.append(len(torch_module._global_forward_pre_hooks)
                        + len(torch_module._global_forward_hooks))
            return x @ x

    assert sum(_count(Probe(), torch.ones(4, 4)).values()) == 2 * 4**3
    assert seen == [0]
