"""Activation checkpointing (`set_activation_checkpointing`, the engine's train.activation_
checkpointing): the same outputs, gradients and BatchNorm statistics, and a measured drop in
the peak of live tensor memory over a training step (issue #22: ≥ 20% at width 256, depth 6,
sequence 512)."""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from phmscale.models import build_model
from tests.models.helpers import batch, lm, resnet, vit


def _step(model: torch.nn.Module, x: torch.Tensor, checkpointing: bool, seed: int = 0):
    """Logits and every parameter's gradient of one training step (dropout under `seed`)."""
    model.set_activation_checkpointing(checkpointing)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = model(x)
    out.float().logsumexp(-1).mean().backward()
    return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


def _assert_same_step(model: torch.nn.Module, x: torch.Tensor) -> None:
    out0, grads0 = _step(model, x, False)
    out1, grads1 = _step(model, x, True)
    torch.testing.assert_close(out1, out0)
    assert grads1.keys() == grads0.keys()
    for k in grads0:
        torch.testing.assert_close(grads1[k], grads0[k], msg=k)


def test_transformer_same_outputs_and_gradients():
    for spec in (vit(dropout=0.1, depth=3), lm(depth=3)):  # dropout: its draws are replayed
        torch.manual_seed(0)
        model = build_model(spec).train()
        _assert_same_step(model, batch(spec, 3))


def test_resnet_same_outputs_gradients_and_batchnorm_statistics():
    spec = resnet()
    x = batch(spec, 4)
    stats = []
    for on in (False, True):
        torch.manual_seed(0)
        model = build_model(spec).train()
        _step(model, x, on)  # one step from the same init: the running statistics after it
        stats.append({k: b.clone() for k, b in model.named_buffers()})
        _assert_same_step(model, x)
    assert stats[0].keys() == stats[1].keys()
    for k in stats[0]:  # the recomputation does not update them a second time
        torch.testing.assert_close(stats[1][k], stats[0][k], msg=k)


def test_eval_and_no_grad_calls_unchanged():
    spec = lm()
    torch.manual_seed(0)
    model = build_model(spec)
    model.set_activation_checkpointing(True)
    x = batch(spec)
    with torch.no_grad():
        train_mode = model(x)
        model.eval()
        eval_mode = model(x)
    torch.testing.assert_close(train_mode, eval_mode)  # dropout 0: the same function


def peak_step_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Peak of the bytes allocated over one forward + backward (CPU allocator events from
    torch.profiler, counted from the step's start: parameters excluded, activations and
    gradients in)."""
    model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x).float().logsumexp(-1).mean().backward()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def test_checkpointing_lowers_the_peak_by_a_fifth():
    spec = lm(dim=256, depth=6, heads=4, seq_len=512, n=4, mlp_ratio=4)
    torch.manual_seed(0)
    model = build_model(spec).train()
    x = batch(spec, 1)
    plain = peak_step_bytes(model, x)
    model.set_activation_checkpointing(True)
    checkpointed = peak_step_bytes(model, x)
    ratio = checkpointed / plain
    print(f"peak over a step: {plain / 2**20:.1f} MiB plain, {checkpointed / 2**20:.1f} MiB "
          f"checkpointed ({ratio:.2f}×)")
    assert plain > 0 and ratio <= 0.8, (plain, checkpointed)


def test_resnet_checkpointing_under_torch_compile():
    """Traced (dynamo + AOTAutograd, as Inductor gets it), the stages' recomputation leaves
    the BatchNorm statistics to the forward graph: the same step as the eager, plain model."""
    spec = resnet()
    x = batch(spec, 4)
    results = []
    for on, backend in ((False, None), (True, "aot_eager")):
        torch.manual_seed(0)
        model = build_model(spec).train()
        if backend:
            model.compile(backend=backend)
        results.append((_step(model, x, on), dict(model.named_buffers())))
    ((out0, grads0), bufs0), ((out1, grads1), bufs1) = results
    torch.testing.assert_close(out1, out0)
    for k in grads0:
        torch.testing.assert_close(grads1[k], grads0[k], msg=k)
    for k in bufs0:
        torch.testing.assert_close(bufs1[k], bufs0[k], msg=k)
