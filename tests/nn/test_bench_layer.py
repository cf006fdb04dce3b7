"""`phmscale bench layer` runs and returns well-formed rows (speed targets live in the benchmark,
not in tests: timings on a shared CI machine are not assertions)."""

from __future__ import annotations

from phmscale.bench.layer import run


def test_quick_layer_benchmark_returns_rows_with_positive_timings() -> None:
    rows = run(quick=True)
    assert {row["case"] for row in rows} == {"train", "decode", "decode_hot"}
    for row in rows:
        assert row["n"] == 4 and row["rows"] >= 1 and row["width"] > 0
        for key in ("dense_ms", "phm_ms", "kron_loop_ms", "phm_vs_dense", "phm_vs_kron_loop"):
            assert row[key] > 0, (key, row)
