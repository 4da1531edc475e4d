"""One gzip stream built from separately compressed pieces, so that a piece that did not
change is never compressed again.

Each piece is raw deflate ending in a sync flush (byte-aligned, not final), so pieces can be
laid end to end under one gzip header and trailer. The result is a single ordinary gzip
member, which every client reads (curl and some browsers stop after the first member of a
multi-member stream, so concatenated gzip files would not do).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, OS unknown
_FINAL_BLOCK = b"\x03\x00"  # an empty final block with fixed Huffman codes


def deflate_piece(data: bytes, level: int = 6) -> bytes:
    """``data`` as raw deflate that can be laid beside other pieces."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def gzip_stream(pieces: Iterable[bytes], crc: int, size: int) -> list[bytes]:
    """The gzip stream of deflated ``pieces`` whose data, laid end to end, has CRC-32
    ``crc`` and ``size`` bytes; as chunks to send in order."""
    return [_HEADER, *pieces, _FINAL_BLOCK + struct.pack("<II", crc, size & 0xFFFFFFFF)]
