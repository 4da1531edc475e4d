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
from types import ModuleType

#: What a bcrypt hash (``htpasswd -nBC 10``) looks like.
BCRYPT_HASH = re.compile(r"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")
#: How many successful or failed credential checks are remembered (the toolkit keeps 100).
AUTH_CACHE_SIZE = 100
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
    """A bounded, thread-safe map of credential digests to the result of their bcrypt check."""

    def __init__(self, size: int = AUTH_CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> bool | None:
        with self._lock:
            result = self._items.get(digest)
            if result is not None:
                self._items.move_to_end(digest)
            return result

    def put(self, digest: bytes, result: bool) -> None:
        with self._lock:
            self._items[digest] = result
            self._items.move_to_end(digest)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


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


def check_basic_auth(
    users: Mapping[str, str], decoy: bytes, cache: AuthCache, authorization_header: str | None
) -> bool:
    """Whether the ``Authorization`` header names one of ``users`` with its password.

    Costs one bcrypt check per new credential (cached after that); an unknown user costs
    the same check against ``decoy``, so timing does not reveal which users exist.
    """
    credentials = parse_basic(authorization_header)
    if credentials is None:
        return False
    user, password = credentials
    stored = users.get(user)
    hashed = stored.encode() if stored is not None else decoy
    digest = hashlib.sha256(
        b"\0".join((user.encode("utf-8", "surrogateescape"), hashed, password))
    ).digest()
    cached = cache.get(digest)
    if cached is not None:
        return cached and stored is not None
    bcrypt = import_bcrypt()
    with _BCRYPT_LOCK:
        try:
            ok = bool(bcrypt.checkpw(password, hashed))
        except ValueError:
            ok = False
    ok = ok and stored is not None
    cache.put(digest, ok)
    return ok


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
