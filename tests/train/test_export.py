"""Exports: a checkpoint of any ZeRO stage from a 2-worker run becomes model.safetensors that
`load_pretrained` turns back into the trained model (its validation loss is the run's), the
folded export computes the same function with the dense twin's parameter count, and the CLI's
`export`/`eval` reproduce a `phmscale run`."""

from __future__ import annotations

import json

import pytest
import torch

from phmscale.models import load_pretrained
from phmscale.train.evaluate import loss_fn
from phmscale.train.export import export
from tests.conftest import ROOT, run_cli
from tests.train._tiny import global_batches, run_two_ranks, tiny_spec

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("zero", [1, 2, 3])
def test_export_of_a_two_worker_run_is_the_trained_model(tmp_path, zero):
    run_two_ranks(tmp_path, zero, 16)
    # the worker's job (tests.train._worker): the same fields find the same checkpoint
    spec = tiny_spec(tmp_path, **{"train.zero_stage": zero, "data.batch_size": 8,
                                  "resources.workers": 2, "train.steps": 12,
                                  "checkpoint.every": 12})
    result = export(spec, tmp_path / "export")
    assert result.step == 12 and not result.folded
    model = load_pretrained(tmp_path / "export")
    val = global_batches(12, 16)[:2]  # the run's val batches, split over its two ranks
    with torch.no_grad():
        loss = sum(loss_fn(model(x), y).item() * len(y) for x, y in val) / sum(len(y) for _, y in val)
    recorded = json.loads((tmp_path / "evals.json").read_text())["12"]["val_loss"]
    assert loss == pytest.approx(recorded, abs=1e-5)

    if zero == 1:  # once: the fold is independent of the ZeRO stage
        folded = export(spec, tmp_path / "folded", fold=True)
        dense = load_pretrained(tmp_path / "folded")
        assert folded.params == folded.twin_params == sum(p.numel() for p in dense.parameters())
        assert not any("phmscale.nn" in type(m).__module__ for m in dense.modules())
        x = val[0][0]
        with torch.no_grad():
            torch.testing.assert_close(dense(x), model(x), rtol=1e-5, atol=1e-5)


def test_cli_export_and_eval_reproduce_a_run(tmp_path):
    sets = ["--set", "train.steps=20", "--set", "checkpoint.every=10",
            "--set", "train.schedule.warmup_steps=2",
            "--set", "train.eval_every=10"]
    job = str(ROOT / "jobs/quickstart.yaml")
    trained = run_cli("run", job, *sets, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = run_cli("eval", job, *sets, "--json", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    figures = json.loads(evaluated.stdout)  # stdout is the JSON alone
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert figures["step"] == 20
    assert figures["val_loss"] == pytest.approx(run.data.metrics["val_loss"], abs=1e-3)
    assert figures["val_accuracy"] == pytest.approx(run.data.metrics["val_accuracy"], abs=1e-3)

    out = tmp_path / "export"
    exported = run_cli("export", job, *sets, "--out", str(out), "--mlflow", "--json",
                       cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["run_id"] == run.info.run_id and manifest["step"] == 20
    assert manifest["metrics"]["val_loss"] == run.data.metrics["val_loss"]
    assert (out / "model.safetensors").is_file()
    assert f"val_loss {run.data.metrics['val_loss']:.4g}" in (out / "README.md").read_text()
    # --mlflow: a pyfunc model on the job's own run (its status untouched), registered as
    # version 1 of the model named like the job; it predicts what load_pretrained computes
    assert json.loads(exported.stdout)["model_uri"] == "models:/quickstart-phm-vit-digits/1"
    version = client.get_model_version("quickstart-phm-vit-digits", "1")
    assert version.run_id == run.info.run_id
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    import mlflow

    served = mlflow.pyfunc.load_model(
        client.get_model_version_download_uri("quickstart-phm-vit-digits", "1"))
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        expected = load_pretrained(out)(x).numpy()
    assert abs(served.predict(x.numpy()) - expected).max() < 1e-5
    again = run_cli("export", job, *sets, "--out", str(out), "--mlflow", cwd=tmp_path)
    assert again.returncode == 0 and "models:/quickstart-phm-vit-digits/2" in again.stdout, again.stderr[-2000:]
    missing = run_cli("export", job, "--set", "train.seed=7", *sets, "--out", str(out),
                      cwd=tmp_path)  # another run: nothing trained yet
    assert missing.returncode == 2 and "no complete checkpoint" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_generate_from_a_phm_export_and_its_fold_is_identical(tmp_path):
    """A byte LM trained a few steps, exported twice: greedy `phmscale generate` is
    deterministic and the same text from the PHM weights and from the folded dense ones."""
    job = str(ROOT / "jobs/lm-pystdlib-phm-n4.yaml")
    sets = ["--set", "train.steps=4", "--set", "checkpoint.every=4", "--set",
            "train.eval_every=4", "--set", "train.schedule.warmup_steps=0",
            "--set", "data.loader_workers=0"]
    trained = run_cli("run", job, *sets, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    unnamed = run_cli("export", job, *sets, "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert unnamed.returncode == 2 and "--set resources.workers=1" in unnamed.stderr
    sets += ["--set", "resources.workers=1"]  # the job has 2; `phmscale run` trains with 1
    texts = []
    for name, fold in (("phm", []), ("dense", ["--fold-dense"])):
        made = run_cli("export", job, *sets, *fold, "--out", str(tmp_path / name), cwd=tmp_path)
        assert made.returncode == 0, made.stderr[-3000:]
        said = run_cli("generate", str(tmp_path / name), "--prompt", "def main(",
                       "--max-new-tokens", "40", "--temperature", "0")
        assert said.returncode == 0, said.stderr[-3000:]
        assert said.stdout.startswith("def main(")
        texts.append(said.stdout)
    assert texts[0] == texts[1]
    registered = run_cli("export", job, *sets, "--out", str(tmp_path / "phm"), "--mlflow",
                         "--json", cwd=tmp_path)
    assert registered.returncode == 0, registered.stderr[-3000:]
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(
        client.get_model_version_download_uri("lm-pystdlib-phm-n4", "1"))
    (continued,) = served.predict(["def main("], params={"max_new_tokens": 40})
    assert "def main(" + continued + "\n" == texts[0]  # the CLI echoes a newline
    assert len(texts[0].encode("utf-8", errors="replace")) >= len("def main(")
    phm, dense = load_pretrained(tmp_path / "phm"), load_pretrained(tmp_path / "dense")
    x = torch.randint(0, 256, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(dense(x), phm(x), rtol=1e-4, atol=1e-4)
    too_long = run_cli("generate", str(tmp_path / "phm"), "--prompt", "x" * 200)
    assert too_long.returncode == 2 and "seq_len" in too_long.stderr, too_long.stderr
    classify = run_cli("generate", str(tmp_path), "--prompt", "x")  # not an export
    assert classify.returncode == 2 and "not a phmscale export" in classify.stderr
