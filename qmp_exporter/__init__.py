"""qmp-exporter: watch QEMU virtual machines from Prometheus over QMP."""

__version__ = "0.1.0"

#: The default HTTP port: 9100-9999 are all taken by known exporters; 10144 is not.
DEFAULT_PORT = 10144
