"""The GPU check's measurements and its one table (scripts/gpu_check.sh runs it):

    python scripts/gpu_check.py --device cuda|cpu [--quick] [--recipes 'jobs/scale/*.yaml']

- `bench layer` at training and decode shapes on the device: PHM ÷ dense time ratios;
- `bench generate` (its own device: CPU today): PHM ÷ dense tokens/s;
- a dry run (8 steps, nothing written) of each causal-LM recipe found by the glob: step time,
  MFU (peak: the data sheet's bf16 figure for a known GPU, or $PHMSCALE_PEAK_FLOPS), tokens/s,
  peak memory. No recipe, or no data for one: a line saying so, never a failure.
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
from typing import Any

DRY_RUN_TIMEOUT_S = 150  # an LM recipe: model build, DeepSpeed init, 8 steps of a 124M model


def layer_rows(device: str, quick: bool) -> list[tuple[str, str, str]]:
    from phmscale.bench.layer import run

    out = []
    for row in run(quick=quick, device=device):
        out.append((f"bench layer {row['case']}", f"n={row['n']} width={row['width']} "
                    f"rows={row['rows']}", f"PHM/dense {row['phm_vs_dense']:.3g}x"))
    return out


def generate_rows(quick: bool) -> list[tuple[str, str, str]]:
    from phmscale.bench.generate import run

    out = []
    for row in run(quick=quick):
        out.append(("bench generate (CPU)", f"n={row['n']} width={row['width']}",
                    f"PHM/dense {row['phm_vs_dense']:.3g}x tokens/s"))
    return out


def recipe_rows(pattern: str) -> list[tuple[str, str, str]]:
    import yaml

    def is_lm(path: str) -> bool:
        with open(path) as f:
            return (yaml.safe_load(f).get("model") or {}).get("task") == "causal_lm"

    paths = [p for p in sorted(glob.glob(pattern)) if is_lm(p)]
    if not paths:
        return [("dry run", pattern, "skipped: no causal-LM recipe matches")]
    out = []
    for path in paths:
        cmd = [sys.executable, "-m", "phmscale", "run", path, "--dry-run", "--json"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DRY_RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            out.append(("dry run", path, f"timed out after {DRY_RUN_TIMEOUT_S} s"))
            continue
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or ["?"])[-1][:90]
            out.append(("dry run", path, f"skipped (exit {proc.returncode}): {why}"))
            continue
        got: dict[str, Any] = json.loads(proc.stdout)
        mfu = got.get("mfu")
        out.append(("dry run", path, (f"step {got['step_time_s'] * 1e3:.0f} ms, MFU "
                                      f"{mfu:.1%}" if mfu else "MFU unknown") +
                    f", peak {got['peak_memory_bytes'] / 2**30:.2f} GiB"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--recipes", default="jobs/scale/*.yaml")
    args = parser.parse_args()
    rows = layer_rows(args.device, args.quick) + generate_rows(quick=True)
    rows += recipe_rows(args.recipes)
    width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"\n{'check':<{width[0]}}  {'case':<{width[1]}}  result (ratios > 1: PHM faster)")
    for check, case, result in rows:
        print(f"{check:<{width[0]}}  {case:<{width[1]}}  {result}")


if __name__ == "__main__":
    main()
