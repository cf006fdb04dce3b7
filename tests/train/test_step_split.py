"""The loop's step-time split and checkpoint stall (train/meters.py): the buckets cover the
step, saves show up as stalls, and a job's peak FLOP/s can come from the environment.
Ratios only: absolute times belong to benchmarks."""

from __future__ import annotations

import pytest
import torch

from phmscale.train.meters import BUCKETS, PEAK_ENV, StepMeter, resolve_peak
from tests.train._tiny import Recorder, global_batches, tiny_spec, train_one_rank


def _metrics_recorder():
    rec = Recorder()
    seen: dict[int, dict[str, float]] = {}
    on_metrics = rec.hooks.on_metrics

    def keep(step, metrics):  # noqa: ANN001
        seen[step] = dict(metrics)
        on_metrics(step, metrics)

    rec.hooks.on_metrics = keep
    return rec, seen


def test_buckets_cover_the_step_time(tmp_path):
    spec = tiny_spec(tmp_path, **{"train.steps": 12, "train.log_every": 4, "checkpoint.every": 4,
                                  "train.grad_accum": 2})
    rec, seen = _metrics_recorder()
    result = train_one_rank(spec, global_batches(24, 8), rec.hooks)
    assert result.status == "completed" and sorted(seen) == [4, 8, 12]
    for step, m in seen.items():
        inside = sum(m[f"time_{b}_s"] for b in BUCKETS if b != "checkpoint")
        # what is left out is the loop's own bookkeeping between the clocks
        assert 0.8 <= inside / m["step_time_s"] <= 1.0 + 1e-6, (step, m)
        assert m["time_forward_backward_s"] > 0 and m["time_optimizer_s"] > 0
        assert m["time_comm_s"] >= 0 and m["memory_peak_bytes"] > 0
        assert m["data_wait_frac"] == pytest.approx(m["time_data_wait_s"] / m["step_time_s"])
    # saves at 4 and 8 completed (each logged in the window it completed in); 12 at the end
    assert len(result.checkpoint_stalls) == 3
    assert any("checkpoint_stall_s" in m for m in seen.values())
    assert sum(m["time_checkpoint_s"] for m in seen.values()) > 0


def test_meter_summary_splits_per_step():
    meter = StepMeter()
    for _ in range(4):
        meter.add(8, 8, 1.0, {"data_wait": 0.25, "forward_backward": 0.5, "comm": 0.05,
                              "optimizer": 0.2}, loss=2.0)
    meter.blocked(0.4)
    meter.saved(stall_s=0.4, write_s=1.5)
    m = meter.summary(world_size=2, train_flops_per_sample=10.0,
                      peak=resolve_peak(torch.device("cpu"), "bf16", override=100.0))
    assert m["step_time_s"] == 1.0 and m["time_data_wait_s"] == 0.25
    assert m["time_checkpoint_s"] == pytest.approx(0.1)  # 0.4 s over 4 steps
    assert m["checkpoint_stall_s"] == 0.4 and m["checkpoint_write_s"] == 1.5
    assert m["samples_per_s"] == 16.0 and m["mfu"] == pytest.approx(160.0 / 200.0)


def test_peak_from_the_environment(monkeypatch):
    monkeypatch.setenv(PEAK_ENV, "2.5e14")
    peak = resolve_peak(torch.device("cpu"), "bf16")
    assert peak.flops == 2.5e14 and PEAK_ENV in peak.source
    assert resolve_peak(torch.device("cpu"), "bf16", override=1e12).flops == 1e12  # flag wins
