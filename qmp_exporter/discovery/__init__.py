"""Finding monitors without listing them: by globbing for QMP sockets
(:mod:`~qmp_exporter.discovery.sockets`) and in the command lines of the host's QEMU processes
(:mod:`~qmp_exporter.discovery.processes`); one scan of both is one frozen
:class:`~qmp_exporter.discovery.scan.Scan`, and a
:class:`~qmp_exporter.discovery.discoverer.Discoverer` scans again every ``rescan``.
"""

from qmp_exporter.discovery.discoverer import Discoverer, ScanListener
from qmp_exporter.discovery.processes import ProcessRow
from qmp_exporter.discovery.scan import Scan, scan

__all__ = ["Discoverer", "ProcessRow", "Scan", "ScanListener", "scan"]
