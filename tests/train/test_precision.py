"""GPU-user training features as job fields (issue #22), on CPU where they run: bf16 through
DeepSpeed trains; fp16 and the fused optimizer are refused with a message naming the field;
the fused flag reaches torch.optim through DeepSpeed; TF32 sets torch's CUDA flags; none of
them changes the run's identity; attention stays on F.scaled_dot_product_attention."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from phmscale.errors import InvalidInputError
from phmscale.models import build_model
from phmscale.spec import load_job_dict
from phmscale.spec.problems import JobSpecError
from phmscale.train import engine as engine_mod
from phmscale.train.config import deepspeed_config
from tests.train._tiny import Recorder, global_batches, tiny_spec, train_one_rank


def test_bf16_trains_on_cpu_under_deepspeed(tmp_path):
    spec = tiny_spec(tmp_path, **{"train.precision": "bf16", "train.steps": 10,
                                  "train.eval_every": 10, "checkpoint.every": 10})
    rec = Recorder()
    result = train_one_rank(spec, global_batches(10, 8), rec.hooks, dry_run=True)
    assert result.status == "dry_run" and result.step == 10
    losses = [rec.losses[s] for s in sorted(rec.losses)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses  # it learns, in bf16


def test_bf16_engine_holds_bf16_weights(tmp_path):
    parts = engine_mod.build_engine(tiny_spec(tmp_path, **{"train.precision": "bf16"}),
                                    use_gpu=False)
    parts.memory.stop()
    assert parts.dtype == torch.bfloat16
    assert {p.dtype for p in parts.engine.module.parameters()} == {torch.bfloat16}


def test_fp16_on_cpu_is_refused_naming_the_field(tmp_path):
    with pytest.raises(JobSpecError, match="train.precision=fp16 needs a GPU"):
        tiny_spec(tmp_path, **{"train.precision": "fp16"})


def test_fused_optimizer_refused_on_cpu(tmp_path):
    spec = tiny_spec(tmp_path, **{"train.fused_optimizer": "true"})
    with pytest.raises(InvalidInputError, match="train.fused_optimizer") as err:
        engine_mod.build_engine(spec, use_gpu=False)
    assert err.value.exit_code == 2 and "=false" in str(err.value)


def test_fused_flag_reaches_torch_optim(tmp_path, monkeypatch):
    """torch's fused AdamW also has a CPU kernel, so the plumbing is checked here with the
    refusal lifted: DeepSpeed builds torch.optim.AdamW(fused=True)."""
    spec = tiny_spec(tmp_path, **{"train.fused_optimizer": "true"})
    assert deepspeed_config(spec, 1)["optimizer"]["params"]["fused"] is True
    assert "fused" not in deepspeed_config(tiny_spec(tmp_path), 1)["optimizer"]["params"]
    monkeypatch.setattr(engine_mod, "check_fused_optimizer", lambda: None)
    parts = engine_mod.build_engine(spec, use_gpu=False)
    parts.memory.stop()
    inner = parts.engine.optimizer
    inner = getattr(inner, "optimizer", inner)  # ZeRO wraps torch's optimizer
    assert isinstance(inner, torch.optim.AdamW) and inner.defaults["fused"] is True


def test_tf32_sets_the_cuda_flags():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        engine_mod.set_tf32(False)  # false leaves torch's defaults alone
        assert torch.backends.cuda.matmul.allow_tf32 is False
        engine_mod.set_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_no_field_changes_the_identity(tmp_path):
    plain = tiny_spec(tmp_path)
    both = tiny_spec(tmp_path, **{"train.fused_optimizer": "true", "train.tf32": "true"})
    assert both.fingerprint() == plain.fingerprint()
    assert both.identity() == plain.identity()


def test_attention_runs_through_sdpa(monkeypatch):
    spec = load_job_dict({"name": "lm", "model": {"task": "causal_lm", "dim": 32, "depth": 2,
                                                  "heads": 2, "seq_len": 16},
                          "data": {"train": "builtin:pystdlib"}}, []).model
    calls = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003
        calls.append(kwargs.get("is_causal"))
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    build_model(spec)(torch.zeros(2, 16, dtype=torch.long))
    assert calls == [True, True]  # one fused call per block, SDPA's own causal mask
