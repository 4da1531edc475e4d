"""``qmp-exporter shell ADDRESS``: a QMP shell in the spirit of the 2009 ``qmp-shell``.

Type ``command key=value ...``; values are JSON when they parse as JSON, else strings
(``query-block``, ``human-monitor-command command-line="info status"``, ``x={"a": [1, 2]}``).
Dotted keys nest: ``a.b=1`` sends ``{"a": {"b": 1}}``. A line starting with ``{`` is sent
as a whole QMP command object. Responses are pretty-printed; events that arrived since the
last command are shown as one ``event:`` line each.

Read-only unless ``--allow-write``: only ``query-*`` commands are sent. With
``--allow-write`` the shell asks ``[y/N]`` on the terminal before each command that may
change the VM; with piped input (one command a line, no prompt) it needs ``--yes`` as well.

Responses and events go to stdout; errors (QEMU's, refusals, typing mistakes) to stderr.
Nothing the monitor sent reaches the terminal raw: control characters (an ESC sequence in an
event name, an error text or the version) are shown escaped (:mod:`.text`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TextIO, TypeVar

from qmp_exporter.qmp import (
    CommandError,
    ConnectionClosedError,
    Event,
    QMPClient,
    QMPError,
    connect,
    is_read_only,
)
from qmp_exporter.tools.shell_editor import Completer, save_history, set_up_readline
from qmp_exporter.tools.text import printable, printable_json

T = TypeVar("T")

PROMPT = "(QEMU) "
DEFAULT_TIMEOUT = 5.0
_QUIT = frozenset({"quit", "exit", "q"})
_HELP = """\
  COMMAND [KEY=VALUE ...]   run a QMP command (VALUE is JSON when it parses, else a string)
  {"execute": ...}          send a whole command object
  (empty line)              show events that arrived
  help                      this text
  quit, exit, Ctrl-D        leave
"""


class ShellSyntaxError(ValueError):
    """A line the shell cannot turn into a QMP command."""


# -- parsing a line ----------------------------------------------------------------------


def split_words(line: str) -> list[str]:
    """Split at white space outside JSON strings, objects and arrays: ``x={"a": 1}`` is one word."""
    words: list[str] = []
    current: list[str] = []
    depth = 0
    in_string = escaped = False
    for char in line:
        if in_string:
            current.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char.isspace() and depth == 0:
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(char)
        if char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]" and depth > 0:
            depth -= 1
    if in_string or depth:
        raise ShellSyntaxError("unbalanced quotes or brackets")
    if current:
        words.append("".join(current))
    return words


def parse_value(text: str) -> Any:
    """JSON when ``text`` parses as JSON (``5``, ``true``, ``"a b"``, ``[1]``), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_command_line(line: str) -> tuple[str, dict[str, Any]]:
    """Turn ``command key=value ...`` (or a JSON command object) into (command, arguments)."""
    line = line.strip()
    if line.startswith("{"):
        try:
            message = json.loads(line)
        except ValueError as err:
            raise ShellSyntaxError(f"not a JSON object: {err}") from err
        command = message.get("execute") if isinstance(message, dict) else None
        arguments = message.get("arguments", {}) if isinstance(message, dict) else None
        if not isinstance(command, str) or not isinstance(arguments, dict):
            raise ShellSyntaxError('expected {"execute": "COMMAND", "arguments": {...}}')
        return command, arguments
    words = split_words(line)
    if not words:
        raise ShellSyntaxError("empty command")
    command, arguments = words[0], {}
    for word in words[1:]:
        key, sep, text = word.partition("=")
        if not sep or not key:
            raise ShellSyntaxError(f"{word!r}: expected KEY=VALUE")
        _set_nested(arguments, key.split("."), parse_value(text), word)
    return command, arguments


def _set_nested(target: dict[str, Any], path: list[str], value: Any, word: str) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict) or not part:
            raise ShellSyntaxError(f"{word!r}: key {part!r} is already a value")
    if path[-1] in target or not path[-1]:
        raise ShellSyntaxError(f"{word!r}: key given twice or empty")
    target[path[-1]] = value


# -- output ------------------------------------------------------------------------------


def format_response(value: Any) -> str:
    """A command's answer, pretty-printed as JSON (control characters escaped)."""
    return printable_json(value)


def format_event(event: Event) -> str:
    """One line: ``event: NAME TIME {data}`` (UTC time as QEMU stamped it; control
    characters escaped)."""
    when = "-"
    if event.timestamp is not None:
        when = datetime.fromtimestamp(event.timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    data = f" {printable_json(event.data, indent=None)}" if event.data else ""
    return f"event: {printable(event.name)} {when}{data}"


def _lines(text: str) -> str:
    """``text`` for the terminal: its lines kept, every other control character escaped
    (what a monitor sent may be in it: an error's text, a version, an event's name)."""
    return "\n".join(printable(line) for line in text.split("\n"))


# -- the session -------------------------------------------------------------------------


class _LoopThread:
    """An asyncio loop in a daemon thread, so events are read while the prompt waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


async def _drain(client: QMPClient) -> list[Event]:
    events = []
    while client.events is not None and (event := client.events.get_nowait()) is not None:
        events.append(event)
    return events


async def _command_names(client: QMPClient) -> list[str]:
    try:
        answer = await client.execute("query-commands")
    except CommandError:
        return []
    if not isinstance(answer, list):
        return []
    return sorted(  # readline lists these on the terminal: printable names only
        c["name"]
        for c in answer
        if isinstance(c, dict) and isinstance(c.get("name"), str) and c["name"].isprintable()
    )


class _Shell:
    """One interactive or piped session on one connection."""

    def __init__(
        self,
        runner: _LoopThread,
        client: QMPClient,
        *,
        interactive: bool,
        allow_write: bool,
        assume_yes: bool,
        stdin: TextIO,
        stdout: TextIO,
        stderr: TextIO,
    ) -> None:
        self.runner = runner
        self.client = client
        self.interactive = interactive
        self.allow_write = allow_write
        self.assume_yes = assume_yes
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.failures = 0
        #: True once the connection ended under a command (QEMU quit or crashed).
        self.lost = False
        #: The readline module when it manages the terminal's input (completion, history).
        self.readline: Any = None

    def say(self, text: str) -> None:
        self.stdout.write(_lines(text) + "\n")
        self.stdout.flush()

    def complain(self, text: str) -> None:
        self.failures += 1
        self.stderr.write(_lines(text) + "\n")
        self.stderr.flush()

    def show_events(self) -> None:
        for event in self.runner.run(_drain(self.client)):
            self.say(format_event(event))

    def read_line(self) -> str | None:
        """The next line, or ``None`` at end of input."""
        if self.interactive and self.stdin is sys.stdin:
            try:
                return input(PROMPT)
            except EOFError:
                self.say("")
                return None
            except KeyboardInterrupt:  # like a shell: drop the line, keep going
                self.say("")
                return ""
        if self.interactive:
            self.stdout.write(PROMPT)
            self.stdout.flush()
        line = self.stdin.readline()
        return line if line else None

    def confirm(self, command: str, arguments: dict[str, Any]) -> bool:
        """Whether a command that may change the VM is to be sent."""
        if not self.allow_write:
            self.complain(
                f"refused: {command!r} may change the VM and this shell is read-only "
                "(only query-* commands are sent); start it with --allow-write to send it"
            )
            return False
        if not self.interactive:
            if self.assume_yes:
                return True
            self.complain(
                f"refused: {command!r} may change the VM; with piped input --allow-write "
                "also needs --yes (there is no terminal to confirm on)"
            )
            return False
        shown = f"{command} {json.dumps(arguments)}" if arguments else command
        self.stdout.write(f"{shown} may change the VM. Send it? [y/N] ")
        self.stdout.flush()
        try:
            answer = input() if self.stdin is sys.stdin else self.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            answer = ""
            self.say("")
        self._forget_answer(answer)
        if answer.strip().lower() in ("y", "yes"):
            return True
        self.say("not sent")
        return False

    def _forget_answer(self, answer: str) -> None:
        """Keep a y/N answer out of the history (readline adds every non-empty line)."""
        if self.readline is None or not answer.strip():
            return
        length = self.readline.get_current_history_length()
        if length and self.readline.get_history_item(length) == answer:
            self.readline.remove_history_item(length - 1)

    def run_line(self, line: str) -> bool:
        """Handle one line; ``False`` when the session is over."""
        text = line.strip()
        if not text or text.startswith("#"):
            self.show_events()
            return True
        if text in _QUIT:
            return False
        if text in ("help", "?"):
            self.say(_HELP.rstrip())
            return True
        try:
            command, arguments = parse_command_line(text)
        except ShellSyntaxError as err:
            self.complain(f"syntax error: {err}")
            return True
        self.show_events()
        if not is_read_only(command) and not self.confirm(command, arguments):
            return True
        try:
            answer = self.runner.run(self.client.execute(command, arguments or None))
        except CommandError as err:
            self.complain(f"error: {err.error_class}: {err.desc}")
        except ConnectionClosedError as err:
            self.show_events()
            self.complain(f"connection closed: {err}")
            self.lost = True
            return False
        except QMPError as err:
            self.complain(f"error: {err}")
        except KeyboardInterrupt:
            self.complain(f"interrupted: stopped waiting for the answer to {command}")
        else:
            self.say(format_response(answer))
        self.show_events()
        return not self.client.closed

    def loop(self) -> None:
        while (line := self.read_line()) is not None:
            if not self.run_line(line):
                break
        self.show_events()


def run_shell(
    address: str,
    allow_write: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    *,
    assume_yes: bool = False,
    stderr: TextIO | None = None,
) -> int:
    """Run the shell until end of input or ``quit``.

    Returns 0, or 1 when the connection failed or was lost, or (piped input) any command failed.
    """
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    interactive = stdin.isatty()
    runner = _LoopThread()
    try:
        try:
            client = runner.run(connect(address, timeout, allow_write=allow_write))
        except QMPError as err:
            stderr.write(f"qmp-exporter shell: {_lines(str(err))}\n")
            return 1
        try:
            commands = runner.run(_command_names(client))
            shell = _Shell(
                runner,
                client,
                interactive=interactive,
                allow_write=allow_write,
                assume_yes=assume_yes,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
            readline = None
            if interactive:
                if stdin is sys.stdin:
                    completer = Completer(
                        commands,
                        lambda: runner.run(client.execute("query-qmp-schema")),
                    )
                    readline = shell.readline = set_up_readline(completer)
                _banner(shell, client, address, allow_write)
            try:
                shell.loop()
            finally:
                if readline is not None:
                    save_history(readline)
            if shell.lost or (shell.failures and not interactive):
                return 1
            return 0
        finally:
            runner.run(client.close())
    finally:
        runner.stop()


def _banner(shell: _Shell, client: QMPClient, address: str, allow_write: bool) -> None:
    version = client.greeting.version if client.greeting else None
    mode = (
        "writes allowed, each confirmed"
        if allow_write
        else "read-only: query-* commands only (--allow-write to change that)"
    )
    shell.say(f"Connected to QEMU {version or '(version unknown)'} at {address}; {mode}.")
    shell.say("Tab completes commands and argument names; 'help' for help; Ctrl-D quits.")


# -- command line ------------------------------------------------------------------------


def add_shell_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``shell`` subcommand's arguments to ``parser``."""
    parser.add_argument("address", metavar="ADDRESS", help="unix:/PATH, /PATH or tcp:HOST:PORT")
    parser.add_argument(
        "--allow-write",
        action="store_true",
        help="also send commands that may change the VM (each one confirmed on the terminal)",
    )
    parser.add_argument(
        "--yes",
        action="store_true",
        help="with --allow-write and piped input: send such commands without confirmation",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds for connecting and for each command (default {DEFAULT_TIMEOUT:g})",
    )


def run_shell_command(args: argparse.Namespace) -> int:
    """Run ``shell`` from parsed arguments (see :func:`add_shell_arguments`)."""
    return run_shell(args.address, args.allow_write, args.timeout, assume_yes=args.yes)
