"""A libvirt client that tests run as an unprivileged user (the distribution's Python and its
``python3-libvirt``), against :class:`tests.helpers.libvirt_system.SystemLibvirt`::

    python3 libvirt_ro_client.py probe RO_URI RW_URI   # one JSON line: domains, stats, and
                                                       # what was refused
    python3 libvirt_ro_client.py events URI   # "ready", then one JSON line per event, until
                                              # stdin closes

Only the standard library and ``libvirt``; no import of the project (it runs outside it).
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import libvirt

#: The stats groups of the smoke test: state, cpu.time/user/system, vcpu.N.time/delay/state.
STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_VCPU
)


def _refusal(call: Any) -> str | None:
    """The error message of ``call()``, or None when it succeeded."""
    try:
        call()
    except libvirt.libvirtError as error:
        return str(error)
    return None


def probe(uri: str, rw_uri: str) -> dict[str, Any]:
    """Read-only on ``uri``; read-write tried on ``rw_uri`` (the read-write socket: ``open``
    on the read-only socket succeeds, but the connection is read-only all the same)."""
    conn = libvirt.openReadOnly(uri)
    try:
        domains = {dom.name(): dom.UUIDString() for dom in conn.listAllDomains()}
        stats = {dom.name(): values for dom, values in conn.getAllDomainStats(STATS)}
        first = conn.lookupByName(next(iter(domains))) if domains else None
        refused = {
            "open": _refusal(lambda: libvirt.open(rw_uri).close()),
            "suspend": _refusal(first.suspend) if first else None,
            "qemuMonitorCommand": None,
        }
        if first is not None:
            import libvirt_qemu

            refused["qemuMonitorCommand"] = _refusal(
                lambda: libvirt_qemu.qemuMonitorCommand(first, '{"execute":"query-status"}', 0)
            )
        return {"domains": domains, "stats": stats, "refused": refused}
    finally:
        conn.close()


def _emit(kind: str, dom: Any, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"kind": kind, "domain": dom.name(), **fields}) + "\n")
    sys.stdout.flush()


def events(uri: str) -> None:
    libvirt.virEventRegisterDefaultImpl()
    conn = libvirt.openReadOnly(uri)

    def run() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=run, daemon=True).start()

    def lifecycle(_conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        _emit("lifecycle", dom, event=event, detail=detail)

    def graphics(
        _conn: Any, dom: Any, phase: int, local: Any, remote: Any, scheme: str, subject: Any,
        _opaque: Any,
    ) -> None:  # fmt: skip
        _emit("graphics", dom, phase=phase, local=local, remote=remote, scheme=scheme)

    conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)
    conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_GRAPHICS, graphics, None)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the test closes it


if __name__ == "__main__":
    mode, target = sys.argv[1], sys.argv[2]
    if mode == "probe":
        print(json.dumps(probe(target, sys.argv[3])))
    elif mode == "events":
        events(target)
    else:
        sys.exit(f"unknown mode {mode}")
