"""Simulated QEMU monitors for the demo, the tests and the benchmarks: one fake QMP monitor.

- :mod:`~qmp_exporter.sim.dialect`: what QEMU says, by era (greetings, versions, errors).
- :mod:`~qmp_exporter.sim.vm`: one simulated guest, its answers and events.
- :mod:`~qmp_exporter.sim.session`: one client connection (protocol and scripted hooks).
- :mod:`~qmp_exporter.sim.hooks`: the scripting hooks and the recording of what was received.
- :mod:`~qmp_exporter.sim.server`: one monitor listening on a socket.
- :mod:`~qmp_exporter.sim.fleet`, :mod:`~qmp_exporter.sim.churn`: many VMs, random changes.
- :mod:`~qmp_exporter.sim.cli`: ``python -m qmp_exporter.sim``; :mod:`~qmp_exporter.sim.demo`.

What a client sees is taken from real QEMU 7.2 transcripts: the greeting with a structured
version and the ``oob`` capability, ``CommandNotFound`` before ``qmp_capabilities`` (with
QEMU's ``desc``), CRLF line ends, the ``id`` echoed, QEMU's error classes, events with
timestamps, and one client per socket (a second client is not greeted until the first
leaves). Only ``stop``, ``cont``, ``system_reset`` and ``system_powerdown`` change a
simulated VM; every command received is counted in ``SimulatedVM.command_counts``.
"""

from qmp_exporter.sim.churn import Churn
from qmp_exporter.sim.dialect import DIALECTS, CommandFailed
from qmp_exporter.sim.fleet import PollGaps, SimulatedFleet, fleet_vm
from qmp_exporter.sim.hooks import NO_GREETING, Recording, Script
from qmp_exporter.sim.server import SimulatedMonitorServer
from qmp_exporter.sim.session import Session
from qmp_exporter.sim.vm import SimulatedVM

__all__ = [
    "DIALECTS",
    "NO_GREETING",
    "Churn",
    "CommandFailed",
    "PollGaps",
    "Recording",
    "Script",
    "Session",
    "SimulatedFleet",
    "SimulatedMonitorServer",
    "SimulatedVM",
    "fleet_vm",
]
