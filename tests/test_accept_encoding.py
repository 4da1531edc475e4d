"""Accept-Encoding negotiation of gzip, per RFC 9110 §12.5.3 (q-values)."""

from __future__ import annotations

import pytest

from qmp_exporter.web.http.server import Request, accepts_coding

CASES: list[tuple[str, bool]] = [
    # A plain mention, in any case and spacing, among others.
    ("gzip", True),
    ("GZIP", True),
    ("Gzip", True),
    ("deflate, gzip, br", True),
    ("  gzip  ,deflate", True),
    ("x-gzip", True),
    # Nothing that allows gzip.
    ("", False),
    ("identity", False),
    ("deflate, br", False),
    ("gzipx", False),
    ("gzip-ish;q=1", False),
    (",,", False),
    # q-values above 0 accept, whatever their size.
    ("gzip;q=1", True),
    ("gzip;q=1.0", True),
    ("gzip;q=1.000", True),
    ("gzip;q=0.5", True),
    ("gzip; q=0.5", True),
    ("gzip ; q=0.5", True),
    ("gzip;Q=0.5", True),
    ("gzip;q=0.001", True),
    ("gzip;q=0.01", True),
    ("deflate;q=1, gzip;q=0.1", True),
    # q=0 in every spelling refuses.
    ("gzip;q=0", False),
    ("gzip;q=0.", False),
    ("gzip;q=0.0", False),
    ("gzip;q=0.000", False),
    ("gzip; Q=0", False),
    ("deflate, gzip;q=0", False),
    # Malformed q-values count as not acceptable.
    ("gzip;q=", False),
    ("gzip;q", False),
    ("gzip;q=abc", False),
    ("gzip;q=1.5", False),
    ("gzip;q=2", False),
    ("gzip;q=-1", False),
    ("gzip;q=.5", False),
    ("gzip;q=0.0001", False),
    ("gzip;q=1.001", False),
    # The wildcard covers codings not named; a named coding's own q-value wins over it.
    ("*", True),
    ("*;q=0.5", True),
    ("identity, *;q=0.5", True),
    ("*;q=0", False),
    ("gzip;q=0, *", False),
    ("*, gzip;q=0", False),
    ("*;q=0, gzip", True),
    ("*;q=0, gzip;q=0.2", True),
    ("identity;q=1, *;q=0", False),
    ("*;q=abc", False),
    # Named twice: the higher q-value counts.
    ("gzip;q=0, gzip;q=0.5", True),
]


@pytest.mark.parametrize(("header", "expected"), CASES)
def test_accept_encoding_gzip(header: str, expected: bool) -> None:
    assert accepts_coding(header, "gzip") is expected


def test_a_request_without_accept_encoding_gets_no_gzip() -> None:
    request = Request("GET", "/metrics", "/metrics", {}, {})
    assert not request.accepts_gzip()
    request.headers["accept-encoding"] = "br, gzip;q=0.5"
    assert request.accepts_gzip()
