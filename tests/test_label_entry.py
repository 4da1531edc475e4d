"""Every label value is made valid UTF-8 and bounded where it enters (round 3's D1, D4, D7):
a command line, a socket's file name and a monitor's JSON can neither make ``/metrics`` or
``/`` fail for every VM, nor stop discovery, nor grow the exposition without bound."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from qmp_exporter.host import cmdline
from qmp_exporter.textformat import CUT_MARKER, MAX_LABEL_CHARS, label_text
from tests.helpers import fault_monitors as faults
from tests.helpers.exporter import ExporterProcess, parse_samples, wait_for
from tests.helpers.images import wait_listening
from tests.helpers.qemu_versions import QemuBuild


def test_label_text_replaces_lone_surrogates_and_bounds():
    assert label_text("web-01") == "web-01"
    assert label_text("x\udcff") == "x\ufffd"
    assert label_text("\ud83d\ude00 ok") == "\ufffd\ufffd ok"  # a pair left unjoined
    assert label_text("y" * 1000) == "y" * (MAX_LABEL_CHARS - 1) + CUT_MARKER
    assert label_text("é" * 200, 10).encode()  # encodable, cut by characters


def test_a_command_line_is_read_as_valid_bounded_text():
    raw = b"qemu-system-x86_64\0-name\0x\xff\0-uuid\0" + b"u" * 20_000 + b"\0"
    line = cmdline.parse(cmdline.split_cmdline(raw))
    assert line.name == "x\ufffd"
    assert line.uuid is not None and len(line.uuid) <= MAX_LABEL_CHARS


def test_huge_and_deep_command_lines_are_one_bad_option_not_a_failure():
    deep = '{"type":"tap","ifname":"t0","x":' + "[" * 2000 + "]" * 2000 + "}"
    huge_name = "n" * 131_000
    argv = ["qemu-system-x86_64", "-netdev", deep, *(["-name", huge_name] * 13),
            "-qmp", "unix:/run/q.qmp,server=on"]  # fmt: skip
    line = cmdline.parse(argv)  # no RecursionError, no label of 131 kB
    assert line.taps == [] and line.name is None
    assert [m.address for m in line.usable_monitors] == ["unix:/run/q.qmp"]
    assert cmdline.parse(["qemu", "-name", "n" * 1000]).name == "n" * 127 + CUT_MARKER


def test_a_socket_path_that_cannot_be_a_socket_is_not_a_monitor():
    long_path = "/run/" + "d" * 200 + ".qmp"
    (monitor,) = cmdline.parse(["qemu", "-qmp", f"unix:{long_path},server=on"]).monitors
    assert (monitor.address, monitor.problem) == (None, cmdline.NOT_A_SOCKET)


def _bind(path: bytes) -> socket.socket:
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(4)
    return server


def test_one_bad_label_in_each_entry_harms_no_other_vm(qemu_binary: QemuBuild, tmp_path: Path):
    """D1 in its three forms at once: a QEMU started with ``-name $'x\\xff'`` (found by the
    process scan), a monitor answering ``query-name`` with ``"\\udcff"``, a socket named
    ``vm\\xff.qmp`` under a glob. ``/metrics`` and ``/`` answer 200 with the others' series,
    and periodic discovery goes on: a QEMU started later is watched."""
    short = Path(os.path.realpath("/tmp")) / f"lbl-{os.getpid()}"
    short.mkdir()
    started: list[subprocess.Popen[bytes]] = []

    def start_qemu(name: bytes, sock: Path) -> None:
        argv = qemu_binary.command("-M", "none", "-display", "none", "-nodefaults")
        argv += ["-name", name.decode("utf-8", "surrogateescape")]
        argv += ["-qmp", f"unix:{sock},server=on,wait=off"]
        started.append(subprocess.Popen(argv, env=qemu_binary.environ(), stderr=subprocess.DEVNULL))
        wait_listening(str(sock), timeout=20)

    globbed = short / "glob"
    globbed.mkdir()
    servers = [_bind(os.fsencode(globbed) + b"/vm\xff.qmp")]
    try:
        start_qemu(b"x\xff", short / "bad.qmp")
        with faults.MonitorLoop() as loop:
            monitor = loop.start(
                faults.ScriptedMonitor(
                    str(short / "sur.qmp"), handlers={"query-name": {"name": "\udcff"}}
                )
            )
            config = {
                "poll_interval": "1s",
                "monitors": [{"name": "surrogate", "address": monitor.address, "collectors": []}],
                "discovery": [
                    {"glob": f"{globbed}/*.qmp", "rescan": "1s", "collectors": []},
                    {"processes": True, "rescan": "1s", "collectors": []},
                ],
            }
            with ExporterProcess(config, log_level="info") as exporter:

                def both_served() -> str:
                    text = exporter.text()
                    wanted = ('qemu_up{vm="x\ufffd"} 1', 'qemu_up{vm="surrogate"} 1')
                    return text if all(line in text for line in wanted) else ""

                text = wait_for(both_served, 20, "the process found by its command line")
                samples = parse_samples(text)
                assert samples[("qemu_up", (("vm", "x\ufffd"),))] == 1
                assert samples[("qemu_up", (("vm", "surrogate"),))] == 1
                info = [labels for name, labels in samples if name == "qemu_vm_info"]
                assert (("name", "\ufffd"), ("uuid", ""), ("vm", "surrogate")) in info
                assert exporter.get("/").status_code == 200
                exporter.wait_for_log(r"vm\\udcff\.qmp: the path is not UTF-8", 10)

                start_qemu(b"later", short / "later.qmp")  # discovery still runs
                wait_for(
                    lambda: exporter.value("qemu_up", vm="later") == 1, 20, "a QEMU started later"
                )
                assert exporter.get("/").status_code == 200
    finally:
        for server in servers:
            server.close()
        for process in started:
            process.kill()
            process.wait()
        shutil.rmtree(short, ignore_errors=True)
