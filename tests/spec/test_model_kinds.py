"""`model` is one kind's fields (a union tagged by `kind`): the other kind's fields are errors
that name them, typo suggestions still see every field, and fingerprints did not move."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import yaml

from phmscale.spec import (
    JobSpec,
    JobSpecError,
    ResNetSpec,
    TransformerSpec,
    job_schema,
    load_job_dict,
    parse_model_spec,
)
from tests.conftest import JOBS, ROOT, run_cli

BASE = {"name": "t", "data": {"train": "builtin:digits"}}
RESNET = {**BASE, "model": {"kind": "resnet", "algebra": "quaternion"}}


def _problems(data: dict, overrides: Sequence[str] = ()) -> str:
    with pytest.raises(JobSpecError) as info:
        load_job_dict(data, overrides)
    return str(info.value)


def test_kind_picks_the_class_and_defaults_to_the_transformer():
    assert isinstance(JobSpec.model_validate(BASE).model, TransformerSpec)
    assert isinstance(load_job_dict(RESNET).model, ResNetSpec)
    assert isinstance(parse_model_spec({"algebra": "complex"}), TransformerSpec)
    assert isinstance(parse_model_spec({"kind": "resnet"}), ResNetSpec)
    spec = load_job_dict(BASE)
    assert JobSpec.model_validate(spec.model_dump()).model == spec.model  # a dump round-trips


@pytest.mark.parametrize("override, fragment", [
    ("model.width_match=params", "model.width_match: `width_match` belongs to kind 'resnet'"),
    ("model.arch=resnet56", "set model.kind: resnet"),
])
def test_set_a_resnet_field_on_a_transformer_job(override, fragment):
    result = run_cli("validate", "jobs/quickstart.yaml", "--set", override)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert fragment in result.stderr, result.stderr


def test_wrong_kind_fields_through_the_api():
    text = _problems(RESNET, ["model.dim=64"])
    assert "model.dim: `dim` belongs to kind 'phm_transformer'" in text
    # --set model.kind=resnet on a job written for the transformer: its fields are errors
    text = _problems({**BASE, "model": {"dim": 64, "heads": 2}}, ["model.kind=resnet"])
    assert "model.dim" in text and "model.heads" in text


@pytest.mark.parametrize("data, override, fragment", [
    (BASE, "model.dpth=3", "did you mean `model.depth`"),
    (RESNET, "model.wdith=32", "did you mean `model.width`"),  # a key of the other member
    (RESNET, "model.stem.size=3", "model.stem.size"),  # a scalar has no sub-keys
])
def test_set_paths_walk_every_kind(data, override, fragment):
    assert fragment in _problems(data, [override])


def test_both_kinds_check_the_algebra():
    assert "needs `n`" in _problems({**BASE, "model": {"kind": "resnet", "algebra": "phm"}})
    assert "n=2 disagrees" in _problems({**BASE, "model": {"algebra": "quaternion", "n": 2}})


def test_fingerprints_are_those_of_the_flat_spec():
    """Values computed by the spec before the union (one flat ModelSpec): run folders named by
    them keep resuming."""
    assert load_job_dict(BASE).fingerprint() == "54bbd88abeb4"
    assert load_job_dict(RESNET).fingerprint() == "c80f0ac6bf96"


def test_schema_accepts_shipped_jobs_and_rejects_mixed_kinds():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(job_schema())
    for job in [*JOBS, *sorted((ROOT / "jobs" / "paper").glob("*.yaml"))]:
        errors = list(validator.iter_errors(yaml.safe_load(job.read_text())))
        assert not errors, (job, errors[0].message)
    # without `kind` a mapping is a transformer only (no `oneOf` matched twice)
    assert validator.is_valid({**BASE, "model": {"algebra": "complex"}})
    assert not validator.is_valid({**BASE, "model": {"dim": 16, "width_match": "params"}})
    assert not validator.is_valid({**BASE, "model": {"kind": "resnet", "dim": 16}})
