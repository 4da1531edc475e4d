"""HTTP basic auth against bcrypt hashes, with a bounded cache and a decoy for unknown users."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType

#: What a bcrypt hash (``htpasswd -nBC 10``) looks like.
BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")
#: How many failed credential checks are remembered (the toolkit keeps 100 of either kind).
AUTH_CACHE_SIZE = 100
#: How many successful checks are remembered, apart from the failures.
SUCCESS_CACHE_SIZE = 64
_INSTALL_HINT = "bcrypt is not installed: pip install qmp-exporter[tls]"


def import_bcrypt() -> ModuleType:
    """Import bcrypt on first need; ImportError with the install hint when it is missing."""
    try:
        import bcrypt
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    return bcrypt


def bcrypt_cost(hashed: str) -> int:
    """The cost factor of a bcrypt hash that matches :data:`BCRYPT_HASH`."""
    return int(hashed.split("$")[2])


class AuthCache:
    """Bounded, thread-safe maps of credential digests to the result of their bcrypt check.

    Successes and failures are kept apart, each with its own bound, so that a flood of wrong
    passwords can never push a right one out.
    """

    def __init__(self, size: int = AUTH_CACHE_SIZE, successes: int = SUCCESS_CACHE_SIZE) -> None:
        self._bounds = {True: successes, False: size}
        self._items: dict[bool, OrderedDict[bytes, None]] = {
            True: OrderedDict(),
            False: OrderedDict(),
        }
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> bool | None:
        with self._lock:
            for result, items in self._items.items():
                if digest in items:
                    items.move_to_end(digest)
                    return result
            return None

    def put(self, digest: bytes, result: bool) -> None:
        with self._lock:
            items = self._items[result]
            items[digest] = None
            items.move_to_end(digest)
            while len(items) > self._bounds[result]:
                items.popitem(last=False)

    def __len__(self) -> int:
        return sum(map(len, self._items.values()))


#: One bcrypt computation at a time, as in the toolkit: a flood of wrong passwords costs one core.
_BCRYPT_LOCK = threading.Lock()

_DECOYS: dict[int, bytes] = {}


def decoy_hash(cost: int) -> bytes:
    """A hash of a random password that unknown users are checked against, one per cost.

    Give it the highest cost any user has, so an unknown user takes as long as a known one.
    ImportError with the install hint when bcrypt is missing.
    """
    bcrypt = import_bcrypt()
    if cost not in _DECOYS:
        _DECOYS[cost] = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(cost))
    return _DECOYS[cost]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One offered credential, resolved against the users: what bcrypt must check."""

    user: str
    password: bytes = field(repr=False)
    #: The user's hash, or the decoy for an unknown user.
    hashed: bytes = field(repr=False)
    known: bool
    #: SHA-256 of user, hash and password: the cache key.
    digest: bytes = field(repr=False)

    def verify(self) -> bool:
        """Run bcrypt (one computation at a time in the process); never True for unknown users."""
        bcrypt = import_bcrypt()
        with _BCRYPT_LOCK:
            try:
                ok = bool(bcrypt.checkpw(self.password, self.hashed))
            except ValueError:
                ok = False
        return ok and self.known


def make_attempt(
    users: Mapping[str, str], decoy: bytes, authorization_header: str | None
) -> Attempt | None:
    """The credential an ``Authorization`` header offers; None when it offers none."""
    credentials = parse_basic(authorization_header)
    if credentials is None:
        return None
    user, password = credentials
    stored = users.get(user)
    hashed = stored.encode() if stored is not None else decoy
    digest = hashlib.sha256(
        b"\0".join((user.encode("utf-8", "surrogateescape"), hashed, password))
    ).digest()
    return Attempt(user, password, hashed, stored is not None, digest)


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """``Basic base64(user:password)`` → (user, password bytes); None if malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    return user.decode("utf-8", "surrogateescape"), password
