"""The index's schema: Orthanc's numbering of changes and metadata, and the migrations that
build and upgrade the tables."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from ..matching import fold
from .errors import IndexError_, SchemaTooOld

INDEX_FILE = "pipacs-index.db"

# Orthanc's change types and metadata types, by their numbers.
CHANGE_TYPES = {
    1: "CompletedSeries",
    2: "Deleted",
    3: "NewChildInstance",
    4: "NewInstance",
    5: "NewPatient",
    6: "NewSeries",
    7: "NewStudy",
    8: "StablePatient",
    9: "StableSeries",
    10: "StableStudy",
    11: "UpdatedAttachment",
    12: "UpdatedMetadata",
}
CHANGE_NUMBERS = {v: k for k, v in CHANGE_TYPES.items()}
NEW_CHANGE = {PATIENT: 5, STUDY: 7, SERIES: 6, INSTANCE: 4}
STABLE_CHANGE = {PATIENT: 8, STUDY: 10, SERIES: 9}
METADATA_TYPES = {
    1: "IndexInSeries",
    2: "ReceptionDate",
    3: "RemoteAET",
    4: "ExpectedNumberOfInstances",
    5: "ModifiedFrom",
    6: "AnonymizedFrom",
    7: "LastUpdate",
    8: "Origin",
    9: "TransferSyntax",
    10: "SopClassUid",
    11: "RemoteIP",
    12: "CalledAET",
    13: "HttpUsername",
    14: "PixelDataOffset",
}
METADATA_NUMBERS = {v: k for k, v in METADATA_TYPES.items()}


def _fold_patient_names(c: sqlite3.Connection) -> None:
    """4: patients' names as C-FIND and /tools/find compare them (`matching.fold`: no
    accents, upper case), in an indexed column, so that PatientName=DOE* reads only the
    patients whose folded name starts with DOE. Filled here: SQLite's upper() knows ASCII
    only and cannot take accents off."""
    c.execute("ALTER TABLE resources ADD COLUMN folded_name TEXT")
    names = c.execute(
        "SELECT id, json_extract(tags, '$.PatientName') FROM resources WHERE level = 0"
    ).fetchall()
    c.executemany(
        "UPDATE resources SET folded_name = ? WHERE id = ?",
        [(fold(name or ""), rid) for rid, name in names],
    )
    # only patients have one (NULL elsewhere): the index holds nothing for other levels
    c.execute(
        "CREATE INDEX resources_folded_name ON resources(folded_name) "
        "WHERE folded_name IS NOT NULL"
    )


# Each step brings the schema from version N-1 to N: SQL, or a function given the write
# connection for what SQL cannot do. A new index runs them all, so every migration is
# exercised by every test that creates an index.
MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    # 1: resources with their main tags, attachments, metadata, changes
    """
    CREATE TABLE resources(
        id INTEGER PRIMARY KEY,
        level INTEGER NOT NULL,
        public_id TEXT NOT NULL UNIQUE,
        parent INTEGER REFERENCES resources(id) ON DELETE CASCADE,
        uid TEXT NOT NULL,
        tags TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        stable INTEGER NOT NULL DEFAULT 0,
        protected INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX resources_parent ON resources(parent);
    CREATE INDEX resources_level_uid ON resources(level, uid);
    CREATE TABLE attachments(
        resource INTEGER NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
        type INTEGER NOT NULL,
        uuid TEXT NOT NULL,
        size INTEGER NOT NULL,
        compressed_size INTEGER NOT NULL,
        compression INTEGER NOT NULL,
        md5 TEXT NOT NULL,
        compressed_md5 TEXT NOT NULL,
        PRIMARY KEY(resource, type)
    ) WITHOUT ROWID;
    CREATE TABLE metadata(
        resource INTEGER NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
        type INTEGER NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY(resource, type)
    ) WITHOUT ROWID;
    CREATE TABLE changes(
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        type INTEGER NOT NULL,
        level INTEGER NOT NULL,
        public_id TEXT NOT NULL,
        date TEXT NOT NULL
    );
    CREATE TABLE properties(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    """,
    # 2: exports log, recycling order, and a running total of stored bytes
    """
    CREATE TABLE exports(
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        level INTEGER NOT NULL,
        public_id TEXT NOT NULL,
        target TEXT NOT NULL,
        patient_id TEXT, study_uid TEXT, series_uid TEXT, sop_uid TEXT,
        date TEXT NOT NULL
    );
    CREATE INDEX resources_recycling ON resources(level, protected, updated);
    INSERT OR REPLACE INTO properties(key, value)
        SELECT 'total_compressed', COALESCE(SUM(compressed_size), 0) FROM attachments;
    INSERT OR REPLACE INTO properties(key, value)
        SELECT 'total_size', COALESCE(SUM(size), 0) FROM attachments;
    """,
    # 3: studies by accession number (C-FIND and /tools/find from a RIS, /tools/lookup);
    # the patients, studies and series not yet stable, which the stability check reads every
    # second; the recycling order of patients only (each instance stored moved the entries of
    # its instance, series and study too: 10 KB of the 75 KB each commit wrote to the WAL)
    """
    CREATE INDEX resources_accession ON resources(json_extract(tags, '$.AccessionNumber'))
        WHERE level = 1;
    CREATE INDEX resources_unstable ON resources(level) WHERE stable = 0 AND level < 3;
    DROP INDEX resources_recycling;
    CREATE INDEX resources_recycling ON resources(protected, updated) WHERE level = 0;
    """,
    _fold_patient_names,
]
SCHEMA_VERSION = len(MIGRATIONS)


def stored_version(c: sqlite3.Connection, path: Path) -> int:
    """The schema version of the index open on `c` (0: a new, empty database)."""
    has = c.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='properties'"
    ).fetchone()
    if not has:
        tables = c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise IndexError_(f"{path} is not a pipacs index (unknown tables)")
        return 0
    return version_property(c)


def version_property(c: sqlite3.Connection) -> int:
    row = c.execute("SELECT value FROM properties WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def check_version(version: int, path: Path, upgrade: bool) -> None:
    """Refuse an index this release cannot use as it is."""
    if version > SCHEMA_VERSION:
        raise IndexError_(
            f"the index {path} has schema version {version}, newer than this pipacs "
            f"understands ({SCHEMA_VERSION}): run a newer pipacs"
        )
    if 0 < version < SCHEMA_VERSION and not upgrade:
        raise SchemaTooOld(
            f"the index {path} has schema version {version}; this pipacs needs "
            f"{SCHEMA_VERSION}. Back it up, then start once with --upgrade"
        )


def migrate(w: sqlite3.Connection, step: int) -> None:
    """Bring the schema from version `step` to `step` + 1, inside the write transaction `w`."""
    migration = MIGRATIONS[step]
    if callable(migration):
        migration(w)
    else:
        for stmt in _statements(migration):
            w.execute(stmt)
    w.execute(
        "INSERT OR REPLACE INTO properties(key, value) VALUES('schema_version', ?)",
        (str(step + 1),),
    )


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
