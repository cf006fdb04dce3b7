"""train.compile and train.activation_checkpointing through the engine on CPU: a compiled,
checkpointed run trains, resumes and exports plain state-dict keys (no `_orig_mod.`) that load
into an uncompiled model; neither field changes the run's identity; compile is refused with a
message naming it where it cannot run."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from phmscale.errors import InvalidInputError
from phmscale.models import build_model, load_pretrained
from phmscale.train import checkpoint as ckpt
from phmscale.train import engine as engine_mod
from phmscale.train.export import export
from tests.train._tiny import Recorder, global_batches, tiny_spec, train_one_rank

FAST = {"train.compile": "true", "train.activation_checkpointing": "true",
        "train.steps": 10, "train.eval_every": 10, "checkpoint.every": 5}


def _run(spec, batches, **kw):
    rec = Recorder()
    return rec, train_one_rank(spec, batches, rec.hooks, **kw)


def test_neither_field_changes_the_identity(tmp_path):
    plain = tiny_spec(tmp_path)
    both = tiny_spec(tmp_path, **{"train.compile": "true",
                                  "train.activation_checkpointing": "true"})
    assert both.train.compile and both.train.activation_checkpointing
    assert both.fingerprint() == plain.fingerprint()
    assert both.identity() == plain.identity()


def test_compiled_checkpointed_run_resumes_and_exports_plain_keys(tmp_path):
    batches = global_batches(10, 8)
    straight, _ = _run(tiny_spec(tmp_path / "eager", **{**FAST, "train.compile": "false",
                                                        "train.activation_checkpointing":
                                                        "false"}), batches)
    spec = tiny_spec(tmp_path / "compiled", **FAST)
    first, r1 = _run(spec, batches, max_steps=5)
    assert r1.step == 5 and ckpt.latest_checkpoint(spec.checkpoint_dir).step == 5
    second, r2 = _run(spec, batches)
    assert r2.start_step == 5 and r2.step == 10
    for step in range(1, 11):  # the same function as the eager run (kernels may round apart)
        got = first.losses.get(step, second.losses.get(step))
        assert got == pytest.approx(straight.losses[step], rel=1e-4, abs=1e-5), step

    result = export(spec, tmp_path / "export")
    assert result.step == 10
    with safe_open(str(tmp_path / "export" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    plain = build_model(spec.model)
    assert keys == set(plain.state_dict()) and not any("_orig_mod" in k for k in keys)
    model = load_pretrained(tmp_path / "export")  # a plain, uncompiled model
    x = batches[0][0]
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_compile_refused_without_a_cpp_compiler(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_mod.shutil, "which", lambda name: None)
    spec = tiny_spec(tmp_path, **{"train.compile": "true"})
    with pytest.raises(InvalidInputError, match="train.compile") as err:
        engine_mod.build_engine(spec, use_gpu=False)
    assert err.value.exit_code == 2
