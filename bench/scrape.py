"""The scrape client used for the exporter and for the static baseline alike: one HTTP/1.1
keep-alive connection (as Prometheus holds), timed from request to last body byte."""

from __future__ import annotations

import http.client
import re
import statistics
import time


class Scraper:
    def __init__(self, port: int) -> None:
        self.port = port
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str = "/metrics", gzip: bool = False) -> tuple[float, bytes]:
        """One GET; (seconds, body as sent)."""
        headers = {"Accept-Encoding": "gzip"} if gzip else {}
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self._connection.request("GET", path, headers=headers)
                response = self._connection.getresponse()
                body = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: open a new one, once.
                self._connection.close()
                if attempt == 2:
                    raise
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status}")
        return elapsed, body

    def text(self) -> str:
        return self.get()[1].decode()

    def close(self) -> None:
        self._connection.close()


def time_scrapes(port: int, count: int, gzip: bool) -> list[float]:
    scraper = Scraper(port)
    try:
        scraper.get(gzip=gzip)  # warm: connection set up, caches filled
        return [scraper.get(gzip=gzip)[0] for _ in range(count)]
    finally:
        scraper.close()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def sample_value(text: str, name: str, **labels: str) -> float | None:
    """The value of ``name{labels}`` in an exposition (labels in the exporter's order)."""
    body = ",".join(f'{key}="{value}"' for key, value in labels.items())
    prefix = f"{name}{{{body}}} "
    start = text.find("\n" + prefix)
    if start < 0:
        return None
    start += 1 + len(prefix)
    end = text.find("\n", start)
    return float(text[start:end])


_UP = re.compile(r'^qemu_up\{vm="[^"]*"\} 1$', re.MULTILINE)


def count_up(text: str) -> int:
    """How many VMs ``qemu_up`` reports up."""
    return len(_UP.findall(text))
