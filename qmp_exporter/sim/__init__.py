"""Simulated QEMU monitors for the demo, the tests and the benchmarks."""
