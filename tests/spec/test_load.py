"""load_job: overrides, env interpolation, error contents, every shipped job validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from phmscale.spec import JobSpecError, load_job, load_job_dict
from tests.conftest import JOBS, run_cli

BASE = {"name": "t", "data": {"train": "builtin:digits"}}


@pytest.mark.parametrize("job", JOBS, ids=[j.stem for j in JOBS])
def test_every_shipped_job_validates(job: Path):
    spec = load_job(job)
    assert spec.name
    result = run_cli("validate", str(job))
    assert result.returncode == 0, result.stderr


def test_overrides_are_typed_and_nested():
    spec = load_job_dict(
        BASE,
        [
            "train.steps=20",
            "checkpoint.every=5",
            "train.optimizer.lr=1e-2",
            "model.mlp_ratio=0",
            "data.resampled=true",
            "model.input_shape=[1, 40]",
            "model.patch_size=4",
            "train.deepspeed.wall_clock_breakdown=true",
            "tracking.tags.team=hc",
        ],
    )
    assert spec.train.steps == 20 and isinstance(spec.train.steps, int)
    assert spec.train.optimizer.lr == pytest.approx(1e-2)
    assert spec.model.mlp_ratio == 0
    assert spec.data.resampled is True
    assert spec.model.input_shape == [1, 40]
    assert spec.train.deepspeed == {"wall_clock_breakdown": True}
    assert spec.tracking.tags == {"team": "hc"}


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.dpth=3", "did you mean `model.depth`"),
        ("trian.steps=3", "did you mean `train"),
        ("train.steps.value=3", "train.steps.value"),
        ("nokey", "must look like key.path=value"),
    ],
)
def test_unknown_override_paths_rejected(override, fragment):
    with pytest.raises(JobSpecError) as info:
        load_job_dict(BASE, [override])
    assert fragment in str(info.value)


def test_override_type_error_names_field():
    with pytest.raises(JobSpecError) as info:
        load_job_dict(BASE, ["train.steps=lots"])
    assert "train.steps" in str(info.value)


def test_env_interpolation(monkeypatch, tmp_path):
    monkeypatch.setenv("PHM_STEPS", "40")
    monkeypatch.setenv("PHM_DATA", "builtin:mnist1d")
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: env\n"
        "data: {train: '${PHM_DATA}', batch_size: '${PHM_BS:-16}'}\n"
        "train: {steps: '${PHM_STEPS}'}\n"
        "checkpoint: {dir: 'ckpt/${PHM_DATA:-x}-run', every: 10}\n"
    )
    spec = load_job(job)
    assert spec.data.train == "builtin:mnist1d"
    assert spec.data.batch_size == 16
    assert spec.train.steps == 40
    assert spec.checkpoint_dir == "ckpt/builtin:mnist1d-run"


def test_multiple_problems_reported_together(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("name: x\nmodel: {dpth: 2, heds: 3}\ndata: {train: builtin:digits}\n")
    with pytest.raises(JobSpecError) as info:
        load_job(job)
    assert len(info.value.problems) == 2
    assert info.value.exit_code == 2


def test_fixed_algebra_resolves_n():
    spec = load_job_dict({**BASE, "model": {"algebra": "octonion", "dim": 64}})
    assert spec.model.algebra_dim == 8
    spec = load_job_dict({**BASE, "model": {"algebra": "phm", "n": 3, "dim": 48, "heads": 4,
                                            "mlp_ratio": 2}})
    assert spec.model.algebra_dim == 3


def test_consistent_raw_deepspeed_keys_accepted():
    spec = load_job_dict(
        {**BASE, "data": {"train": "builtin:digits", "batch_size": 8},
         "train": {"grad_accum": 2, "deepspeed": {"train_batch_size": 32,
                                                   "gradient_clipping": 1.0}},
         "resources": {"workers": 2}}
    )
    assert spec.global_batch_size() == 32
    with pytest.raises(JobSpecError, match="train_batch_size"):
        load_job_dict(
            {**BASE, "data": {"train": "builtin:digits", "batch_size": 8},
             "train": {"deepspeed": {"train_batch_size": 64}}, "resources": {"workers": 2}}
        )


def test_schema_cli_writes_valid_json(tmp_path):
    import json

    out = tmp_path / "schema.json"
    result = run_cli("schema", "--out", str(out))
    assert result.returncode == 0, result.stderr
    schema = json.loads(out.read_text())
    assert set(schema["properties"]) == {
        "name", "model", "data", "train", "checkpoint", "resources", "tracking", "public_env"
    }
    # every field carries a description (they feed CLI help and editors)
    for name, definition in schema["$defs"].items():
        for field, prop in definition.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field} has no description"


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and "phmscale" in result.stdout
