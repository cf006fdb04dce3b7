"""The CUDA paths against the CPU reference: PHMLinear forward and backward, bf16 autocast,
and the loop's step split on a GPU."""

from __future__ import annotations

import pytest
import torch

from phmscale.nn import PHMLinear

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize(("n", "rows"), [(4, 256), (4, 1), (8, 3)])  # training and decode
def test_phm_linear_cuda_matches_cpu(n, rows):
    torch.manual_seed(0)
    layer = PHMLinear(256, 512, n=n)
    x = torch.randn(rows, 256, requires_grad=True)
    ref = layer(x)
    ref.square().sum().backward()
    ref_grads = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]

    cuda_layer = PHMLinear(256, 512, n=n).cuda()
    cuda_layer.load_state_dict(layer.state_dict())
    xc = x.detach().cuda().requires_grad_()
    out = cuda_layer(xc)
    out.square().sum().backward()
    # TF32 may be on in a user's session: tolerances of fp32 with 10-bit-mantissa products
    torch.testing.assert_close(out.cpu(), ref, rtol=2e-3, atol=2e-3)
    grads = [xc.grad] + [p.grad for p in cuda_layer.parameters()]
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got.cpu(), want, rtol=5e-3, atol=5e-3)


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    layer = PHMLinear(512, 512, n=4).cuda()
    x = torch.randn(64, 512, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = layer(x)
    assert low.dtype == torch.bfloat16
    ref = layer(x)
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 2e-2, rel  # bf16's 8-bit mantissa: ~0.4% per product, averaged over 512


def test_loop_splits_a_cuda_step(tmp_path):
    from phmscale.train.loop import train
    from tests.train._tiny import Recorder, global_batches, rank_source, tiny_spec

    spec = tiny_spec(tmp_path, **{"train.precision": "bf16", "train.steps": 8,
                                  "train.log_every": 4, "checkpoint.every": 4})
    rec, seen = Recorder(), {}
    on_metrics = rec.hooks.on_metrics
    rec.hooks.on_metrics = lambda s, m: (seen.__setitem__(s, m), on_metrics(s, m))
    batches = global_batches(8, 8)
    result = train(spec, hooks=rec.hooks, train_source=rank_source(batches, 0, 1),
                   val_source=None, use_gpu=True)
    assert result.status == "completed" and rec.checkpoints == [4, 8]
    m = seen[8]
    inside = sum(m[f"time_{b}_s"] for b in ("data_wait", "forward_backward", "comm", "optimizer"))
    assert 0.8 <= inside / m["step_time_s"] <= 1.0 + 1e-6, m
    assert "mfu" in m or result.peak.flops is None
