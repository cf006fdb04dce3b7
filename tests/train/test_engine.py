"""The engine on CPU: ZeRO stages, data-parallel equivalence, exact resume, atomic saves."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from phmscale.errors import InvalidInputError
from phmscale.train import checkpoint as ckpt
from phmscale.train.config import check_deepspeed_config, deepspeed_config
from phmscale.train.loop import train
from tests.conftest import ROOT
from tests.train._tiny import Recorder, global_batches, rank_source, run_two_ranks, tiny_spec


def _run(spec, batches, world=1, rank=0, **kw):
    rec = Recorder()
    result = train(spec, hooks=rec.hooks, train_source=rank_source(batches, rank, world),
                   val_source=rank_source(batches[:2], rank, world), use_gpu=False, **kw)
    return rec, result


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_zero_stages_train(tmp_path, zero):
    spec = tiny_spec(tmp_path, **{"train.zero_stage": zero, "checkpoint.every": 20})
    rec, result = _run(spec, global_batches(4, 8))  # 4 batches revisited: loss must fall
    losses = [rec.losses[s] for s in sorted(rec.losses)]
    assert result.status == "completed" and result.step == 20
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 * 0.9, losses
    assert "val_accuracy" in result.eval
    assert ckpt.latest_checkpoint(spec.checkpoint_dir).step == 20


def test_bf16_on_cpu_trains(tmp_path):
    spec = tiny_spec(tmp_path, **{"train.precision": "bf16", "checkpoint.every": 20})
    rec, result = _run(spec, global_batches(4, 8))
    losses = [rec.losses[s] for s in sorted(rec.losses)]
    assert result.status == "completed"
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 * 0.9, losses


def test_deepspeed_config_from_spec(tmp_path):
    spec = tiny_spec(tmp_path, **{"train.grad_accum": 2, "resources.workers": 4,
                                  "train.deepspeed.wall_clock_breakdown": True})
    config = deepspeed_config(spec, world_size=4)
    assert config["train_batch_size"] == 8 * 2 * 4
    assert config["gradient_clipping"] == 1.0 and isinstance(config["gradient_clipping"], float)
    assert config["wall_clock_breakdown"] is True
    check_deepspeed_config(config)
    bad = dict(config, zero_optimization={"stage": 1, "reduce_bucket_size": "lots"})
    with pytest.raises(InvalidInputError, match="train.deepspeed"):
        check_deepspeed_config(bad)


def test_resume_equals_straight_run(tmp_path):
    batches = global_batches(30, 8)
    straight, _ = _run(tiny_spec(tmp_path / "a", **{"checkpoint.every": 10}), batches)
    spec = tiny_spec(tmp_path / "b", **{"checkpoint.every": 10})
    first, r1 = _run(spec, batches, max_steps=10)
    assert r1.step == 10 and ckpt.latest_checkpoint(spec.checkpoint_dir).step == 10
    second, r2 = _run(spec, batches)
    assert r2.start_step == 10 and r2.step == 20
    for step in range(1, 21):
        got = first.losses.get(step, second.losses.get(step))
        assert got == pytest.approx(straight.losses[step], rel=1e-6, abs=1e-7), step
    assert set(second.losses) == set(range(11, 21))


@pytest.mark.parametrize("zero", [1, 2])
def test_two_processes_match_one_with_double_batch(tmp_path, zero):
    """ZeRO-1 (gradients reduced after backward) and ZeRO-2 (partitioned as they come), gloo:
    2 ranks × micro batch 8 == 1 rank × 16 (same global batches)."""
    out2 = tmp_path / "two"
    out2.mkdir()
    run_two_ranks(out2, zero, 16)
    two = {int(k): v for k, v in json.loads((out2 / "losses.json").read_text()).items()}

    spec = tiny_spec(tmp_path / "one", **{"train.zero_stage": zero, "data.batch_size": 16,
                                          "train.steps": 12, "checkpoint.every": 12})
    one, _ = _run(spec, global_batches(12, 16))
    assert sorted(two) == sorted(one.losses)
    for step in one.losses:
        assert two[step] == pytest.approx(one.losses[step], rel=1e-4), step


def test_kill_during_checkpoint_keeps_previous(tmp_path):
    """SIGKILL in the middle of writing step 10 leaves step 5 loadable."""
    ckdir = tmp_path / "ckpt"
    script = f"""
import os, torch
from tests.train._tiny import tiny_spec, global_batches, rank_source
from phmscale.train.loop import train
spec = tiny_spec(__import__('pathlib').Path({str(tmp_path)!r}), **{{'train.steps': 10, 'checkpoint.every': 5}})
real_save = torch.save
calls = []
def dying_save(obj, f, *a, **k):
    calls.append(f)
    if 'step_00000010' in str(f):
        with open(f, 'wb') as fh:
            fh.write(b'partial')
        os.kill(os.getpid(), 9)
    return real_save(obj, f, *a, **k)
torch.save = dying_save
b = global_batches(10, 8)
train(spec, train_source=rank_source(b, 0, 1), val_source=None, use_gpu=False)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert (ckdir / "step_00000010.partial").exists()  # the partial save is aside…
    assert not (ckdir / "step_00000010").exists()  # …never under a checkpoint's name
    latest = ckpt.latest_checkpoint(ckdir)
    assert latest is not None and latest.step == 5
    spec = tiny_spec(tmp_path, **{"train.steps": 10, "checkpoint.every": 5})
    rec, result = _run(spec, global_batches(10, 8))
    assert result.start_step == 5 and result.step == 10
    assert ckpt.latest_checkpoint(ckdir).step == 10
    assert not (ckdir / "step_00000010.partial").exists()  # the next save of it cleared it
