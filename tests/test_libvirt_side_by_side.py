"""The host collector side by side with libvirt (docs/libvirt-migration.md): a libvirt domain
(TCG, one busy-loop vCPU, the system's QEMU 7.2 started by libvirt) with an extra ``-qmp``
through ``<qemu:commandline>``, watched by the real exporter with the ``host`` collector. Once
the guest is paused (``virsh suspend``), the exporter's process CPU time and per-vCPU time agree
with ``virsh domstats`` within 2%.

libvirt runs in session mode under a private directory (tests/helpers/libvirt.py). Where its
programs are missing the test fails; ``QMP_EXPORTER_SKIP_LIBVIRT=1`` skips it instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.exporter import ExporterProcess, wait_for
from tests.helpers.libvirt import LibvirtSession, missing_tools, require

pytestmark = pytest.mark.libvirt

DOMAIN = "lvside"
#: A boot sector that loops forever (``jmp $``): the one vCPU stays busy.
BUSY_BOOT_SECTOR = b"\xeb\xfe" + bytes(508) + b"\x55\xaa"
#: vCPU seconds to let the guest run first: libvirt's ``vcpu.N.time`` is in 10 ms ticks.
BUSY_SECONDS = 1.5
TOLERANCE = 0.02

DOMAIN_XML = """\
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>{emulator}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{boot}'/>
      <target dev='hda' bus='ide'/>
    </disk>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-qmp'/>
    <qemu:arg value='unix:{qmp},server=on,wait=off'/>
  </qemu:commandline>
</domain>
"""


@pytest.fixture
def libvirt() -> Iterator[LibvirtSession]:
    require(missing_tools(), "libvirt side by side")
    with LibvirtSession() as session:
        yield session


def define_busy_domain(libvirt: LibvirtSession) -> Path:
    """Define and start the domain; the path of its extra QMP socket."""
    boot = libvirt.write("boot.img", BUSY_BOOT_SECTOR)
    qmp = libvirt.root / f"{DOMAIN}.qmp"
    emulator = "/usr/bin/qemu-system-x86_64"
    text = DOMAIN_XML.format(name=DOMAIN, emulator=emulator, boot=boot, qmp=qmp)
    xml = libvirt.write("domain.xml", text.encode())
    libvirt.virsh("define", str(xml))
    libvirt.virsh("start", DOMAIN)
    return qmp


def apart(ours: float, theirs: float) -> float:
    return abs(ours - theirs) / theirs


def test_cpu_time_agrees_with_virsh_domstats(libvirt: LibvirtSession) -> None:
    qmp = define_busy_domain(libvirt)
    config = {
        "poll_interval": "250ms",
        "monitors": [{"name": DOMAIN, "address": f"unix:{qmp}", "collectors": ["host"]}],
    }
    with ExporterProcess(config) as exporter:

        def vcpu_seconds() -> float | None:
            return exporter.value("qemu_vcpu_cpu_seconds_total", vm=DOMAIN, vcpu="0")

        def last_poll() -> float | None:
            return exporter.value("qmp_exporter_last_poll_success_timestamp_seconds", vm=DOMAIN)

        wait_for(lambda: (vcpu_seconds() or 0) >= BUSY_SECONDS, 120, "the busy vCPU's time")
        libvirt.virsh("suspend", DOMAIN)
        wait_for(lambda: exporter.value("qemu_vm_running", vm=DOMAIN) == 0, 20, "paused")
        # The poll that saw the pause may have read /proc before it; the next one did not.
        seen = last_poll()
        wait_for(lambda: last_poll() != seen, 20, "a poll after the pause")
        samples = exporter.samples()
        stats = libvirt.domstats(DOMAIN, "--cpu-total", "--vcpu")
        log = exporter.log()

    host_ok = ("qmp_exporter_collector_success", (("collector", "host"), ("vm", DOMAIN)))
    assert samples.get(host_ok) == 1, log
    process = [
        value
        for (name, labels), value in samples.items()
        if name == "qemu_process_cpu_seconds_total" and ("vm", DOMAIN) in labels
    ]
    assert len(process) == 2, samples  # mode user and system
    ours, theirs = sum(process), int(stats["cpu.time"]) / 1e9
    assert apart(ours, theirs) <= TOLERANCE, f"process CPU {ours} s, cpu.time {theirs} s"
    vcpu = samples[("qemu_vcpu_cpu_seconds_total", (("vcpu", "0"), ("vm", DOMAIN)))]
    libvirt_vcpu = int(stats["vcpu.0.time"]) / 1e9
    assert vcpu >= BUSY_SECONDS
    assert apart(vcpu, libvirt_vcpu) <= TOLERANCE, f"vCPU {vcpu} s, vcpu.0.time {libvirt_vcpu} s"
