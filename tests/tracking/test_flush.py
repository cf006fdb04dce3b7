"""The hook's flush: batches of at most 1000 metrics, each step logged once even when a batch
fails midway."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from phmscale.tracking.mlflow_hook import MAX_METRICS_PER_BATCH, MLflowHook

KEYS = [f"m{i}" for i in range(8)]


def _hook(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("flush"))
    hook = MLflowHook(uri, launcher="test", system_metrics=False)
    hook.run_id, hook.active = run.info.run_id, True
    for step in range(1, 301):  # 300 steps × 8 metrics = 2400 metrics: 3 batches
        hook.on_metrics(step, {k: float(step * i) for i, k in enumerate(KEYS)})
    return hook, client


def test_flush_sends_batches_of_at_most_1000(tmp_path, monkeypatch):
    hook, client = _hook(tmp_path)
    sizes = []
    real = MlflowClient.log_batch

    def counting(self, run_id, metrics=(), **kw):
        sizes.append(len(metrics))
        return real(self, run_id, metrics=metrics, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", counting)
    hook.flush()
    assert sizes == [MAX_METRICS_PER_BATCH, MAX_METRICS_PER_BATCH, 400]
    assert hook.buffer == []
    for key in KEYS:
        steps = sorted(p.step for p in client.get_metric_history(hook.run_id, key))
        assert steps == list(range(1, 301))
    assert hook.history["m3"][:2] == [(1, 3.0), (2, 6.0)]


def test_failed_batch_is_retried_without_duplicates(tmp_path, monkeypatch):
    hook, client = _hook(tmp_path)
    real = MlflowClient.log_batch
    calls = []

    def flaky(self, run_id, metrics=(), **kw):
        calls.append(len(metrics))
        if len(calls) == 2:
            raise ConnectionError("server went away")
        return real(self, run_id, metrics=metrics, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    with pytest.raises(ConnectionError):
        hook.flush()
    assert len(hook.buffer) == 2400 - MAX_METRICS_PER_BATCH  # the sent batch left the buffer
    hook.flush()
    for key in KEYS:
        steps = sorted(p.step for p in client.get_metric_history(hook.run_id, key))
        assert steps == list(range(1, 301))  # each exactly once
