"""The SQLite index: resources, main tags, attachments, metadata and the change log.

Only this package runs SQL: the rest of pipacs asks `Index` questions by name. Its modules:
`schema` (numbering and migrations), `database` (connections and the write path: grouped
commits, durability, checkpoints), `store` (writes), `queries` and `uids` (reads),
`offline` (an index no server holds open: backups and schema checks).
"""

from __future__ import annotations

from .database import IndexLock
from .errors import DatabaseError, IndexError_, SchemaTooOld, is_io_error, says_full
from .queries import Reads
from .records import Export, InstanceRow, Resource, StoreOutcome, change_json, iso_of, now_iso
from .schema import (
    CHANGE_NUMBERS,
    CHANGE_TYPES,
    INDEX_FILE,
    METADATA_NUMBERS,
    METADATA_TYPES,
    MIGRATIONS,
    NEW_CHANGE,
    SCHEMA_VERSION,
    STABLE_CHANGE,
)
from .store import Writes
from .uids import UidReads


class Index(Writes, Reads, UidReads):
    """One SQLite database in WAL mode: a connection per live thread (pooled) for reading,
    one connection for every write, writes serialised (and grouped: see `store_instance`).

    Commits do not checkpoint: the WAL is copied back into the database by `checkpoint`,
    which the settle thread calls after `make_durable`, so a C-STORE never waits for a
    checkpoint's two fsyncs.
    """


__all__ = [
    "CHANGE_NUMBERS",
    "CHANGE_TYPES",
    "INDEX_FILE",
    "METADATA_NUMBERS",
    "METADATA_TYPES",
    "MIGRATIONS",
    "NEW_CHANGE",
    "SCHEMA_VERSION",
    "STABLE_CHANGE",
    "DatabaseError",
    "Export",
    "Index",
    "IndexError_",
    "IndexLock",
    "InstanceRow",
    "Resource",
    "SchemaTooOld",
    "StoreOutcome",
    "change_json",
    "is_io_error",
    "iso_of",
    "now_iso",
    "says_full",
]
