"""Index maintenance for fleet jobs: schema versions, and consistent online backups."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from .config import Settings
from .index import INDEX_FILE, SCHEMA_VERSION


class MaintenanceError(Exception):
    """A maintenance request that cannot be carried out; the message says why."""


def _open_read_only(path: Path) -> sqlite3.Connection:
    # mode=ro: never create or migrate anything. A WAL index still needs its -wal and -shm
    # files; run as root (as Ansible does), SQLite gives them the index file's owner, so the
    # service can open them afterwards (tests/test_maintenance.py checks it).
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)


def schema_info(settings: Settings) -> dict[str, Any]:
    """What an upgrade needs to know: the schema this release writes, the index's own, and
    whether starting this release with --upgrade would migrate (so a backup is due)."""
    path = Path(settings.index_dir) / INDEX_FILE
    info: dict[str, Any] = {"Release": SCHEMA_VERSION, "Index": None, "Path": str(path)}
    if path.exists():
        try:
            conn = _open_read_only(path)
            try:
                has = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name='properties'"
                ).fetchone()
                row = (
                    conn.execute(
                        "SELECT value FROM properties WHERE key='schema_version'"
                    ).fetchone()
                    if has
                    else None
                )
            finally:
                conn.close()
        except sqlite3.DatabaseError as e:
            raise MaintenanceError(f"the index {path} cannot be read ({e})") from e
        info["Index"] = int(row[0]) if row else 0
    index = info["Index"]
    info["MigrationNeeded"] = index is not None and 0 < index < SCHEMA_VERSION
    info["TooNew"] = index is not None and index > SCHEMA_VERSION
    return info


def backup_index(settings: Settings, dest: str | Path) -> dict[str, Any]:
    """Copy the index to `dest` through SQLite's online backup: consistent even while pipacs
    runs and writes. The copy is checked, synced and renamed into place, so `dest` is
    either absent or a whole, readable index."""
    src_path = Path(settings.index_dir) / INDEX_FILE
    if not src_path.exists():
        raise MaintenanceError(f"there is no index at {src_path} to back up")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        src = _open_read_only(src_path)
        out = sqlite3.connect(tmp, isolation_level=None)
        try:
            src.backup(out, pages=4096)
            out.execute("PRAGMA journal_mode=DELETE")
            check = out.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise MaintenanceError(f"the copy of {src_path} fails its check: {check}")
            row = out.execute("SELECT value FROM properties WHERE key='schema_version'").fetchone()
            counts = dict(
                out.execute("SELECT level, count(*) FROM resources GROUP BY level").fetchall()
            )
        finally:
            out.close()
            src.close()
    except sqlite3.Error as e:
        tmp.unlink(missing_ok=True)
        raise MaintenanceError(f"cannot back up {src_path} to {dest}: {e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dest)
    dfd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return {
        "Path": str(dest),
        "Size": dest.stat().st_size,
        "SchemaVersion": int(row[0]) if row else 0,
        "CountPatients": counts.get(0, 0),
        "CountStudies": counts.get(1, 0),
        "CountSeries": counts.get(2, 0),
        "CountInstances": counts.get(3, 0),
    }


def dumps(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2, sort_keys=True)
