"""The host's view of its QEMU processes: every read of ``/proc`` and ``/sys`` the exporter
makes, in one home.

- :mod:`~qmp_exporter.host.machine`: :class:`Host`, the one object an exporter makes;
- :mod:`~qmp_exporter.host.trust`: which processes are VMs (the one trust check);
- :mod:`~qmp_exporter.host.listeners`: whether a monitor a command line names is that
  process's own;
- :mod:`~qmp_exporter.host.peer`: the process behind a connected monitor socket;
- :mod:`~qmp_exporter.host.sockdiag`: what ``sock_diag`` tells of unix sockets (both use it);
- :mod:`~qmp_exporter.host.processes`, :mod:`~qmp_exporter.host.cmdline`: the host's QEMU
  processes and what their command lines say;
- :mod:`~qmp_exporter.host.process`: one process's figures; :mod:`~qmp_exporter.host.unwatched`:
  those of processes nothing watches;
- :mod:`~qmp_exporter.host.procfs`: small-file reads and their parsers.

It imports nothing of the package but :mod:`qmp_exporter.textformat`.
"""

from qmp_exporter.host.machine import Host

__all__ = ["Host"]
