"""Benchmarks of the exporter, run as modules from the repository root (``python3 -m
bench.run``, ``python3 -m bench.qmp_roundtrip``, ...; docs/benchmarks.md has them all). They
share tests/helpers/ with the tests: both are packages of the checkout, so nothing here edits
``sys.path``."""
