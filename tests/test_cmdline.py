"""The QEMU command-line reader of process discovery, with realistic command lines (argv as
/proc/PID/cmdline gives it: no shell quotes): libvirt 9, older libvirt, Proxmox VE 8, plain."""

# ruff: noqa: E501  (real command lines, kept one argument a line as QEMU got them)
from __future__ import annotations

from pathlib import Path

from qmp_exporter.host import cmdline
from qmp_exporter.host.cmdline import (
    CLIENT_MODE,
    FD_PASSED,
    NOT_A_SOCKET,
    OWNED_BY_LIBVIRT,
    RELATIVE_PATH,
    keyval,
    parse,
    split_cmdline,
)

# libvirt 9.0 (Debian 12), a q35 domain with a <qemu:commandline> extra -qmp. Shape taken
# from libvirt 9.0's qemu_command.c output (JSON -object/-device/-netdev/-blockdev, keyval
# -chardev, fd-passed monitor); see libvirt-live-cmdline.txt for one captured on this host.
LIBVIRT_9 = [
    "/usr/bin/qemu-system-x86_64",
    "-name", "guest=debian12,debug-threads=on",
    "-S",
    "-object", '{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/var/lib/libvirt/qemu/domain-3-debian12/master-key.aes"}',
    "-machine", "pc-q35-7.2,usb=off,vmport=off,dump-guest-core=off,memory-backend=pc.ram",
    "-accel", "kvm",
    "-cpu", "host,migratable=on",
    "-m", "2048",
    "-object", '{"qom-type":"memory-backend-ram","id":"pc.ram","size":2147483648}',
    "-overcommit", "mem-lock=off",
    "-smp", "2,sockets=2,cores=1,threads=1",
    "-uuid", "6F1C2A4E-3B0D-4D8E-9A51-0C6B7D2E9F10",
    "-no-user-config",
    "-nodefaults",
    "-chardev", "socket,id=charmonitor,fd=31,server=on,wait=off",
    "-mon", "chardev=charmonitor,id=monitor,mode=control",
    "-rtc", "base=utc,driftfix=slew",
    "-global", "kvm-pit.lost_tick_policy=delay",
    "-no-hpet",
    "-no-shutdown",
    "-boot", "strict=on",
    "-blockdev", '{"driver":"file","filename":"/var/lib/libvirt/images/debian12.qcow2","node-name":"libvirt-1-storage","auto-read-only":true,"discard":"unmap"}',
    "-netdev", '{"type":"tap","fd":"33","vhost":true,"vhostfd":"35","id":"hostnet0"}',
    "-device", '{"driver":"virtio-net-pci","netdev":"hostnet0","id":"net0","mac":"52:54:00:6b:3c:58","bus":"pci.1","addr":"0x0"}',
    "-chardev", "pty,id=charserial0",
    "-device", '{"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0}',
    "-chardev", "socket,id=charchannel0,fd=30,server=on,wait=off",
    "-audiodev", '{"id":"audio1","driver":"none"}',
    "-vnc", "127.0.0.1:0,audiodev=audio1",
    "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    "-msg", "timestamp=on",
    "-qmp", "unix:/var/run/qmp-exporter/debian12.sock,server=on,wait=off",
]  # fmt: skip

# libvirt before 5.x (path-based monitor, e.g. Debian 9/10), no extra -qmp.
LIBVIRT_OLD = [
    "/usr/bin/qemu-system-x86_64",
    "-name", "guest=old,debug-threads=on",
    "-S",
    "-machine", "pc-i440fx-2.8,accel=kvm,usb=off,dump-guest-core=off",
    "-m", "1024",
    "-uuid", "0a3f7d0e-1111-2222-3333-444455556666",
    "-no-user-config", "-nodefaults",
    "-chardev", "socket,id=charmonitor,path=/var/lib/libvirt/qemu/domain-7-old/monitor.sock,server,nowait",
    "-mon", "chardev=charmonitor,id=monitor,mode=control",
    "-netdev", "tap,fd=26,id=hostnet0,vhost=on,vhostfd=28",
]  # fmt: skip

# Proxmox VE 8 (qemu-server 8.x, `qm showcmd 100` with the shell quotes removed).
PROXMOX_8 = [
    "/usr/bin/kvm",
    "-id", "100",
    "-name", "web1,debug-threads=on",
    "-no-shutdown",
    "-chardev", "socket,id=qmp,path=/var/run/qemu-server/100.qmp,server=on,wait=off",
    "-mon", "chardev=qmp,mode=control",
    "-chardev", "socket,id=qmp-event,path=/var/run/qmeventd.sock,reconnect=5",
    "-mon", "chardev=qmp-event,mode=control",
    "-pidfile", "/var/run/qemu-server/100.pid",
    "-daemonize",
    "-smbios", "type=1,uuid=0b6e3a4c-9d2f-4c1e-8a7b-5f6e4d3c2b1a",
    "-smp", "2,sockets=1,cores=2,maxcpus=2",
    "-nodefaults",
    "-boot", "menu=on,strict=on,reboot-timeout=1000,splash=/usr/share/qemu-server/bootsplash.jpg",
    "-vnc", "unix:/var/run/qemu-server/100.vnc,password=on",
    "-cpu", "x86-64-v2-AES,enforce,+kvm_pv_eoi,+kvm_pv_unhalt",
    "-m", "2048",
    "-chardev", "socket,path=/var/run/qemu-server/100.qga,server=on,wait=off,id=qga0",
    "-device", "virtio-serial,id=qga0,bus=pci.0,addr=0x8",
    "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    "-drive", "file=/dev/pve/vm-100-disk-0,if=none,id=drive-scsi0,format=raw,cache=none,aio=io_uring,detect-zeroes=on",
    "-netdev", "type=tap,id=net0,ifname=tap100i0,script=/var/lib/qemu-server/pve-bridge,downscript=/var/lib/qemu-server/pve-bridgedown,vhost=on",
    "-device", "virtio-net-pci,mac=BC:24:11:00:00:01,netdev=net0,bus=pci.0,addr=0x12,id=net0",
    "-netdev", "type=tap,id=net1,ifname=tap100i1,script=/var/lib/qemu-server/pve-bridge,downscript=/var/lib/qemu-server/pve-bridgedown",
    "-machine", "type=pc-i440fx-8.1+pve0",
]  # fmt: skip


def test_split_cmdline() -> None:
    assert split_cmdline(b"qemu-system-x86_64\0-name\0a b\0") == [
        "qemu-system-x86_64",
        "-name",
        "a b",
    ]
    assert split_cmdline(b"") == []


def test_keyval() -> None:
    assert keyval("guest=a,,b,debug-threads=on", "guest") == {"guest": "a,b", "debug-threads": "on"}
    assert keyval("web1,debug-threads=on", "guest") == {"guest": "web1", "debug-threads": "on"}
    assert keyval("/x,server,nowait", "path") == {"path": "/x", "server": "on", "wait": "off"}


def test_libvirt_9() -> None:
    cl = parse(LIBVIRT_9)
    assert cl.name == "debian12"
    assert cl.uuid == "6f1c2a4e-3b0d-4d8e-9a51-0c6b7d2e9f10"
    assert cl.owner == "libvirt"
    own, extra = sorted(cl.monitors, key=lambda m: m.source)
    assert extra.source == "-qmp" and extra.address == "unix:/run/qmp-exporter/debian12.sock"
    assert extra.problem is None
    assert own.chardev == "charmonitor" and own.problem == FD_PASSED  # never connectable
    assert cl.usable_monitors == [extra]
    assert cl.problem is None
    assert cl.taps == [] and cl.tap_fds == 1  # JSON -netdev, fd-passed: names via fdinfo


def test_libvirt_without_extra_qmp() -> None:
    cl = parse(LIBVIRT_9[:-2])
    assert cl.usable_monitors == [] and cl.problem == OWNED_BY_LIBVIRT
    old = parse(LIBVIRT_OLD)
    assert old.monitors[0].address == "unix:/var/lib/libvirt/qemu/domain-7-old/monitor.sock"
    assert old.monitors[0].problem == OWNED_BY_LIBVIRT
    assert old.problem == OWNED_BY_LIBVIRT
    assert old.tap_fds == 1


def test_proxmox_8() -> None:
    cl = parse(PROXMOX_8)
    assert cl.name == "web1" and cl.uuid is None
    assert cl.smbios_uuid == "0b6e3a4c-9d2f-4c1e-8a7b-5f6e4d3c2b1a"
    assert cl.proxmox_vmid == "100" and cl.owner == "proxmox"
    qmp, event = cl.monitors
    assert (
        qmp.address == "unix:/run/qemu-server/100.qmp" and qmp.vmid == "100" and qmp.problem is None
    )
    assert event.address == "unix:/run/qmeventd.sock" and event.problem == CLIENT_MODE
    assert cl.taps == ["tap100i0", "tap100i1"]  # qga is a chardev without -mon: not a monitor


def test_plain_forms() -> None:
    q = "qemu-system-x86_64"
    cl = parse([q, "-qmp", "unix:/var/run/vm/a.sock,server=on,wait=off", "-name", "a"])
    assert [m.address for m in cl.usable_monitors] == ["unix:/run/vm/a.sock"]
    cl = parse([q, "-qmp", "unix:/tmp/b.sock,server,nowait", "-nodefaults", "-uuid", "X-Y"])
    assert cl.usable_monitors[0].address == "unix:/tmp/b.sock" and cl.uuid == "x-y"
    cl = parse([q, "--qmp-pretty", "tcp:127.0.0.1:4444,server", "-S"])
    assert (
        cl.usable_monitors[0].address == "tcp:127.0.0.1:4444"
        and cl.usable_monitors[0].source == "-qmp-pretty"
    )
    cl = parse([q, "-qmp", "tcp::4445,server=on,wait=off"])
    assert cl.usable_monitors[0].address == "tcp:127.0.0.1:4445"
    cl = parse([q, "-qmp", "tcp:[::1]:4446,server,nowait"])
    assert cl.usable_monitors[0].address == "tcp:[::1]:4446"
    cl = parse([q, "-qmp", "unix:/tmp/c.sock"])  # no server: QEMU connects out
    assert cl.monitors[0].problem == CLIENT_MODE and cl.problem == "no_monitor"
    cl = parse([q, "-qmp", "stdio"])
    assert cl.monitors[0].problem == NOT_A_SOCKET
    cl = parse([q, "-chardev", "socket,id=m0,path=/run/m0.sock,server=on,wait=off",
                "-mon", "chardev=m0,mode=control,pretty=on"])  # fmt: skip
    assert (
        cl.usable_monitors[0].address == "unix:/run/m0.sock"
        and cl.usable_monitors[0].chardev == "m0"
    )
    cl = parse(
        [
            q,
            "-chardev",
            "socket,id=m1,path=/run/m1.sock,server=on,wait=off",
            "-mon",
            "m1,mode=control",
        ]
    )
    assert cl.usable_monitors[0].address == "unix:/run/m1.sock"
    cl = parse([q, "-chardev", "socket,id=h,path=/run/h.sock,server=on,wait=off", "-mon", "h"])
    assert cl.monitors == [] and cl.problem == "no_monitor"  # -mon defaults to HMP
    cl = parse(
        [
            q,
            "-chardev",
            "socket,id=t,host=127.0.0.1,port=5555,server=on,wait=off",
            "-mon",
            "chardev=t,mode=control",
        ]
    )
    assert cl.usable_monitors[0].address == "tcp:127.0.0.1:5555"
    cl = parse([q, "-qmp", "unix:rel.sock,server=on,wait=off"])
    assert cl.monitors[0].problem == RELATIVE_PATH
    cl = parse([q, "-qmp", "unix:rel.sock,server=on,wait=off"], cwd="/var/run/x")
    assert cl.monitors[0].address == "unix:/run/x/rel.sock"
    cl = parse(
        [q, "-netdev", "tap,id=n0,ifname=qtap0,script=no,downscript=no", "-nic", "tap,ifname=qtap1"]
    )
    assert cl.taps == ["qtap0", "qtap1"]
    cl = parse([q, "-name", "guest=with,,comma,debug-threads=on"])
    assert cl.name == "with,comma"


def test_paths() -> None:
    assert (
        cmdline.normalize_path("/var/run/qemu-server/../qemu-server/1.qmp")
        == "/run/qemu-server/1.qmp"
    )
    assert cmdline.normalize_path("/var/running/x") == "/var/running/x"


def test_live_libvirt_argv() -> None:
    """The argv of a domain libvirt 9.0 started (``/proc/PID/cmdline``, one argument a line)."""
    argv = (Path(__file__).parent / "golden" / "libvirt-cmdline.txt").read_text().splitlines()
    cl = parse(argv)
    assert cl.name == "prep14" and cl.owner == "libvirt" and cl.problem is None
    assert [m.address for m in cl.usable_monitors] == [
        "unix:/var/lib/libvirt/qemu/prep14-extra.qmp"
    ]
    assert [m.problem for m in cl.monitors if m.chardev == "charmonitor"] == [FD_PASSED]
    assert cl.tap_fds == 1 and cl.taps == []
