"""The fleet: every VM the exporter knows, whichever source tells of it.

- :mod:`~qmp_exporter.fleet.state`: :class:`VMState`, what is known of one VM, frozen;
- :mod:`~qmp_exporter.fleet.source`: the contract between the sources and the fleet (a source
  that owns VMs, one that adds to VMs another owns, and who wins when two name one VM);
- :mod:`~qmp_exporter.fleet.hub`: :class:`Fleet`, which takes the sources' states and tells
  its listeners (the renderer, the landing page).

This ``__init__`` imports nothing, so a tool can use the states without the server's hub.
"""
