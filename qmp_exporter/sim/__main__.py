"""``python -m qmp_exporter.sim``: run simulated QEMU monitors."""

from qmp_exporter.sim.cli import main

raise SystemExit(main())
