"""``qmp-exporter shell``: piped against a real QEMU and a recording monitor; TTY in tmux."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qmp_exporter.tools.shell import (
    ShellSyntaxError,
    parse_command_line,
    run_shell,
    split_words,
)
from qmp_exporter.tools.shell_editor import Completer, argument_names
from qmp_exporter.tools.text import printable, printable_json
from tests.helpers.qemu import qmp_command
from tests.helpers.scripted_monitor import ScriptedMonitor

ROOT = Path(__file__).resolve().parent.parent
#: The shell as a user runs it: the real command line.
SHELL = [sys.executable, "-m", "qmp_exporter", "shell"]


def _shell_argv() -> list[str]:
    return SHELL


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("PYTHONSTARTUP", None)
    return env


def run_piped(tmp_path: Path, args: list[str], lines: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_shell_argv(), *args],
        input=lines,
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(tmp_path),
        cwd=tmp_path,
    )


@pytest.fixture
def vm(qemu_factory):
    """A running VM with VNC and two monitors: the shell's, and the test's own."""
    return qemu_factory(name="vm-shell", monitors=2, vnc=True)


@pytest.fixture
def recorder(tmp_path):
    """A scripted monitor (modern dialect) that records every command it receives."""
    handlers = {"query-block": [], "stop": {}}
    with ScriptedMonitor(str(tmp_path / "rec.qmp"), handlers=handlers).in_thread() as monitor:
        yield monitor


# -- parsing ------------------------------------------------------------------------------


def test_key_value_values_are_json_when_they_parse():
    command, arguments = parse_command_line(
        'blockdev-add a=1 b=true c="x y" d={"k": [1, 2]} e=plain f.g=2 f.h=null i=[1,"a b"]'
    )
    assert command == "blockdev-add"
    assert arguments == {
        "a": 1,
        "b": True,
        "c": "x y",
        "d": {"k": [1, 2]},
        "e": "plain",
        "f": {"g": 2, "h": None},
        "i": [1, "a b"],
    }


def test_json_object_lines_and_syntax_errors():
    assert parse_command_line('{"execute": "query-status"}') == ("query-status", {})
    assert split_words('a  b="c d"  e={"f g": 1}') == ["a", 'b="c d"', 'e={"f g": 1}']
    for bad in ("cmd novalue", 'cmd x="open', "cmd x={", "cmd a=1 a=2", "cmd =1", '{"x": 1}'):
        with pytest.raises(ShellSyntaxError):
            parse_command_line(bad)


def test_argument_names_from_the_schema():
    schema = [
        {"name": "query-stats", "meta-type": "command", "arg-type": "1", "ret-type": "[2]"},
        {
            "name": "1",
            "meta-type": "object",
            "tag": "target",
            "members": [{"name": "target", "type": "3"}, {"name": "providers", "type": "[4]"}],
            "variants": [{"case": "vcpu", "type": "5"}, {"case": "vm", "type": "0"}],
        },
        {"name": "5", "meta-type": "object", "members": [{"name": "vcpus", "type": "[str]"}]},
        {"name": "0", "meta-type": "object", "members": []},
        {"name": "stop", "meta-type": "command", "arg-type": "0", "ret-type": "0"},
    ]
    assert argument_names(schema) == {"query-stats": ["target", "providers", "vcpus"], "stop": []}
    completer = Completer(["query-stats", "query-status", "stop"], lambda: schema)
    assert completer.matches("", "query-stat") == ["query-stats ", "query-status "]
    assert completer.matches("query-stats ", "") == ["target=", "providers=", "vcpus="]
    assert completer.matches("query-stats target=vm ", "") == ["providers=", "vcpus="]
    assert completer.matches("query-stats ", "target=v") == []


# -- piped mode -----------------------------------------------------------------------------


@pytest.mark.qemu
def test_piped_query_status_is_pretty_printed_without_prompt(vm, tmp_path):
    # QEMU before 10.0 adds "singlestep": false (docs/qemu-versions.md): the VM's own answer,
    # from the test's monitor, is what the shell must print.
    status = qmp_command(vm.qmp_paths[1], "query-status")
    assert status["status"] == "running"
    result = run_piped(tmp_path, [vm.qmp_address()], "query-status\nquery-name\n")
    assert result.returncode == 0, result.stderr
    expected = (
        json.dumps(status, indent=2) + "\n" + json.dumps({"name": "vm-shell"}, indent=2) + "\n"
    )
    assert result.stdout == expected
    assert result.stderr == ""


@pytest.mark.qemu
def test_qemu_errors_show_class_and_desc_and_fail_the_exit_status(vm, tmp_path):
    result = run_piped(tmp_path, [vm.qmp_address()], "query-nothing\nquery-status\n")
    assert result.returncode == 1
    assert "error: CommandNotFound: The command query-nothing has not been found" in result.stderr
    assert '"status": "running"' in result.stdout


def test_stop_is_refused_with_the_hint_and_nothing_is_sent(recorder, tmp_path):
    result = run_piped(tmp_path, [recorder.address], "stop\nquery-status\n")
    assert result.returncode == 1
    assert "'stop' may change the VM" in result.stderr
    assert "--allow-write" in result.stderr
    assert '"status": "running"' in result.stdout  # the shell went on after the refusal
    assert recorder.commands() == ["qmp_capabilities", "query-commands", "query-status"]


def test_piped_writes_need_yes_as_well(recorder, tmp_path):
    result = run_piped(tmp_path, ["--allow-write", recorder.address], "stop\n")
    assert result.returncode == 1
    assert "--yes" in result.stderr
    assert "stop" not in recorder.commands()


def test_arguments_reach_the_monitor_as_parsed(recorder, tmp_path):
    line = 'query-block x=1 y="a b" z={"k": [true]} w=text\n'
    result = run_piped(tmp_path, [recorder.address], line)
    assert result.returncode == 0, result.stderr
    request = recorder.received[-1]
    assert request["execute"] == "query-block"
    assert request["arguments"] == {"x": 1, "y": "a b", "z": {"k": [True]}, "w": "text"}


def test_the_2009_dialect_works_without_negotiation(tmp_path):
    # The seed's own QEMU: no qmp_capabilities (CommandNotFound), version as a string.
    monitor = ScriptedMonitor(str(tmp_path / "seed.qmp"), dialect="2009")
    with monitor.in_thread():
        result = run_piped(tmp_path, [monitor.address], "query-version\n")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"qemu": "0.12.50", "package": ""}


@pytest.mark.qemu
def test_allow_write_and_yes_really_stop_the_vm_and_show_the_event(vm, tmp_path):
    result = run_piped(
        tmp_path, ["--allow-write", "--yes", vm.qmp_address()], "stop\nquery-status\n"
    )
    assert result.returncode == 0, result.stderr
    assert "event: STOP " in result.stdout
    assert qmp_command(vm.qmp_paths[1], "query-status")["status"] == "paused"


@pytest.mark.qemu
def test_events_that_arrive_between_commands_are_shown(vm, tmp_path):
    process = subprocess.Popen(
        [*_shell_argv(), vm.qmp_address()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    try:
        process.stdin.write("query-name\n")
        process.stdin.flush()
        first = [process.stdout.readline() for _ in range(3)]
        assert json.loads("".join(first)) == {"name": "vm-shell"}
        # A VNC viewer connects while the shell waits for its next line.
        with socket.create_connection(("127.0.0.1", vm.vnc_port)) as viewer:
            viewer.recv(12)
            time.sleep(0.2)
        out, err = process.communicate("query-status\n", timeout=20)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("event: VNC_CONNECTED ")
    assert '"host": "127.0.0.1"' in lines[0]
    assert any(line.startswith("event: VNC_DISCONNECTED ") for line in lines)
    assert '"status": "running"' in out


def test_connect_failure_is_exit_status_1(tmp_path):
    result = run_piped(tmp_path, [f"unix:{tmp_path}/nothing.qmp"], "query-status\n")
    assert result.returncode == 1
    assert "no such socket" in result.stderr


# -- TTY mode in tmux ---------------------------------------------------------------------


class Tmux:
    """A private tmux server (own socket) running one command in a fixed-size pane."""

    def __init__(self, directory: Path, argv: list[str], env: dict[str, str]) -> None:
        self.tmux = shutil.which("tmux")
        if self.tmux is None:
            raise RuntimeError("tmux not found: run scripts/install-test-deps.sh")
        self.socket = directory / "tmux.sock"
        exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items() if k in _PASS_ENV)
        command = f"env {exports} " + " ".join(_quote(a) for a in argv)
        command += "; echo SHELL-EXIT=$?; sleep 30"
        self._run("new-session", "-d", "-x", "160", "-y", "50", command)

    def _run(self, *args: str) -> str:
        return subprocess.run(
            [self.tmux, "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout

    def send(self, *keys: str) -> None:
        self._run("send-keys", *keys)

    def screen(self) -> str:
        return self._run("capture-pane", "-p", "-S", "-100")

    def wait_for(self, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.05)
        raise AssertionError(f"{text!r} did not appear; screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run([self.tmux, "-S", str(self.socket), "kill-server"], capture_output=True)


_PASS_ENV = ("PATH", "PYTHONPATH", "XDG_STATE_HOME", "HOME", "TERM", "LANG")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


@pytest.mark.qemu
def test_tty_tab_completion_confirmation_and_history(vm, tmp_path, qemu_binary):
    env = _env(tmp_path)
    env["TERM"] = "xterm"
    tmux = Tmux(tmp_path, [*_shell_argv(), "--allow-write", vm.qmp_address()], env)
    try:
        tmux.wait_for("(QEMU)")  # capture-pane drops trailing spaces
        assert f"Connected to QEMU {qemu_binary.version}." in tmux.screen()
        tmux.send("query-statu", "Tab")
        tmux.wait_for("(QEMU) query-status")  # completed from query-commands
        tmux.send("Enter")
        tmux.wait_for('"status": "running"')
        # Argument names come from query-qmp-schema, variants included.
        tmux.send("query-stats ta", "Tab")
        tmux.wait_for("(QEMU) query-stats target=")
        tmux.send("vm pro", "Tab")
        tmux.wait_for("(QEMU) query-stats target=vm providers=")
        tmux.send("C-u")
        tmux.send("system_reset", "Enter")
        tmux.wait_for("system_reset may change the VM. Send it? [y/N]")
        tmux.send("Enter")  # the default is No
        tmux.wait_for("not sent")
        tmux.send("stop", "Enter")
        tmux.wait_for("stop may change the VM. Send it? [y/N]")
        tmux.send("n", "Enter")
        tmux.wait_for("[y/N] n\nnot sent")
        assert qmp_command(vm.qmp_paths[1], "query-status")["status"] == "running"
        tmux.send("stop", "Enter")
        tmux.wait_for("[y/N] n\nnot sent\n(QEMU) stop\nstop may change the VM. Send it? [y/N]")
        tmux.send("y", "Enter")
        tmux.wait_for("event: STOP ")
        assert qmp_command(vm.qmp_paths[1], "query-status")["status"] == "paused"
        tmux.send("C-d")
        tmux.wait_for("SHELL-EXIT=0")
        history = tmp_path / "state" / "qmp-exporter" / "shell_history"
        # The y/N answers are not in the history (readline folds the repeated "stop"; the
        # completed line keeps its space).
        assert history.read_text().splitlines() == ["query-status ", "system_reset", "stop"]
    finally:
        tmux.close()


@pytest.mark.qemu
def test_tty_history_that_cannot_be_written_is_harmless(vm, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = {**_env(tmp_path), "TERM": "xterm", "XDG_STATE_HOME": str(blocker)}
    tmux = Tmux(tmp_path, [*_shell_argv(), vm.qmp_address()], env)
    try:
        tmux.wait_for("(QEMU)")
        tmux.send("query-name", "Enter")
        tmux.wait_for('"name": "vm-shell"')
        tmux.send("C-d")
        tmux.wait_for("SHELL-EXIT=0")
        assert "Traceback" not in tmux.screen()
    finally:
        tmux.close()


# -- what the monitor sends reaches the terminal escaped (issue 23, D10) ----------------------

#: Retitle the window, clear the screen, forge an answer; C1 CSI and a right-to-left override.
HOSTILE = '\x1b]0;pwned\x07\x1b[2J\x1b[2K\x1b[1A\x1b[32m{"return": "forged"}\x9b31m\u202e'


class _Terminal(io.StringIO):
    """Input that says it is a terminal (the banner is shown), read line by line."""

    def isatty(self) -> bool:
        return True


def _raw_controls(text: str) -> list[str]:
    return sorted({c for c in text if not c.isprintable() and c != "\n"})


def test_nothing_a_monitor_sends_reaches_the_terminal_raw(tmp_path):
    async def greet(session):
        await session.event("EV" + HOSTILE, {"client": {"host": "h" + HOSTILE}})

    async def fail(session, request):
        await session.error(request, "CommandNotFound" + HOSTILE, "not found" + HOSTILE)

    version = {"qemu": "7.2 " + HOSTILE, "package": ""}  # the 2010 dialect's string version
    greeting = {"QMP": {"version": version, "capabilities": []}}
    monitor = ScriptedMonitor(
        str(tmp_path / "t.qmp"),
        dialect="2010",
        greeting=greeting,
        handlers={"query-foo": fail, "query-" + HOSTILE: []},
        on_connect=greet,
        name="n" + HOSTILE,
    )
    stdout, stderr = io.StringIO(), io.StringIO()
    with monitor.in_thread():
        status = run_shell(
            monitor.address,
            stdin=_Terminal("query-foo\n\nquery-name\n"),
            stdout=stdout,
            stderr=stderr,
        )
    out, err = stdout.getvalue(), stderr.getvalue()
    assert status == 0, err
    assert _raw_controls(out) == _raw_controls(err) == []
    assert r"Connected to QEMU 7.2 \x1b]0;pwned\x07\x1b[2J" in out
    assert r"event: EV\x1b]0;pwned\x07" in out
    assert r'"host": "h\u001b]0;pwned\u0007' in out  # the event's data: still JSON
    assert r"error: CommandNotFound\x1b]0;pwned" in err
    assert (
        r'not found\x1b]0;pwned\x07\x1b[2J\x1b[2K\x1b[1A\x1b[32m{"return": "forged"}\x9b31m\u202e'
        in err
    )
    answer = out[out.rindex("{\n") : out.rindex("\n}") + 2]  # the last answer, query-name's
    assert json.loads(answer) == {"name": "n" + HOSTILE}


def test_printable_escapes_every_control_character_and_keeps_the_rest() -> None:
    assert printable("plain: ü ✓ 日本") == "plain: ü ✓ 日本"
    assert printable("a\x1b[2J\x07\x7f\x9b\u202e\ud800\tb") == (
        r"a\x1b[2J\x07\x7f\x9b\u202e\ud800\tb"
    )
    text = printable_json({"k": "a\x1b\x9b\u2028\udcff ü"})
    assert _raw_controls(text) == []
    assert json.loads(text) == {"k": "a\x1b\x9b\u2028\udcff ü"}
    assert "ü" in text


def test_completion_offers_only_printable_names() -> None:
    schema = [
        {"name": "stop", "meta-type": "command", "arg-type": "A"},
        {"name": "A", "meta-type": "object", "members": [{"name": "ok"}, {"name": "x\x1b[2J"}]},
    ]
    assert argument_names(schema) == {"stop": ["ok"]}
