"""An index file read from outside the server (fleet maintenance): its schema version, and a
consistent copy through SQLite's online backup."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .schema import version_property


def _open_read_only(path: Path) -> sqlite3.Connection:
    # mode=ro: never create or migrate anything. A WAL index still needs its -wal and -shm
    # files; run as root (as Ansible does), SQLite gives them the index file's owner, so the
    # service can open them afterwards (tests/test_maintenance.py checks it).
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)


def read_schema_version(path: Path) -> int:
    """The schema version of the index file at `path`, opened read-only (0 when it has none
    recorded). Raises DatabaseError when it cannot be read."""
    conn = _open_read_only(path)
    try:
        has = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='properties'"
        ).fetchone()
        return version_property(conn) if has else 0
    finally:
        conn.close()


def backup(src_path: Path, dest: Path) -> tuple[str, int, dict[int, int]]:
    """Copy the index at `src_path` to a new file `dest` (journal mode DELETE: one file),
    pages a few at a time so that the server writes on meanwhile.

    Returns the copy's quick_check answer ("ok" when whole) and, when whole, its schema
    version and resources per level. Raises DatabaseError; `dest` is left for the caller
    to sync and rename, or remove.
    """
    src = _open_read_only(src_path)
    out = sqlite3.connect(dest, isolation_level=None)
    try:
        src.backup(out, pages=4096)
        out.execute("PRAGMA journal_mode=DELETE")
        check = str(out.execute("PRAGMA quick_check").fetchone()[0])
        if check != "ok":
            return check, 0, {}
        version = version_property(out)
        counts = dict(
            out.execute("SELECT level, count(*) FROM resources GROUP BY level").fetchall()
        )
        return check, version, counts
    finally:
        out.close()
        src.close()
