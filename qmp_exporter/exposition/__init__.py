"""The Prometheus text format, the metric families, and the rendered /metrics body."""
