"""Secrets from the environment: masked wherever a job is shown, kept as `${VAR}` wherever it
is shipped, and still part of what the run is (its fingerprint)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

from phmscale.spec import load_job_dict
from phmscale.spec.secrets import strip_userinfo

ROOT = Path(__file__).resolve().parents[2]
TOKEN, PASSWORD = "tok_Vb81Qz0Lm", "p@ss_Wd9Xe1"


def _job(**extra):
    job = {"name": "x", "data": {"train": "builtin:digits"}}
    for dotted, value in extra.items():
        node = job
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return job


def test_userinfo_is_stripped_even_with_an_at_in_the_password():
    assert strip_userinfo(f"see http://bob:{PASSWORD}@host:5000/x now") == "see http://host:5000/x now"
    assert strip_userinfo("s3://bucket/a@b/c") == "s3://bucket/a@b/c"  # '@' in a path stays


def test_masked_shown_templated_shipped(monkeypatch):
    monkeypatch.setenv("PHM_TOKEN", TOKEN)
    monkeypatch.setenv("PHM_ROOT", "/data")
    spec = load_job_dict(_job(
        data__train="pipe:curl -H 'Authorization: Bearer ${PHM_TOKEN}' ${PHM_ROOT}/a.tar",
        tracking__tags={"t": "${PHM_TOKEN}"}, public_env=["PHM_ROOT"]))
    assert spec.data.train.endswith(f"{TOKEN}' /data/a.tar")  # the value trains
    shown = json.dumps(spec.public_dump())
    assert TOKEN not in shown and "Bearer ***' /data/a.tar" in shown
    shipped = json.dumps(spec.portable_dump())
    assert TOKEN not in shipped and "Bearer ${PHM_TOKEN}' /data/a.tar" in shipped
    assert spec.secret_env == {"PHM_TOKEN": TOKEN}
    assert TOKEN not in json.dumps(spec.identity(shown=True))
    # an override that replaces the field drops the reference and stops shipping the value
    spec = load_job_dict(_job(data__train="${PHM_TOKEN}"), ["data.train=builtin:digits"])
    assert spec.secret_env == {}


def test_a_changed_secret_value_is_another_run(monkeypatch):
    monkeypatch.setenv("PHM_SEED", "1")
    first = load_job_dict(_job(train__seed="${PHM_SEED}"))
    monkeypatch.setenv("PHM_SEED", "2")
    second = load_job_dict(_job(train__seed="${PHM_SEED}"))
    assert first.train.seed == 1 and second.train.seed == 2
    assert first.fingerprint() != second.fingerprint()


def test_submit_ships_references_and_keeps_the_fingerprint(tmp_path, monkeypatch):
    """tracking.uri with a token in its query and credentials, checkpoint.dir and a
    relative data path under secret variables: none of their values leaves in job.yaml or
    the metadata, and the cluster computes the same fingerprint."""
    from phmscale.launch.package import build_submission

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PHM_TOKEN", TOKEN)
    monkeypatch.setenv("PHM_PASS", PASSWORD)
    monkeypatch.setenv("PHM_SHARDS", "shards/digits")
    monkeypatch.setenv("PHM_SCRATCH", "/scratch/s3cr3t_prefix")
    spec = load_job_dict(_job(
        data__train="${PHM_SHARDS}/train-{000000..000003}.tar",
        tracking__uri="https://alice:${PHM_PASS}@mlflow.example/x?token=${PHM_TOKEN}",
        checkpoint__dir="${PHM_SCRATCH}/ck"))
    sub = build_submission(spec, code="installed", cwd=tmp_path)
    try:
        job_yaml = (Path(sub.runtime_env["working_dir"]) / "job.yaml").read_text()
    finally:
        shutil.rmtree(sub.workdir)
    sent = job_yaml + json.dumps(sub.metadata) + sub.entrypoint
    for value in (TOKEN, PASSWORD, "s3cr3t_prefix", "shards/digits"):
        assert value not in sent, value
    env = sub.runtime_env["env_vars"]
    assert env["PHM_TOKEN"] == TOKEN and env["MLFLOW_TRACKING_PASSWORD"] == PASSWORD
    assert "https://mlflow.example/x?token=${PHM_TOKEN}" in job_yaml
    assert sub.spec.fingerprint() == spec.fingerprint()  # what the cluster will compute
    assert sub.spec.data.train == f"{tmp_path}/shards/digits/train-{{000000..000003}}.tar"


def test_torchx_dryrun_shows_no_secret(monkeypatch):
    from tests.conftest import run_cli

    job = ROOT / "jobs/quickstart.yaml"
    result = run_cli("submit", str(job), "--scheduler", "torchx:slurm", "--dryrun",
                     "--scheduler-arg", "partition=gpu",
                     "--set", "tracking.uri=http://mlflow.example:5000",
                     env={"MLFLOW_TRACKING_PASSWORD": PASSWORD})
    assert result.returncode == 0, result.stderr
    assert "MLFLOW_TRACKING_PASSWORD" in result.stdout and PASSWORD not in result.stdout
    encoded = result.stdout.split("--spec ", 1)[1].split()[0]
    assert json.loads(base64.b64decode(encoded))["tracking"]["uri"] == "http://mlflow.example:5000"
