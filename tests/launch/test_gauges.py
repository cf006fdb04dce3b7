"""The dashboard gauges (launch/ray_worker.py): every window metric the loop reports is set,
tagged by job and submission, without a Ray cluster (Ray's Gauge replaced by a recorder)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT

ray_worker = pytest.importorskip("phmscale.launch.ray_worker")


class FakeGauge:
    made: dict[str, FakeGauge] = {}

    def __init__(self, name, description, tag_keys):  # noqa: ANN001
        self.name, self.tag_keys, self.values = name, tag_keys, []
        FakeGauge.made[name] = self

    def set(self, value, tags):  # noqa: ANN001
        self.values.append((value, tags))


def test_every_split_metric_becomes_a_gauge(monkeypatch):
    import ray.util.metrics

    monkeypatch.setattr(ray.util.metrics, "Gauge", FakeGauge)
    FakeGauge.made.clear()
    gauges = ray_worker.Gauges("quickstart", "raysubmit_1")
    metrics = {key: float(i + 1) for i, key in enumerate(ray_worker.GAUGE_METRICS)}
    gauges.set(40, {**metrics, "lr": 0.1})
    tags = {"job": "quickstart", "submission_id": "raysubmit_1"}
    assert FakeGauge.made["phmscale_step"].values == [(40, tags)]
    for key, value in metrics.items():
        assert FakeGauge.made[f"phmscale_{key}"].values == [(value, tags)], key
    assert "phmscale_lr" not in FakeGauge.made  # only the metrics named for the dashboard
    gauges.set(41, {"loss": 0.5})  # a window without a save sets what it has
    assert FakeGauge.made["phmscale_checkpoint_stall_s"].values[-1][0] == metrics[
        "checkpoint_stall_s"]


def test_grafana_dashboard_charts_the_gauges():
    """Every gauge is charted under the name Ray's exporter gives it (`ray_` prefix)."""
    board = json.loads((ROOT / "dashboards" / "phmscale_grafana.json").read_text())
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
    for key in ray_worker.GAUGE_METRICS:
        assert f"ray_phmscale_{key}" in exprs, key
