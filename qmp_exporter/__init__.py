"""qmp-exporter: watch QEMU virtual machines from Prometheus over QMP."""

__version__ = "0.1.0"
