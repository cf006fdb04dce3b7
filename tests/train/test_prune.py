"""`train.prune`: algebra-element pruning through the engine (schedule, ZeRO, resume)."""

from __future__ import annotations

import pytest

from phmscale.errors import InvalidInputError
from phmscale.models import build_model
from phmscale.nn.prune import sparsity_report
from phmscale.spec import load_job_dict
from phmscale.train.prune import pruned_layers, target_sparsity
from tests.train._tiny import Recorder, global_batches, tiny_spec, train_one_rank

PRUNE = {"train.prune.sparsity": 0.75, "train.prune.start_step": 4,
         "train.prune.end_step": 12, "train.prune.every": 4}


class _Sparsity(Recorder):
    """Also keeps element_sparsity / params_nonzero per logged step."""

    def __init__(self) -> None:
        super().__init__()
        self.sparsity: dict[int, float] = {}
        self.nonzero: dict[int, float] = {}
        self.model = None
        inner, outer = self.hooks.on_metrics, self

        def on_start(info):  # noqa: ANN001
            outer.model = info.model

        def on_metrics(step, metrics):  # noqa: ANN001
            inner(step, metrics)
            outer.sparsity[step] = metrics["element_sparsity"]
            outer.nonzero[step] = metrics["params_nonzero"]

        self.hooks.on_metrics = on_metrics
        self.hooks.on_start = on_start


def _run(spec, batches, **kw):
    rec = _Sparsity()
    return rec, train_one_rank(spec, batches, rec.hooks, **kw)


def test_schedule_ramps_cubically_then_holds(tmp_path):
    spec = tiny_spec(tmp_path, **PRUNE)
    got = {t: target_sparsity(spec, t) for t in range(1, 21)}
    due = {t: s for t, s in got.items() if s is not None}
    assert sorted(due) == [4, 8, 12]  # start, start + every, end; nothing after the end
    assert due[4] == 0.0 and due[12] == pytest.approx(0.75)
    assert due[8] == pytest.approx(0.75 * (1 - 0.5**3))  # half way: 7/8 of the final
    one_shot = tiny_spec(tmp_path, **{"train.prune.sparsity": 0.5, "train.prune.start_step": 6})
    assert [t for t in range(1, 21) if target_sparsity(one_shot, t) is not None] == [6]
    assert target_sparsity(tiny_spec(tmp_path), 5) is None  # off by default


def test_first_and_last_layers_are_kept(tmp_path):
    model = build_model(tiny_spec(tmp_path).model)
    every = pruned_layers(model, keep_first_last=False)
    kept = pruned_layers(model, keep_first_last=True)
    assert kept == every[1:-1] and len(kept) >= 2


def test_nothing_left_to_prune_is_refused(tmp_path):
    from torch import nn

    from phmscale.nn import PHMLinear
    from phmscale.train.prune import Pruner

    two = nn.Sequential(PHMLinear(8, 8, n=2), PHMLinear(8, 8, n=2))  # a stem and a head only
    with pytest.raises(InvalidInputError, match="keep_first_last leaves none to prune"):
        Pruner(tiny_spec(tmp_path, **PRUNE), two, zero_stage=1)
    assert Pruner(tiny_spec(tmp_path), two, zero_stage=1).state is None  # off: nothing done


@pytest.mark.parametrize("zero", [1, 3])
def test_training_prunes_to_the_target_and_keeps_it(tmp_path, zero):
    spec = tiny_spec(tmp_path, **PRUNE, **{"train.zero_stage": zero, "checkpoint.every": 20})
    rec, result = _run(spec, global_batches(4, 8))
    assert result.status == "completed"
    assert rec.sparsity[3] == 0.0 and 0.6 < rec.sparsity[8] < 0.66  # 0.75·7/8 ≈ 0.656
    assert all(rec.sparsity[t] == pytest.approx(0.75, abs=0.005) for t in range(12, 21))
    assert rec.nonzero[20] < rec.nonzero[3]
    if zero < 3:  # ZeRO-3 partitions S: the live model's S is a placeholder
        # Fine-tuning after the last event kept the pruned elements out of the trained model.
        layers = pruned_layers(rec.model, keep_first_last=True)
        assert sparsity_report(layers).sparsity == pytest.approx(0.75, abs=0.005)
        for layer in layers:
            assert float(layer.effective_S().detach()[:, ~layer.mask].abs().sum()) == 0.0
            assert layer.weight.abs().sum() > 0


@pytest.mark.parametrize("zero", [1, 3])
def test_resume_keeps_masks_and_matches_a_straight_run(tmp_path, zero):
    """ZeRO-3 loads module states (with the masks) while S is still a partitioned placeholder."""
    batches = global_batches(30, 8)
    sets = {**PRUNE, "checkpoint.every": 10, "train.zero_stage": zero}
    straight, _ = _run(tiny_spec(tmp_path / "a", **sets), batches)
    spec = tiny_spec(tmp_path / "b", **sets)
    first, _ = _run(spec, batches, max_steps=10)
    second, r2 = _run(spec, batches)
    assert r2.start_step == 10
    assert second.sparsity[11] == pytest.approx(first.sparsity[10])  # masks came back
    for step in range(1, 21):
        got = first.losses.get(step, second.losses.get(step))
        assert got == pytest.approx(straight.losses[step], rel=1e-6, abs=1e-7), step
        sparsity = first.sparsity.get(step, second.sparsity.get(step))
        assert sparsity == straight.sparsity[step], step


@pytest.mark.parametrize(("prune", "match"), [
    ({"sparsity": 0.5, "start_step": 30}, "prune.start_step=30 must be below steps=20"),
    ({"sparsity": 0.5, "start_step": 5, "end_step": 20}, "prune.end_step=20 must be below"),
    ({"sparsity": 0.5, "start_step": 8, "end_step": 4}, "end_step=4 is before start_step=8"),
    ({"sparsity": 1.0}, "sparsity"),
])
def test_bad_prune_settings_name_the_field(tmp_path, prune, match):
    raw = {"name": "p", "data": {"train": "builtin:digits"},
           "train": {"steps": 20, "prune": prune}, "checkpoint": {"every": 5}}
    with pytest.raises(InvalidInputError, match=match):
        load_job_dict(raw, [])
