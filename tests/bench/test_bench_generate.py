"""`phmscale bench generate --quick --json` runs end to end and returns well-formed rows (speed
targets live in the benchmark and docs/benchmarks.md: timings on a shared machine are not
assertions)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from phmscale.bench.generate import roofline_tok_s
from phmscale.cli.main import app


def test_quick_generate_benchmark_cli_returns_rows_with_positive_ratios() -> None:
    result = CliRunner().invoke(app, ["bench", "generate", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["n"] for row in rows] == [2, 4]
    for row in rows:
        assert row["phm_params"] < row["dense_params"], row
        for key in ("width", "depth", "dense_tok_s", "phm_tok_s", "phm_vs_dense",
                    "dense_roofline_tok_s", "phm_roofline_tok_s", "bandwidth_gb_s",
                    "gemm_gflop_s", "threads"):
            assert row[key] > 0, (key, row)
        assert row["bound"] in {"bandwidth", "compute"} and row["load"] >= 0
        assert abs(row["phm_vs_dense"] - row["phm_tok_s"] / row["dense_tok_s"]) < 0.01


def test_roofline_picks_the_slower_of_bytes_and_flops() -> None:
    rates = {"bandwidth_gb_s": 20.0, "gemm_gflop_s": 100.0}
    assert roofline_tok_s(4e9, 2e9, rates) == (5.0, "bandwidth")  # 0.2 s of bytes > 0.02 s
    tok_s, bound = roofline_tok_s(4e8, 2e10, rates)  # 0.02 s of bytes < 0.2 s of flops
    assert bound == "compute" and abs(tok_s - 5.0) < 1e-9
