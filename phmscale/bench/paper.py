"""`phmscale bench paper`: the four papers' claims at small scale, through the real system.

The suite is the sweep files under jobs/paper/sweeps/ (one per section and data set). Each
runs as `phmscale sweep` runs it: one Ray job (Ray Tune, a trial per cell, each the job's Ray
Train trainer with DeepSpeed and WebDataset, a nested MLflow run), one sweep after the other on
one cluster; then the layer and engine benchmarks alone on the machine; then docs/results.md
and its plots from the sweeps' MLflow runs (`paper_report`).

Cells live in <store>/checkpoints/<sweep name>/<fingerprint>: a finished cell is skipped when
the suite runs again, so an interrupted suite resumes. Everything a report needs besides
MLflow (the sweeps' settings and ids, the machine, the benchmark rows) is kept in
<store>/suite-<id>.json, so `--suite ID` re-renders a report without training anything.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from phmscale.spec.sweep import SweepSpec

DEFAULT_STORE = Path("out/paper")
SWEEPS = Path("jobs/paper/sweeps")
BENCH_STEP_JOB = "jobs/quickstart.yaml"
EXPERIMENT = "paper"
# Running order: the sweeps whose cells are longest go first, the short ones fill the end.
ORDER = ("resnet-digits", "prune-resnet", "lm-pystdlib", "phm-digits", "phm-mnist1d",
         "attn-digits")
# --quick: one case of three sweeps (the PHM, ResNet and LM paths), 20 steps, one seed.
QUICK = {"resnet-digits": "quaternion", "lm-pystdlib": "n4", "phm-digits": "n4"}
QUICK_SETS = ("train.steps=20", "train.eval_every=20", "train.log_every=5",
              "checkpoint.every=20", "train.schedule.warmup_steps=2", "train.eval_batches=2")
POLL_S = 2.0


def default_uri(store: Path) -> str:
    return f"sqlite:///{store.resolve() / 'mlflow.db'}"


def suite_sweeps(quick: bool = False) -> dict[str, SweepSpec]:
    """The suite's sweeps by file stem; quick: their smoke-test cut (another name, so other
    sweep ids and folders than the real suite's)."""
    from phmscale.spec.sweep import read_sweep_file

    out = {}
    for stem in ORDER:
        settings = read_sweep_file(SWEEPS / f"{stem}.yaml")
        if quick and stem in QUICK:
            case = QUICK[stem]
            settings = settings.model_copy(update={
                "name": f"{settings.name}-quick", "cases": {case: settings.cases[case]},
                "grid": {}, "seeds": None, "set": [*settings.set, *QUICK_SETS]})
        if stem in QUICK or not quick:
            out[stem] = settings
    return out


def placement(store: Path, uri: str, name: str) -> list[str]:
    """Where a sweep's cells keep their folders and log their runs (the same on every run of
    the suite: that is what makes a rerun resume)."""
    return [f"checkpoint.dir={store.resolve() / 'checkpoints' / name}", f"tracking.uri={uri}",
            f"tracking.experiment={EXPERIMENT}"]


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
    here after the sweeps have ended, so nothing else competes for the cores."""
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


def run_sweep(backend, stem: str, settings: SweepSpec, extra: list[str], local: bool,  # noqa: ANN001 (RayJobs)
              store: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Validate the sweep, submit it as one Ray job and wait for it; its record entry."""
    from phmscale.data.check import check_job_data
    from phmscale.errors import PhmscaleError
    from phmscale.launch.package import build_sweep_submission
    from phmscale.launch.storage import state
    from phmscale.spec.sweep import expand

    sweep = expand(settings, extra)
    check_job_data(sweep.cells[0].spec, stem, world_size=sweep.cells[0].spec.resources.workers)
    entry = {"stem": stem, "name": sweep.name, "sweep_id": sweep.sweep_id, "cells":
             len(sweep.cells), "settings": settings.model_dump(), "extra_sets": extra,
             "job_id": None, "status": "SKIPPED", "seconds": 0.0}
    if all(state(c.spec) in ("finished", "early_stopped") for c in sweep.cells):
        log(f"{stem}: every cell finished in an earlier run; nothing to train")
        return entry
    t0 = time.monotonic()
    submission = build_sweep_submission(sweep, code="auto", local=local)
    try:
        entry["job_id"] = job_id = backend.submit(submission)
    finally:  # the runtime env is uploaded by submit: the temp dir is done with
        shutil.rmtree(submission.workdir, ignore_errors=True)
    while True:
        time.sleep(POLL_S)
        try:  # a busy 2-core machine's dashboard can miss one poll; a long suite must not die
            record = backend.status(job_id, mlflow=False)
        except PhmscaleError:
            continue
        if record.terminal:
            break
    entry.update(status=record.status, seconds=round(time.monotonic() - t0, 1))
    if record.status != "SUCCEEDED":
        (store / "logs").mkdir(parents=True, exist_ok=True)
        (store / "logs" / f"{stem}.log").write_text(backend.logs(job_id))
    log(f"{stem}: {len(sweep.cells)} cells {record.status} in {entry['seconds'] / 60:.1f} min"
        f" (sweep {sweep.sweep_id})")
    return entry


def run_suite(out: Path, store: Path = DEFAULT_STORE, quick: bool = False,
              address: str | None = None, tracking_uri: str | None = None, parallel: int = 2,
              log: Callable[[str], None] = print, sweeps: dict[str, SweepSpec] | None = None,
              benchmarks: bool = True) -> Path:
    """Run every sweep, then the benchmarks, then write the report; returns the suite record."""
    from phmscale.launch.ray_jobs import RayJobs
    from phmscale.tracking.experiment import ensure_experiment
    from phmscale.tracking.uri import check_reachable

    store.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or default_uri(store)
    suite = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + ("-quick" if quick else "")
    sweeps = sweeps if sweeps is not None else suite_sweeps(quick)
    log(f"suite {suite}: {len(sweeps)} sweeps, {parallel} cells at a time; MLflow {uri}")
    check_reachable(uri)
    ensure_experiment(uri, EXPERIMENT)  # its artifacts beside a sqlite store, made once here
    t0 = time.monotonic()
    # SIGTERM (kill; nohup'd runs ignore SIGINT) unwinds like Ctrl-C: the local cluster, and
    # with it the sweep in flight, is shut down instead of left running without its owner.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    entries = []
    try:
        with _cluster(address, parallel) as (url, local):
            backend = RayJobs.connect(url)
            for stem, settings in sweeps.items():
                settings = settings.model_copy(update={"max_concurrent": parallel})
                entries.append(run_sweep(backend, stem, settings,
                                         placement(store, uri, settings.name), local, store, log))
    finally:
        signal.signal(signal.SIGTERM, previous)
    train_s = time.monotonic() - t0
    log(f"sweeps done in {train_s / 60:.1f} min; benchmarks…")
    record = {
        "suite": suite, "quick": quick, "tracking_uri": uri, "address": address or "local",
        "parallel": parallel, "machine": machine(), "train_seconds": round(train_s, 1),
        "bench": run_benchmarks(quick) if benchmarks else {},
        "total_seconds": round(time.monotonic() - t0, 1), "sweeps": entries,
        "command": "phmscale bench paper" + (" --quick" if quick else "") + f" --out {out}",
    }
    path = suite_file(store, suite)
    path.write_text(json.dumps(record, indent=2, default=str))
    _report_in_fresh_process(path, out, store, suite)
    log(f"wrote {out} ({record['total_seconds'] / 60:.1f} min in all); suite record {path}")
    return path


@contextmanager
def _cluster(address: str | None, parallel: int) -> Iterator[tuple[str, bool]]:
    """(dashboard URL, is_local): the given cluster, or one LocalCluster for the whole suite."""
    if address and address != "local":
        yield address, False
        return
    from phmscale.launch.local import LocalCluster

    # Ray Train polls its workers every 2 s by default; a finished cell is noticed at the next
    # poll. At 51 cells, 0.5 s saves about a minute.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Logical CPUs: each cell's worker takes 1; the slack lets the sweep's driver-side actors
    # be scheduled while `parallel` workers run.
    with LocalCluster(num_cpus=max(float(os.cpu_count() or 1), 2.0 * parallel)) as url:
        yield url, True


def _report_in_fresh_process(path: Path, out: Path, store: Path, suite: str) -> None:
    """`phmscale bench paper --suite ID` in a new interpreter. This process has just run a Ray
    cluster and the benchmarks' DataLoader workers; on CPython 3.11 rendering here once died
    inside the import machinery (MLflow's lazy `import pyspark`: KeyError in importlib's
    _ModuleLock.acquire, cpython#87712). The suite record is on disk first, so a failed report
    loses nothing and the message says how to render it again."""
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

    return build_report(json.loads(suite_path.read_text()), out)
