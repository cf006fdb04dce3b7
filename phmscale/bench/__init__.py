"""Benchmarks behind `phmscale bench …`: ratios measured side by side in one run."""
