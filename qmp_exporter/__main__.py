"""``python -m qmp_exporter``: the same as the ``qmp-exporter`` command."""

from qmp_exporter.cli import main

raise SystemExit(main())
