"""Property-based tests of the QMP line decoder (no sockets)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmp_exporter.qmp import LineDecoder, LineTooLongError
from qmp_exporter.qmp.errors import ProtocolError
from qmp_exporter.qmp.framing import decode_line, encode_command

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=6,
)
messages = st.dictionaries(st.text(max_size=10), json_values, min_size=1, max_size=5)
line_ends = st.sampled_from([b"\r\n", b"\n"])


def encode(message: dict[str, Any], end: bytes, ascii_only: bool) -> bytes:
    return json.dumps(message, ensure_ascii=ascii_only).encode() + end


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], bytes, list[int]]:
    """Messages, their encoding as one byte stream (mixed line ends, blank lines) and
    cut points that split it into chunks anywhere, even inside a UTF-8 character."""
    items = draw(st.lists(messages, max_size=6))
    parts = []
    for message in items:
        if draw(st.booleans()):
            parts.append(draw(st.sampled_from([b"\r\n", b"\n", b"  \r\n"])))
        parts.append(encode(message, draw(line_ends), draw(st.booleans())))
    data = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=10)))
    return items, data, cuts


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(streams())
@settings(max_examples=80)
def test_any_split_yields_the_same_messages_in_order(
    stream: tuple[list[dict[str, Any]], bytes, list[int]],
) -> None:
    expected, data, cuts = stream
    decoder = LineDecoder()
    decoded: list[dict[str, Any]] = []
    for chunk in chunks(data, cuts):
        decoded += decoder.feed(chunk)
    assert decoded == expected
    assert decoder.pending == 0


@given(streams(), st.integers(min_value=16, max_value=400))
@settings(max_examples=80)
def test_buffer_never_exceeds_the_limit_plus_one_chunk(
    stream: tuple[list[dict[str, Any]], bytes, list[int]], limit: int
) -> None:
    expected, data, cuts = stream
    decoder = LineDecoder(max_line=limit)
    longest = max((len(line) for line in data.split(b"\n")), default=0)
    decoded: list[dict[str, Any]] = []
    try:
        for chunk in chunks(data, cuts):
            decoded += decoder.feed(chunk)
            assert decoder.pending <= limit
    except LineTooLongError:
        assert longest > limit
    else:
        assert longest <= limit  # the limit counts a line's bytes up to its LF (CR included)
        assert decoded == expected


@given(st.integers(min_value=1, max_value=64), st.integers(min_value=1, max_value=5000))
def test_unterminated_line_is_cut_off_at_the_limit(limit: int, size: int) -> None:
    decoder = LineDecoder(max_line=limit)
    if size <= limit:
        assert decoder.feed(b"x" * size) == []
        assert decoder.pending == size
    else:
        with pytest.raises(LineTooLongError):
            decoder.feed(b"x" * size)


@given(st.binary(max_size=60).filter(lambda b: b"\n" not in b))
@settings(max_examples=300)
def test_garbage_is_a_protocol_error_or_an_object(garbage: bytes) -> None:
    try:
        message = decode_line(garbage + b"\r\n")
    except ProtocolError:
        return
    assert isinstance(message, dict)


@pytest.mark.parametrize("line", [b"[1, 2]", b'"QMP"', b"42", b"null", b"{", b"\xff\xfe{}"])
def test_non_objects_are_protocol_errors(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        LineDecoder().feed(line + b"\n")


@given(
    st.text(min_size=1, max_size=30),
    st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    st.integers(min_value=0, max_value=2**53),
)
def test_encoded_commands_are_single_lines_that_decode_back(
    command: str, arguments: dict[str, Any] | None, command_id: int
) -> None:
    line = encode_command(command, arguments, command_id)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    decoded = LineDecoder().feed(line)
    assert decoded == [
        {"execute": command, **({"arguments": arguments} if arguments else {}), "id": command_id}
    ]
