"""Index maintenance for fleet jobs: schema versions, and consistent online backups."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .config import Settings
from .index import INDEX_FILE, SCHEMA_VERSION, DatabaseError
from .index.offline import backup, read_schema_version


class MaintenanceError(Exception):
    """A maintenance request that cannot be carried out; the message says why."""


def schema_info(settings: Settings) -> dict[str, Any]:
    """What an upgrade needs to know: the schema this release writes, the index's own, and
    whether starting this release with --upgrade would migrate (so a backup is due)."""
    path = Path(settings.index_dir) / INDEX_FILE
    info: dict[str, Any] = {"Release": SCHEMA_VERSION, "Index": None, "Path": str(path)}
    if path.exists():
        try:
            info["Index"] = read_schema_version(path)
        except DatabaseError as e:
            raise MaintenanceError(f"the index {path} cannot be read ({e})") from e
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
        check, version, counts = backup(src_path, tmp)
        if check != "ok":
            raise MaintenanceError(f"the copy of {src_path} fails its check: {check}")
    except DatabaseError as e:
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
        "SchemaVersion": version,
        "CountPatients": counts.get(0, 0),
        "CountStudies": counts.get(1, 0),
        "CountSeries": counts.get(2, 0),
        "CountInstances": counts.get(3, 0),
    }


def dumps(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2, sort_keys=True)
