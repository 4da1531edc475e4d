"""Tab completion and history for ``qmp-exporter shell``'s line editor (readline).

Command names come from ``query-commands``; after the command, its argument names from
``query-qmp-schema``, fetched on first use. History lives in :func:`history_path`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qmp_exporter.qmp import QMPError

HISTORY_LENGTH = 1000


def history_path() -> Path:
    """``$XDG_STATE_HOME/qmp-exporter/shell_history`` (default ``~/.local/state/...``)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "qmp-exporter" / "shell_history"


def argument_names(schema: Any) -> dict[str, list[str]]:
    """Each command's argument names, from ``query-qmp-schema`` (members of the argument
    type and of its variants)."""
    if not isinstance(schema, list):
        return {}
    entries = {
        e["name"]: e for e in schema if isinstance(e, dict) and isinstance(e.get("name"), str)
    }

    def members(type_name: Any) -> list[str]:
        entry = entries.get(type_name)
        if not isinstance(entry, dict):
            return []
        names = [  # readline lists these on the terminal: printable names only
            m["name"]
            for m in entry.get("members", [])
            if isinstance(m, dict) and isinstance(m.get("name"), str) and m["name"].isprintable()
        ]
        for variant in entry.get("variants", []):
            if isinstance(variant, dict):
                names += [n for n in members(variant.get("type")) if n not in names]
        return names

    return {
        name: members(entry.get("arg-type"))
        for name, entry in entries.items()
        if isinstance(entry, dict) and entry.get("meta-type") == "command"
    }


class Completer:
    """Completes command names (from ``query-commands``) and, after the command, its
    argument names as ``key=`` (from ``query-qmp-schema``, fetched on first use)."""

    def __init__(self, commands: list[str], fetch_schema: Callable[[], Any]) -> None:
        self.commands = commands
        self._fetch_schema = fetch_schema
        self._arguments: dict[str, list[str]] | None = None
        self._matches: list[str] = []

    def arguments(self, command: str) -> list[str]:
        if self._arguments is None:
            try:
                self._arguments = argument_names(self._fetch_schema())
            except (QMPError, KeyboardInterrupt):
                self._arguments = {}  # no schema (old QEMU): complete commands only
        return self._arguments.get(command, [])

    def matches(self, line_before: str, text: str) -> list[str]:
        words = line_before.split()
        if not words:
            return [c + " " for c in self.commands if c.startswith(text)]
        if "=" in text:
            return []  # values are free-form
        given = {w.partition("=")[0] for w in words[1:]}
        return [
            f"{name}="
            for name in self.arguments(words[0])
            if name.startswith(text) and name not in given
        ]

    def complete(self, text: str, state: int, line_before: str) -> str | None:
        if state == 0:
            self._matches = self.matches(line_before, text)
        return self._matches[state] if state < len(self._matches) else None


def set_up_readline(completer: Completer) -> Any:
    """Tab completion and a history file; returns the readline module (or None)."""
    try:
        import readline
    except ImportError:  # not every Python has it; the shell works without
        return None

    def complete(text: str, state: int) -> str | None:
        line_before = readline.get_line_buffer()[: readline.get_begidx()]
        return completer.complete(text, state, line_before)

    readline.set_completer(complete)
    readline.set_completer_delims(" \t\n")
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    readline.set_history_length(HISTORY_LENGTH)
    with contextlib.suppress(OSError):  # no history yet, or unreadable: start empty
        readline.read_history_file(history_path())
    return readline


def save_history(readline: Any) -> None:
    """Write the history file; a failure is ignored."""
    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(path)
    except OSError:
        pass  # history is a convenience: a read-only home must not break the shell
