"""The exporter's HTTP side: a small bounded server and its pages."""
