"""The real-scale recipes (jobs/scale/): each one is a valid job without its data, its model
builds and summarizes, and its dense twin is the reference size (±5%): ResNet-50 at 1,000
classes 25.6M parameters, GPT-2 small 124M (tied embeddings)."""

from __future__ import annotations

import pytest

from phmscale.models.summary import summarize
from phmscale.spec import load_job
from tests.conftest import ROOT, run_cli

RECIPES = sorted((ROOT / "jobs" / "scale").glob("*.yaml"))
REFERENCE = {"resnet50": 25.6e6, "gpt2": 124e6}


def test_there_are_recipes_for_both_papers_settings():
    names = {r.stem for r in RECIPES}
    assert {"resnet50-imagenet-real", "resnet50-imagenet-quaternion", "resnet50-imagenet-m2r",
            "gpt2-small-dense", "gpt2-small-phm-n4"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_is_valid_without_its_data_and_its_twin_is_the_reference(recipe, tmp_path):
    result = run_cli("validate", "--no-data", str(recipe), cwd=tmp_path,
                     env={"DATA_ROOT": str(tmp_path / "nowhere")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "data not checked" in " ".join(result.stdout.split())
    with_data = run_cli("validate", str(recipe), cwd=tmp_path,
                        env={"DATA_ROOT": str(tmp_path / "nowhere")})
    assert with_data.returncode == 2 and "data.train" in with_data.stdout + with_data.stderr
    spec = load_job(recipe)
    assert "${DATA_ROOT" in spec.public_dump()["data"]["train"] or "/data/" in spec.data.train
    summary = summarize(spec)
    reference = REFERENCE["resnet50" if "resnet50" in recipe.stem else "gpt2"]
    assert abs(summary.twin_params / reference - 1) <= 0.05, summary.twin_params
    if "dense" in recipe.stem or "real" in recipe.stem:
        assert summary.params_total == summary.twin_params
    else:  # n = 4: about a quarter, more where layers stay real (embedding, stem, head)
        assert summary.params_total < 0.5 * summary.twin_params
