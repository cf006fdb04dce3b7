"""The job spec: pydantic models for every section, YAML loading with ${ENV} interpolation and
typed `--set` overrides, and the JSON schema. This is the only place a job is validated; every
other package reads a `JobSpec` and trusts it. Imports pydantic, yaml and the pure-data
`phmscale.algebra_dims` only."""

from phmscale.spec.job import JobSpec
from phmscale.spec.load import JobSpecError, Problem, job_schema, load_job, load_job_dict
from phmscale.spec.model_spec import (
    ALGEBRA_DIMS,
    ModelSpec,
    ModelSpecBase,
    ResNetSpec,
    TransformerSpec,
    parse_model_spec,
)
from phmscale.spec.sections import (
    CheckpointSpec,
    DataSpec,
    OptimizerSpec,
    ResourcesSpec,
    ScheduleSpec,
    TrackingSpec,
    TrainSpec,
)

__all__ = [
    "ALGEBRA_DIMS",
    "CheckpointSpec",
    "DataSpec",
    "JobSpec",
    "JobSpecError",
    "ModelSpec",
    "ModelSpecBase",
    "OptimizerSpec",
    "Problem",
    "ResNetSpec",
    "ResourcesSpec",
    "ScheduleSpec",
    "TrackingSpec",
    "TrainSpec",
    "TransformerSpec",
    "job_schema",
    "load_job",
    "load_job_dict",
    "parse_model_spec",
]
