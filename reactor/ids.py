"""Client-side ids in the shape Prisma's ``@default(cuid())`` produces.

Prisma generates ids in the client, so any row the reactor inserts (``reactor enqueue``,
presence rows, the demo) must bring its own: 25 characters, starting with ``c``, then a
base-36 timestamp, a counter, a host fingerprint and randomness.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_counter = itertools.count(secrets.randbelow(36**4))


def _base36(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, remainder = divmod(value, 36)
        digits.append(_ALPHABET[remainder])
    return "".join(reversed(digits))


def _fingerprint() -> str:
    host = sum(socket.gethostname().encode()) + len(socket.gethostname()) + 36
    return _base36(os.getpid(), 2) + _base36(host, 2)


def new_cuid() -> str:
    """A new collision-resistant id: ``c`` + time(8) + counter(4) + fingerprint(4) + random(8)."""
    millis = int(time.time() * 1000)
    counter = next(_counter) % (36**4)
    random_part = _base36(secrets.randbits(42), 8)
    return "c" + _base36(millis, 8) + _base36(counter, 4) + _fingerprint() + random_part
