"""`phmscale bench paper`: the four papers' claims at small scale, through the real system.

One command runs every cell of `paper_plan.plan()` as a Ray job on one cluster (Ray Train +
DeepSpeed + WebDataset, tracked in MLflow), then the layer and engine benchmarks alone on the
machine, then writes docs/results.md and its plots from the MLflow runs (`paper_report`).

Everything a report needs besides MLflow — the cells, their Ray job ids and wall times, the
machine, the benchmark rows — is kept in <store>/suite-<id>.json, so `--suite ID` re-renders a
report from a finished run without training anything again.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from phmscale.bench.paper_plan import Cell, plan
from phmscale.bench.paper_run import CellResult, cluster, run_cells

DEFAULT_STORE = Path("out/paper")
BENCH_STEP_JOB = "jobs/quickstart.yaml"


def default_uri(store: Path) -> str:
    return f"sqlite:///{store.resolve() / 'mlflow.db'}"


def machine() -> dict[str, Any]:
    """CPU model, cores and memory of this machine, and the versions that matter."""
    import deepspeed
    import mlflow
    import ray
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_gib, 1),
            "gpu": "none", "python": platform.python_version(), "torch": torch.__version__,
            "ray": ray.__version__, "deepspeed": deepspeed.__version__,
            "mlflow": mlflow.__version__}


def run_benchmarks(quick: bool) -> dict[str, list[dict[str, Any]]]:
    """`phmscale bench layer --json` and `phmscale bench step jobs/quickstart.yaml --json`, run
    here after the cells have ended, so nothing else competes for the cores."""
    from phmscale.bench import layer, step
    from phmscale.spec import load_job

    # The cells' processes have just ended: let the 1-min load average fall (it lags ~1 min)
    # so the timings see an idle machine; at most 90 s, the machine may be shared.
    deadline = time.monotonic() + (5 if quick else 90)
    while os.getloadavg()[0] > 1.0 and time.monotonic() < deadline:
        time.sleep(5)
    spec = load_job(Path(BENCH_STEP_JOB), ["checkpoint.resume=false"])
    return {"layer": layer.run(quick=quick), "step": step.run(spec, steps=10 if quick else None)}


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def suite_file(store: Path, suite: str) -> Path:
    return store / f"suite-{suite}.json"


def _cell_dict(result: CellResult) -> dict[str, Any]:
    out = asdict(result)
    out["cell"] = {k: v for k, v in asdict(result.cell).items() if k != "extra"}
    return out


def run_suite(out: Path, store: Path = DEFAULT_STORE, quick: bool = False,
              address: str | None = None, tracking_uri: str | None = None, parallel: int = 2,
              log: Callable[[str], None] = print, cells: list[Cell] | None = None,
              benchmarks: bool = True) -> Path:
    """Train every cell, run the benchmarks, write the report; returns the suite's JSON file."""
    store.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or default_uri(store)
    suite = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + ("-quick" if quick else "")
    cells = cells if cells is not None else plan(quick)
    log(f"suite {suite}: {len(cells)} cells, {parallel} at a time; MLflow store {uri}")
    t0 = time.monotonic()
    # Logical CPUs: each cell's worker takes 1; the slack lets a cell's driver-side actors be
    # scheduled while `parallel` workers run (threads follow cpus_per_worker, not this).
    # SIGTERM (kill, nohup'd runs ignore SIGINT) unwinds like Ctrl-C: the local cluster, and
    # with it every cell in flight, is shut down instead of left running without its owner.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with cluster(address, num_cpus=max(float(os.cpu_count() or 1), 2.0 * parallel)) as (
                url, local):
            results = run_cells(cells, url, local, suite, store, uri, parallel, log)
    finally:
        signal.signal(signal.SIGTERM, previous)
    train_s = time.monotonic() - t0
    log(f"cells done in {train_s / 60:.1f} min; benchmarks…")
    bench = run_benchmarks(quick) if benchmarks else {}
    record = {
        "suite": suite, "quick": quick, "tracking_uri": uri, "address": address or "local",
        "parallel": parallel, "machine": machine(), "train_seconds": round(train_s, 1),
        "total_seconds": round(time.monotonic() - t0, 1), "cells": [_cell_dict(r) for r in results],
        "bench": bench,
        "command": "phmscale bench paper" + (" --quick" if quick else "") + f" --out {out}",
    }
    path = suite_file(store, suite)
    path.write_text(json.dumps(record, indent=2, default=str))
    _report_in_fresh_process(path, out, store, suite)
    log(f"wrote {out} ({record['total_seconds'] / 60:.1f} min in all); suite record {path}")
    return path


def _report_in_fresh_process(path: Path, out: Path, store: Path, suite: str) -> None:
    """`phmscale bench paper --suite ID` in a new interpreter. This process has just run a Ray
    cluster, 51 job clients and the benchmarks' DataLoader workers; on CPython 3.11 rendering
    here once died inside the import machinery (MLflow's lazy `import pyspark`: KeyError in
    importlib's _ModuleLock.acquire, cpython#87712). The suite record is on disk first, so a
    failed report loses nothing and the message says how to render it again."""
    import subprocess
    import sys

    from phmscale.errors import PhmscaleError

    command = [sys.executable, "-m", "phmscale", "bench", "paper", "--suite", suite,
               "--store", str(store), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise PhmscaleError(
            f"the suite's runs are done and recorded in {path}, but writing {out} failed:\n"
            f"{done.stderr.strip()[-2000:]}\nrender it again with: "
            f"phmscale bench paper --suite {suite} --store {store} --out {out}")


def write_report(suite_path: Path, out: Path) -> list[Path]:
    """docs/results.md (and its PNGs next to it, in <out stem>/) from a suite record."""
    from phmscale.bench.paper_report import build_report

    record = json.loads(suite_path.read_text())
    return build_report(record, out)
