"""What can go wrong with the index: its own errors, and SQLite's as the rest of pipacs sees
them."""

from __future__ import annotations

import sqlite3

# Any error SQLite raises while the index is read or written (a full disk, a locked or
# damaged file). Callers catch this name: only pipacs.index knows the database is SQLite.
DatabaseError = sqlite3.Error


class IndexError_(Exception):
    """The index cannot be opened or used; the message says what to do."""


class SchemaTooOld(IndexError_):
    pass


def says_full(e: BaseException) -> bool:
    """Whether SQLite itself says that its disk is full (SQLITE_FULL)."""
    if not isinstance(e, sqlite3.Error):
        return False
    return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "is full" in str(e)


def is_io_error(e: BaseException) -> bool:
    """Whether `e` is an SQLite I/O error (SQLITE_IOERR and its extended codes), which a
    full disk also causes."""
    code = getattr(e, "sqlite_errorcode", None)
    return isinstance(e, sqlite3.Error) and code is not None and code & 0xFF == sqlite3.SQLITE_IOERR
