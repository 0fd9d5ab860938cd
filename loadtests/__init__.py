"""Benchmarks and load generators. Not part of the test run; each prints ratios to an
in-run baseline, because this machine is shared and absolute times mean little."""
