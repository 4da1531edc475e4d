"""QMP wire format: JSON objects, one per line; no sockets here."""

from __future__ import annotations

import json
from typing import Any

from qmp_exporter.qmp.errors import LineTooLongError, ProtocolError

#: Default bound on one line from QEMU. The largest real answer (query-qmp-schema, ~200 KiB
#: on QEMU 7.2) fits several times over; anything longer is a broken or hostile peer.
DEFAULT_MAX_LINE_BYTES = 1 << 20


class LineDecoder:
    """Splits a byte stream into decoded QMP messages (dicts), never buffering more than
    ``max_line`` bytes of an unfinished line."""

    __slots__ = ("_buffer", "max_line")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held now."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Take the next bytes; return the complete messages they finish, in order.

        Raises :class:`LineTooLongError` when a line grows past the limit and
        :class:`ProtocolError` for a line that is not a JSON object.
        """
        buffer = self._buffer
        if buffer:
            if b"\n" not in data:
                buffer += data
                if len(buffer) > self.max_line:
                    raise LineTooLongError(
                        f"unterminated line of more than {self.max_line} bytes "
                        f"(limit {self.max_line})",
                        self.max_line,
                    )
                return []
            buffer += data
            data = bytes(buffer)
            buffer.clear()
        *lines, tail = data.split(b"\n")
        messages: list[dict[str, Any]] = []
        for line in lines:
            if len(line) > self.max_line:
                raise LineTooLongError(
                    f"line of {len(line)} bytes exceeds {self.max_line}", self.max_line
                )
            if line and not line.isspace():
                messages.append(decode_line(line))
        if tail:
            if len(tail) > self.max_line:
                raise LineTooLongError(
                    f"unterminated line of more than {self.max_line} bytes (limit {self.max_line})",
                    self.max_line,
                )
            buffer += tail
        return messages


def decode_line(line: bytes) -> dict[str, Any]:
    """Decode one line (CRLF or LF, surrounding white space allowed) into a JSON object."""
    try:
        message = json.loads(line.decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        # RecursionError: nesting deeper than the decoder's limit (a short hostile line).
        # What was read is not shown: a peer that is not QMP may be any service, and its
        # first bytes (a banner, a token) would reach the log and the landing page.
        raise ProtocolError(f"not JSON ({len(line)} bytes)") from err
    if not isinstance(message, dict):
        raise ProtocolError(f"expected a JSON object, got {type(message).__name__}")
    return message


_compact = json.JSONEncoder(separators=(",", ":")).encode
_quote = json.encoder.encode_basestring_ascii


def encode_command(command: str, arguments: dict[str, Any] | None, command_id: Any) -> bytes:
    """Encode one command as a line, with ``id`` so its answer can be matched."""
    if not arguments and type(command_id) is int:
        return f'{{"execute":{_quote(command)},"id":{command_id}}}\n'.encode()
    message: dict[str, Any] = {"execute": command}
    if arguments:
        message["arguments"] = arguments
    message["id"] = command_id
    return _compact(message).encode() + b"\n"
