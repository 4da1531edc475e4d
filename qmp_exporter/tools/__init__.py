"""Command-line tools beside the exporter: inventory and the read-only QMP shell."""
