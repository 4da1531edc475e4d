"""Hostile input: fuzzed framing and answers, hostile names and labels, absurd values.

Whatever a monitor sends, the result is an error for that VM (reason ``protocol``), never a
crash, and the exposition stays valid (``promtool check metrics``).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmp_exporter.polling.answers import MalformedAnswerError, parse_status, parse_vnc
from qmp_exporter.qmp import parse_version
from qmp_exporter.qmp.errors import LineTooLongError, ProtocolError
from qmp_exporter.qmp.framing import LineDecoder, decode_line
from tests.helpers import fault_monitors as faults
from tests.helpers.exporter import ExporterProcess, parse_samples, wait_for

ALLOWED_COMMANDS = re.compile(r"^(qmp_capabilities|query-[a-z0-9-]+)$")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=5)


# --- the line decoder -----------------------------------------------------------------------


@given(st.lists(json_objects, max_size=6), st.data())
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_decoder_output_does_not_depend_on_how_bytes_are_split(messages, data) -> None:
    stream = b"".join(json.dumps(m).encode() + data.draw(st.sampled_from([b"\n", b"\r\n"]))
                      for m in messages)  # fmt: skip
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = LineDecoder()
    decoded: list[Any] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        decoded += decoder.feed(stream[previous:cut])
        previous = cut
    assert decoded == messages
    assert decoder.pending == 0


@given(st.lists(st.binary(max_size=300), max_size=8))
@settings(max_examples=150)
def test_decoder_raises_only_protocol_errors_and_stays_bounded(chunks) -> None:
    decoder = LineDecoder(max_line=256)
    for chunk in chunks:
        try:
            messages = decoder.feed(chunk)
        except ProtocolError:
            return  # the connection is dropped on the first error
        assert all(isinstance(m, dict) for m in messages)
        assert decoder.pending <= 256


@pytest.mark.parametrize(
    "line",
    [
        b"[" * 100_000,  # nesting deeper than the JSON decoder's recursion limit
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"return": ' + b"9" * 5000 + b"}",  # more digits than Python converts
        b'{"return": 1e99999}',
        b"\xff\xfe\x00garbage",
        b'"just a string"',
        b"[1, 2]",
        b"",
    ],
    ids=["deep-array", "deep-object", "5000-digits", "1e99999", "binary", "string", "array", "x"],
)
def test_absurd_lines_are_protocol_errors(line: bytes) -> None:
    if not line:
        with pytest.raises(ProtocolError):
            decode_line(line)
        return
    try:
        message = decode_line(line)
    except ProtocolError:
        return
    # Accepted lines are plain objects (1e99999 parses as infinity, a valid float).
    assert isinstance(message, dict)


def test_a_line_past_the_limit_is_refused_before_it_is_buffered() -> None:
    decoder = LineDecoder(max_line=1024)
    with pytest.raises(LineTooLongError):
        for _ in range(10):
            decoder.feed(b"x" * 512)
    assert decoder.pending <= 1024 + 512


# --- answers of the wrong shape ----------------------------------------------------------


@given(json_values)
@settings(max_examples=150)
def test_status_and_vnc_answers_of_any_shape_are_parsed_or_refused(answer) -> None:
    for parse in (parse_status, parse_vnc):
        with contextlib.suppress(MalformedAnswerError):
            parse(answer)


@given(json_objects)
@settings(max_examples=150)
def test_version_answers_of_any_shape_never_raise(answer) -> None:
    version, package = parse_version(answer)
    assert version is None or isinstance(version, str)
    assert isinstance(package, str)


# --- through the real exporter -------------------------------------------------------------


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is required (scripts/install-test-deps.sh)")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


@pytest.fixture
def monitor_loop() -> Iterator[tuple[faults.MonitorLoop, Path]]:
    directory = Path(tempfile.mkdtemp(prefix="qmpx-hostile-", dir="/tmp"))
    with faults.MonitorLoop() as loop:
        yield loop, directory
        for monitor in loop.monitors:
            assert all(ALLOWED_COMMANDS.match(c) for c in monitor.commands())
    shutil.rmtree(directory, ignore_errors=True)


HOSTILE_TEXTS = [
    'quote " inside',
    "back\\slash and \\n literal",
    "new\nline",
    "tab\tand carriage\rreturn",
    "non-ASCII: Grüße, 日本語, emoji 🚀",
    '} {vm="fake"} 1\n# TYPE fake counter',
]


def test_hostile_names_and_labels_give_valid_exposition(monitor_loop) -> None:
    loop, directory = monitor_loop
    entries = []
    for index, text in enumerate(HOSTILE_TEXTS):
        monitor = loop.start(faults.make_healthy(str(directory / f"h{index}.sock"), name=text))
        entries.append({
            "name": f"{text} #{index}",
            "address": monitor.address,
            "labels": {"owner": text, "site": f"x{index}"},
        })  # fmt: skip
    config = {"poll_interval": "500ms", "timeout": "300ms", "monitors": entries}
    with ExporterProcess(config) as exp:
        names = [e["name"] for e in entries]
        wait_for(lambda: all(exp.value("qemu_up", vm=n) == 1 for n in names))
        text = exp.text()
    promtool_check(text)
    samples = parse_samples(text)
    info = {dict(labels)["vm"]: dict(labels) for (name, labels) in samples
            if name == "qemu_vm_info"}  # fmt: skip
    for index, hostile in enumerate(HOSTILE_TEXTS):
        labels = info[f"{hostile} #{index}"]
        assert labels["owner"] == hostile
        assert labels["name"] == hostile
    assert not any(name == "fake" for (name, _) in samples)


HOSTILE_ANSWERS: dict[str, dict[str, Any]] = {
    "status-running-string": {"query-status": {"running": "yes", "status": "running"}},
    "status-huge-number": {"query-status": {"running": True, "status": 10**30}},
    "status-list": {"query-status": [1, 2, 3]},
    "vnc-clients-number": {"query-vnc": {"enabled": True, "clients": 1e308}},
    "vnc-enabled-null": {"query-vnc": {"enabled": None}},
    "version-array": {"query-version": ["7", "2"]},
    "name-number": {"query-name": {"name": 42}},
}


async def _raw_answer(session, request) -> None:
    """A query-status answer with a 5,000-digit integer: valid JSON Python will not convert."""
    await session.send_raw(b'{"return": {"running": ' + b"7" * 5000 + b'}, "id": '
                           + json.dumps(request.get("id")).encode() + b"}\r\n")  # fmt: skip


async def _deep_answer(session, request) -> None:
    """A query-status answer nested deeper than the JSON decoder's recursion limit."""
    await session.send_raw(b'{"return": ' + b"[" * 200_000 + b"\r\n")


def test_absurd_answers_are_protocol_errors_for_that_vm_only(monitor_loop) -> None:
    loop, directory = monitor_loop
    monitors = {
        name: loop.start(faults.make_answering(str(directory / f"a{i}.sock"), answers))
        for i, (name, answers) in enumerate(HOSTILE_ANSWERS.items())
    }
    monitors["digits-5000"] = loop.start(
        faults.make_answering(str(directory / "digits.sock"), {"query-status": _raw_answer})
    )
    monitors["deep-nesting"] = loop.start(
        faults.make_answering(str(directory / "deep.sock"), {"query-status": _deep_answer})
    )
    monitors["healthy"] = loop.start(faults.make_healthy(str(directory / "ok.sock")))
    config = {
        "poll_interval": "500ms",
        "timeout": "300ms",
        "monitors": [{"name": n, "address": m.address} for n, m in monitors.items()],
    }
    bad = [n for n in monitors if n != "healthy"]

    def protocol_errors(exp: ExporterProcess, vm: str) -> float:
        return exp.value("qmp_exporter_poll_errors_total", vm=vm, reason="protocol") or 0

    with ExporterProcess(config) as exp:
        try:
            wait_for(lambda: all(protocol_errors(exp, vm) >= 2 for vm in bad), timeout=20)
        except AssertionError:
            raise AssertionError({vm: protocol_errors(exp, vm) for vm in bad}) from None
        text = exp.text()
        assert exp.process is not None and exp.process.poll() is None
        log = exp.log()
    promtool_check(text)
    samples = parse_samples(text)
    for vm in bad:
        assert samples[("qemu_up", (("vm", vm),))] == 0, vm
        others = [
            samples.get(("qmp_exporter_poll_errors_total", (("reason", r), ("vm", vm))), 0)
            for r in ("connect", "busy", "timeout", "command")
        ]
        assert sum(others) == 0, (vm, others)
    assert samples[("qemu_up", (("vm", "healthy"),))] == 1
    # No unhandled error anywhere (asyncio logs one at ERROR when a protocol callback raises).
    assert "level=ERROR" not in log, log
