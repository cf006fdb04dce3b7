"""--scheduler / --scheduler-arg parsing, handles, and the job backend registration."""

from __future__ import annotations

import pytest

from phmscale.errors import InvalidInputError
from phmscale.launch import torchx as tx
from phmscale.launch import torchx_jobs as txj


def test_unknown_scheduler_arg_lists_the_valid_keys():
    with pytest.raises(InvalidInputError) as caught:
        txj.parse_scheduler_args("slurm", ["partition=gpu", "partiton=gpu2"])
    message = str(caught.value)
    assert "unknown --scheduler-arg 'partiton' for torchx:slurm" in message
    assert "did you mean 'partition'?" in message
    for key in ("partition", "time", "comment", "constraint", "mail-user", "job_dir",
                "image", "nproc_per_node", "mem_mb", "max_retries", "mount"):
        assert f"  {key} (" in message, key


def test_unknown_key_on_kubernetes_lists_its_runopts():
    with pytest.raises(InvalidInputError) as caught:
        txj.parse_scheduler_args("kubernetes", ["queue=default", "namespce=ml"])
    message = str(caught.value)
    assert "did you mean 'namespace'?" in message
    assert "  queue (str, required:" in message
    assert "  service_account (" in message


def test_values_are_typed_by_runopts():
    cfg, ours = txj.parse_scheduler_args(
        "local_docker", ["privileged=true", "copy_env=A", "copy_env=B,C", "env=X:1,Y:2",
                         "image=img:1", "nproc_per_node=4"])
    assert cfg == {"privileged": True, "copy_env": ["A", "B", "C"], "env": {"X": "1", "Y": "2"}}
    assert ours == {"image": "img:1", "nproc_per_node": 4}
    cfg, _ = txj.parse_scheduler_args("local_cwd", ["auto_set_cuda_visible_devices=0"])
    assert cfg["auto_set_cuda_visible_devices"] is False
    assert cfg["log_dir"] == str(txj.local_log_root())  # kept for status/logs from elsewhere


def test_mounts_take_torchx_syntax_and_repeat():
    _, ours = txj.parse_scheduler_args("kubernetes", [
        "queue=q", "mount=type=volume,src=ckpt,dst=/mnt/checkpoints",
        "mount=type=volume,src=data,dst=/mnt/data,readonly"])
    assert ours["mount"] == ["type=volume", "src=ckpt", "dst=/mnt/checkpoints",
                             "type=volume", "src=data", "dst=/mnt/data", "readonly"]
    with pytest.raises(InvalidInputError, match="mount=type=nfs,src=x,dst=/y: invalid mount type"):
        txj.parse_scheduler_args("kubernetes", ["queue=q", "mount=type=nfs,src=x,dst=/y"])


@pytest.mark.parametrize("item, expected", [
    ("privileged=maybe", "privileged=maybe: expected bool"),
    ("nproc_per_node=two", "nproc_per_node=two: expected int"),
    ("privileged", "must look like key=value"),
])
def test_bad_values_are_errors(item, expected):
    with pytest.raises(InvalidInputError, match=expected):
        txj.parse_scheduler_args("local_docker", [item])


def test_required_runopt_missing():
    with pytest.raises(InvalidInputError, match="torchx:kubernetes needs --scheduler-arg queue="):
        txj.parse_scheduler_args("kubernetes", [])


def test_torchx_ray_is_rejected_with_the_reason():
    with pytest.raises(InvalidInputError) as caught:
        tx.parse_scheduler("torchx:ray")
    message = str(caught.value)
    assert "TorchX 0.7.0 is its newest release" in message
    assert "removed its Ray scheduler" in message
    assert "phmscale submit JOB.yaml --address" in message


@pytest.mark.parametrize("name, hint", [("torchx:slrum", "did you mean torchx:slurm?"),
                                        ("torchx:aws_batch", "supported: torchx:local_cwd")])
def test_other_schedulers_are_rejected(name, hint):
    with pytest.raises(InvalidInputError, match=hint):
        tx.parse_scheduler(name)


def test_scheduler_names():
    assert [tx.parse_scheduler(f"torchx:{s}") for s in tx.SUPPORTED_SCHEDULERS] == list(
        tx.SUPPORTED_SCHEDULERS)
    assert tx.parse_scheduler("slurm") == "slurm"


def test_torchx_handles_parse_and_unsupported_schedulers_explain():
    assert txj.parse_handle("kubernetes://torchx/default:quickstart-abc123") == (
        "kubernetes", "torchx", "default:quickstart-abc123")
    assert txj.parse_handle("slurm://torchx/12345")[0] == "slurm"
    with pytest.raises(InvalidInputError, match="not a TorchX handle"):
        txj.parse_handle("quickstart-20250101-120000-ab12")
    with pytest.raises(InvalidInputError, match="removed its Ray scheduler"):
        txj.status("ray://torchx/raysubmit_1")


def test_backend_dispatch_reaches_torchx():
    from phmscale.launch.backend import backend_for

    backend = backend_for("slurm://torchx/12345", None)
    assert isinstance(backend, txj.TorchXJobs)
    assert backend.name == "torchx:slurm"
    assert txj.backend_for("torchx:kubernetes").scheduler == "kubernetes"
    with pytest.raises(InvalidInputError, match="removed its Ray scheduler"):
        backend_for("ray://torchx/x", None)


def test_scheduler_client_failures_are_messages(monkeypatch, tmp_path):
    from phmscale.errors import PhmscaleError

    monkeypatch.setenv("PATH", str(tmp_path))  # no sacct/squeue here
    with pytest.raises(PhmscaleError, match=r"torchx:slurm: FileNotFoundError.*sacct"):
        txj.status("slurm://torchx/123")
