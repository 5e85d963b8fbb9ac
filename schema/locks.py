"""PostgreSQL advisory locks that keep two instances of a job from overlapping.

Only the owner can take them: migration 0011 revokes the advisory-lock functions from
PUBLIC in the skyledger database (and grants them to the migrating login), so a
catalogue reader cannot hold the nightly flow's lock and make every run skip. Advisory
rather than a row lock on a lock table: a row lock would keep a transaction (and an
xid) open for the whole nightly run, holding back VACUUM; an advisory session lock does
not, and it dies with its connection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

__all__ = ["lock_key", "advisory_lock"]


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a lock name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def advisory_lock(engine: Engine, name: str) -> Iterator[bool]:
    """Try to take the session-level lock ``name``; yields whether it was acquired.

    The lock lives on a dedicated connection held for the block's duration, and dies
    with that connection, so a crashed holder never leaves it stuck.
    """
    key = lock_key(name)
    with engine.connect() as conn:
        acquired = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one())
        conn.commit()
        try:
            yield acquired
        finally:
            if acquired:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
