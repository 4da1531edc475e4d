"""The baseline for scrape time: serve fixed bytes over HTTP/1.1 with keep-alive, nothing else.

The body (and its gzip, compressed once at start) is sent for every GET, whatever the path.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import sys


async def serve(body: bytes, port: int) -> None:
    gzipped = gzip.compress(body, compresslevel=5, mtime=0)
    plain_head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    gzip_head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gzipped)
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                _, found, rest = head.partition(b"\r\naccept-encoding:")
                if found and b"gzip" in rest.split(b"\r\n", 1)[0]:
                    writer.write(gzip_head + gzipped)
                else:
                    writer.write(plain_head + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--file", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with open(args.file, "rb") as source:
        body = source.read()
    try:
        asyncio.run(serve(body, args.port))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
