"""The SQLite index: resources, main tags, attachments, metadata and the change log."""

from __future__ import annotations

import collections
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from .ids import INSTANCE, LEVEL_NAMES, LEVEL_PLURALS, PATIENT, SERIES, STUDY
from .matching import FoldedPrefix, fold
from .storage import Attachment

logger = logging.getLogger(__name__)
T = TypeVar("T")

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


class IndexError_(Exception):
    """The index cannot be opened or used; the message says what to do."""


class SchemaTooOld(IndexError_):
    pass


class IndexLock:
    """An exclusive lock on an index folder: one pipacs process (or --reindex) at a time."""

    def __init__(self, folder: str | Path):
        import fcntl

        Path(folder).mkdir(parents=True, exist_ok=True)
        self.path = Path(folder) / "pipacs.lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise IndexError_(
                f"another pipacs process is using the index in {folder}: stop it first"
            ) from None
        try:
            os.ftruncate(self._fd, 0)
            os.write(self._fd, f"{os.getpid()}\n".encode())
        except OSError as e:  # the PID is for people; the lock holds without it (a full disk)
            logger.warning("cannot write the PID to %s: %s", self.path, e)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_now_iso: tuple[int, str] = (0, "")


def now_iso() -> str:
    """The current UTC time as Orthanc writes dates (formatted once per second: every
    stored instance asks for it twice)."""
    global _now_iso
    second = int(time.time())
    if _now_iso[0] != second:
        _now_iso = (second, time.strftime("%Y%m%dT%H%M%S", time.gmtime(second)))
    return _now_iso[1]


def iso_of(timestamp: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(timestamp))


@dataclass
class Resource:
    id: int
    level: int
    public_id: str
    parent: int | None
    uid: str
    tags: dict[str, str]
    updated: float
    stable: bool
    protected: bool


@dataclass
class StoreOutcome:
    status: str  # "Success" or "AlreadyStored"
    ids: tuple[str, str, str, str]
    created: list[int]  # levels created by this instance
    removed_files: list[str]  # uuids of files replaced (OverwriteInstances)


class _Lease:
    """A thread's hold on a pooled connection. When the thread ends, its thread-local data
    is dropped and the connection goes back to the pool. (Every DICOM association runs in a
    new thread: without the pool each one left an open connection behind, with two file
    descriptors and its page cache, until the process ran out of descriptors.)"""

    __slots__ = ("conn", "pool")

    def __init__(self, conn: sqlite3.Connection, pool: list[sqlite3.Connection]):
        self.conn = conn
        self.pool = pool

    def __del__(self) -> None:
        self.pool.append(self.conn)  # list.append is atomic: no lock needed


class _Pending:
    """One thread's piece of work waiting for a shared write transaction."""

    __slots__ = ("done", "error", "result", "work")

    def __init__(self, work: Callable[[sqlite3.Connection], Any]):
        self.work = work
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class Index:
    """One SQLite database in WAL mode: a connection per live thread (pooled) for reading,
    one connection for every write, writes serialised (and grouped: see `store_instance`).

    Commits do not checkpoint: the WAL is copied back into the database by `checkpoint`,
    which the settle thread calls after `make_durable`, so a C-STORE never waits for a
    checkpoint's two fsyncs.
    """

    # A WAL longer than this is checkpointed with writers held off, so that it restarts
    # from its beginning (a passive checkpoint under steady writes never catches up).
    WAL_RESTART_BYTES = 16 << 20
    RESTART_WAIT_MS = 200
    # A checkpoint writes pages into the database and fsyncs twice: on an SD card it waits
    # for this many commits (about SQLite's own 1000 pages) or this long after the first.
    CHECKPOINT_COMMITS = 64
    CHECKPOINT_SECONDS = 30.0
    BUSY_TIMEOUT_MS = 30_000

    def __init__(
        self,
        folder: str | Path,
        *,
        upgrade: bool = False,
        sync: bool = True,
        schema_version: int = SCHEMA_VERSION,
    ):
        """Open (creating or migrating) the index; `schema_version` below the current one
        builds an old index, for tests of --upgrade."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / INDEX_FILE
        self.sync = sync
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._writer: sqlite3.Connection | None = None
        self._uncheckpointed = 0  # commits since the last checkpoint
        self._checkpointed_at = time.monotonic()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._id_cache: dict[str, int] = {}
        self._connections: list[sqlite3.Connection] = []  # every one opened, to close them
        self._idle: list[sqlite3.Connection] = []  # given back by threads that ended
        self._synced_wal = 0  # inode of the WAL file last made durable
        self._check_and_migrate(upgrade, schema_version)
        self._page_size = int(self.conn.execute("PRAGMA page_size").fetchone()[0])

    # ------------------------------------------------------------ connections

    def _connect(self, *, writer: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Commits are not fsynced one by one: `make_durable` does it for a batch, and the
        # storage area keeps each file staged until then (see storage.StorageArea).
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-2000")
        conn.execute("PRAGMA temp_store=MEMORY")
        if writer:
            conn.execute("PRAGMA wal_autocheckpoint=0")  # see `checkpoint`
            # After a checkpoint restarts it, the WAL file is cut back to this size.
            conn.execute(f"PRAGMA journal_size_limit={self.WAL_RESTART_BYTES // 4}")
        self._connections.append(conn)
        return conn

    def _writer_conn(self) -> sqlite3.Connection:
        """The one connection that writes (called with the write lock held). One connection
        keeps its page cache across commits; a connection per thread had each thread's
        cache dropped by every other thread's commit."""
        if self._writer is None:
            self._writer = self._connect(writer=True)
        return self._writer

    @property
    def conn(self) -> sqlite3.Connection:
        lease = getattr(self._local, "lease", None)
        if lease is None:
            try:
                c = self._idle.pop()
            except IndexError:
                c = self._connect()
            lease = self._local.lease = _Lease(c, self._idle)
        return lease.conn

    def close(self) -> None:
        for c in self._connections:
            try:
                c.close()
            except sqlite3.Error:
                pass
        self._connections.clear()
        self._writer = None
        self._idle = []  # leases still held give theirs back to the old list
        self._local = threading.local()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, one at a time."""
        with self._write_lock:
            c = self._writer_conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
                c.execute("COMMIT")
            except BaseException:
                self._rollback(c)
                raise
            self._uncheckpointed += 1

    def _rollback(self, c: sqlite3.Connection) -> None:
        # A failed COMMIT (a full disk) may or may not have rolled back already.
        if c.in_transaction:
            try:
                c.execute("ROLLBACK")
            except sqlite3.Error as e:
                logger.warning("rollback failed: %s", e)
        self._id_cache.clear()  # it may name rows that were never committed

    def grouped(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(connection)` in a write transaction, sharing its commit with the work
        other threads queued meanwhile (group commit).

        A thread that finds the writer busy queues its work; whoever takes the write lock
        next runs everything queued, each piece in its own savepoint (a failing piece is
        undone alone and its error goes back to its thread), and commits once. With
        parallel associations this turns N commits into one: fewer WAL pages written (the
        pages the instances share are written once) and less time under the lock.
        """
        item = _Pending(work)
        self._pending.append(item)
        with self._write_lock:
            if not item.done:
                self._run_pending()
        if item.error is not None:
            raise item.error
        return cast(T, item.result)

    def _run_pending(self) -> None:
        batch: list[_Pending] = []
        while self._pending:
            batch.append(self._pending.popleft())
        if not batch:
            return
        try:
            with self.write() as c:  # the write lock is held already (it is reentrant)
                for item in batch:
                    c.execute("SAVEPOINT one")
                    try:
                        item.result = item.work(c)
                    except Exception as e:
                        if not c.in_transaction:
                            raise  # SQLite gave up the whole transaction (a full disk)
                        item.error = e
                        c.execute("ROLLBACK TO one")
                        self._id_cache.clear()
                    c.execute("RELEASE one")
        except BaseException as e:  # nothing of the batch was committed
            for item in batch:
                if item.error is None:
                    item.error = e
        finally:
            for item in batch:
                item.done = True

    def make_durable(self) -> None:
        """Make every commit so far survive a power cut: one fsync of the WAL.

        Commits are written to the WAL without an fsync (synchronous=NORMAL); syncing the WAL
        file makes all of them durable at once. It writes nothing, so it works on a full disk,
        and takes no lock. (A no-op write transaction committed with synchronous=FULL would not
        do: SQLite skips the commit, and its fsync, when no page changed.) A WAL that SQLite
        has checkpointed and restarted holds only later commits: the checkpoint synced the
        database. Without `sync` (SyncStorageArea false) it does nothing.
        """
        if not self.sync:
            return
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL: everything is in the database file, which SQLite has synced
        try:
            os.fsync(fd)
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        if inode != self._synced_wal:  # a new WAL file: make its directory entry durable too
            dfd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            self._synced_wal = inode

    def checkpoint(self, force: bool = False) -> None:
        """Copy the WAL's commits into the database file (commits leave this to us), once
        CHECKPOINT_COMMITS commits or CHECKPOINT_SECONDS have passed (or when `force`d).

        Passive: writers go on meanwhile. When the WAL has grown past WAL_RESTART_BYTES
        (writes never paused long enough for a passive checkpoint to finish, and the WAL
        only starts over after one that did), writers wait while it is checkpointed whole,
        so that the next commit starts the WAL from its beginning.
        """
        pending = self._uncheckpointed
        if not force and pending < self.CHECKPOINT_COMMITS and not (
            pending and time.monotonic() - self._checkpointed_at >= self.CHECKPOINT_SECONDS
        ):
            return
        if not os.path.exists(f"{self.path}-wal"):
            return
        self._uncheckpointed -= pending
        self._checkpointed_at = time.monotonic()
        c = self.conn
        _busy, frames, done = c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if done < frames and frames * (self._page_size + 24) >= self.WAL_RESTART_BYTES:
            with self._write_lock:
                w = self._writer_conn()
                # A reader still on an old snapshot makes RESTART wait for it: not for long,
                # writers are held meanwhile. The next settle tries again.
                w.execute(f"PRAGMA busy_timeout={self.RESTART_WAIT_MS}")
                try:
                    w.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                finally:
                    w.execute(f"PRAGMA busy_timeout={self.BUSY_TIMEOUT_MS}")

    # ------------------------------------------------------------ schema

    def schema_version(self) -> int:
        c = self.conn
        has = c.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='properties'"
        ).fetchone()
        if not has:
            tables = c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise IndexError_(f"{self.path} is not a pipacs index (unknown tables)")
            return 0
        row = c.execute("SELECT value FROM properties WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _check_and_migrate(self, upgrade: bool, target: int) -> None:
        try:
            # Reading the schema version touches the header and the first pages: enough to
            # refuse a clobbered file at once. A full integrity check would make start-up
            # grow with the archive; `pipacs --reindex` is the cure either way.
            version = self.schema_version()
        except sqlite3.DatabaseError as e:
            raise IndexError_(
                f"the index {self.path} cannot be read ({e}); "
                "rebuild it from the storage area with --reindex"
            ) from e
        if version > SCHEMA_VERSION:
            raise IndexError_(
                f"the index {self.path} has schema version {version}, newer than this pipacs "
                f"understands ({SCHEMA_VERSION}): run a newer pipacs"
            )
        if 0 < version < SCHEMA_VERSION and not upgrade:
            raise SchemaTooOld(
                f"the index {self.path} has schema version {version}; this pipacs needs "
                f"{SCHEMA_VERSION}. Back it up, then start once with --upgrade"
            )
        for step in range(version, target):
            logger.info("index schema: migrating to version %d", step + 1)
            migration = MIGRATIONS[step]
            with self.write() as w:
                if callable(migration):
                    migration(w)
                else:
                    for stmt in _statements(migration):
                        w.execute(stmt)
                w.execute(
                    "INSERT OR REPLACE INTO properties(key, value) VALUES('schema_version', ?)",
                    (str(step + 1),),
                )

    # ------------------------------------------------------------ properties

    def get_property(self, key: str, default: str = "") -> str:
        row = self.conn.execute("SELECT value FROM properties WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_property(self, key: str, value: str) -> None:
        with self.write() as w:
            w.execute("INSERT OR REPLACE INTO properties(key, value) VALUES(?, ?)", (key, value))

    # ------------------------------------------------------------ storing

    def _lookup_id(self, c: sqlite3.Connection, public_id: str) -> int | None:
        rid = self._id_cache.get(public_id)
        if rid is not None:
            return rid
        row = c.execute("SELECT id FROM resources WHERE public_id=?", (public_id,)).fetchone()
        if row is None:
            return None
        if len(self._id_cache) > 4096:
            self._id_cache.clear()
        self._id_cache[public_id] = row[0]
        return int(row[0])

    def store_instance(
        self,
        public_ids: tuple[str, str, str, str],
        uids: tuple[str, ...],
        tags: list[dict[str, str]],
        attachment: Attachment | None,
        metadata: dict[int, str],
        *,
        overwrite: bool = False,
    ) -> StoreOutcome:
        now = time.time()
        date = now_iso()
        # written with a new patient row, as its tags are (they are not updated afterwards)
        folded_name = fold(tags[PATIENT].get("PatientName", ""))

        def work(c: sqlite3.Connection) -> StoreOutcome:
            created: list[int] = []
            removed: list[str] = []
            existing = self._lookup_id(c, public_ids[INSTANCE])
            if existing is not None:
                if not overwrite:
                    return StoreOutcome("AlreadyStored", public_ids, [], [])
                removed = [
                    r[0]
                    for r in c.execute("SELECT uuid FROM attachments WHERE resource=?", (existing,))
                ]
                self._drop_size(c, existing)
                c.execute("DELETE FROM resources WHERE id=?", (existing,))
                self._id_cache.pop(public_ids[INSTANCE], None)
            parent: int | None = None
            ancestors = []
            for level in (PATIENT, STUDY, SERIES, INSTANCE):
                rid = None if level == INSTANCE else self._lookup_id(c, public_ids[level])
                if rid is None:
                    cur = c.execute(
                        "INSERT INTO resources(level, public_id, parent, uid, tags, created, "
                        "updated, folded_name) VALUES(?,?,?,?,?,?,?,?)",
                        (
                            level,
                            public_ids[level],
                            parent,
                            uids[level],
                            json.dumps(tags[level], ensure_ascii=False),
                            now,
                            now,
                            folded_name if level == PATIENT else None,
                        ),
                    )
                    rid = int(cur.lastrowid or 0)
                    created.append(level)
                else:
                    ancestors.append(rid)
                parent = rid
            instance_id = parent
            if ancestors:
                c.execute(
                    f"UPDATE resources SET updated=?, stable=0 WHERE id IN "
                    f"({','.join('?' * len(ancestors))})",
                    (now, *ancestors),
                )
            if attachment is not None:
                c.execute(
                    "INSERT INTO attachments VALUES(?,?,?,?,?,?,?,?)",
                    (
                        instance_id,
                        attachment.content_type,
                        attachment.uuid,
                        attachment.size,
                        attachment.compressed_size,
                        attachment.compression,
                        attachment.md5,
                        attachment.compressed_md5,
                    ),
                )
                c.execute(
                    "UPDATE properties SET value = value + ? WHERE key='total_compressed'",
                    (attachment.compressed_size,),
                )
                c.execute(
                    "UPDATE properties SET value = value + ? WHERE key='total_size'",
                    (attachment.size,),
                )
            series_id = self._lookup_id(c, public_ids[SERIES])
            count = c.execute(
                "SELECT count(*) FROM resources WHERE parent=?", (series_id,)
            ).fetchone()[0]
            meta = dict(metadata)
            meta[METADATA_NUMBERS["IndexInSeries"]] = str(count)
            c.executemany(
                "INSERT OR REPLACE INTO metadata VALUES(?,?,?)",
                [(instance_id, k, v) for k, v in meta.items()],
            )
            c.executemany(
                "INSERT INTO changes(type, level, public_id, date) VALUES(?,?,?,?)",
                [(NEW_CHANGE[lv], lv, public_ids[lv], date) for lv in sorted(created)],
            )
            return StoreOutcome("Success", public_ids, created, removed)

        return self.grouped(work)

    def _drop_size(self, c: sqlite3.Connection, instance_id: int) -> None:
        c.execute(
            "UPDATE properties SET value = value - (SELECT COALESCE(SUM(compressed_size),0) "
            "FROM attachments WHERE resource=?) WHERE key='total_compressed'",
            (instance_id,),
        )
        c.execute(
            "UPDATE properties SET value = value - (SELECT COALESCE(SUM(size),0) "
            "FROM attachments WHERE resource=?) WHERE key='total_size'",
            (instance_id,),
        )

    # ------------------------------------------------------------ deleting

    def delete(self, public_id: str) -> tuple[list[str], list[tuple[int, str]]]:
        """Delete a resource, its descendants and any parent left empty.

        Returns the attachment uuids to remove from the storage area (after the commit) and
        the (level, public_id) of every resource deleted.
        """
        date = now_iso()
        with self.write() as c:
            row = c.execute(
                "SELECT id, level, parent FROM resources WHERE public_id=?", (public_id,)
            ).fetchone()
            if row is None:
                return [], []
            rid, _level, parent = row
            subtree = [
                r[0]
                for r in c.execute(
                    "WITH RECURSIVE t(id) AS (SELECT ? UNION ALL SELECT r.id FROM resources r "
                    "JOIN t ON r.parent = t.id) SELECT id FROM t",
                    (rid,),
                )
            ]
            marks = ",".join("?" * len(subtree))
            uuids = [
                r[0]
                for r in c.execute(
                    f"SELECT uuid FROM attachments WHERE resource IN ({marks})", subtree
                )
            ]
            for inst in subtree:
                self._drop_size(c, inst)
            deleted = [
                (lv, pid)
                for lv, pid in c.execute(
                    f"SELECT level, public_id FROM resources WHERE id IN ({marks})", subtree
                )
            ]
            c.execute("DELETE FROM resources WHERE id=?", (rid,))
            # Parents left without children go too, as in Orthanc.
            while parent is not None:
                left = c.execute(
                    "SELECT 1 FROM resources WHERE parent=? LIMIT 1", (parent,)
                ).fetchone()
                if left:
                    break
                prow = c.execute(
                    "SELECT level, public_id, parent FROM resources WHERE id=?", (parent,)
                ).fetchone()
                c.execute("DELETE FROM resources WHERE id=?", (parent,))
                deleted.append((prow[0], prow[1]))
                parent = prow[2]
            c.executemany(
                "INSERT INTO changes(type, level, public_id, date) VALUES(2,?,?,?)",
                [(lv, pid, date) for lv, pid in deleted],
            )
            self._id_cache.clear()
        return uuids, deleted

    # ------------------------------------------------------------ reading

    def _resource(self, row: tuple[Any, ...]) -> Resource:
        return Resource(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            json.loads(row[5]),
            row[6],
            bool(row[7]),
            bool(row[8]),
        )

    _COLS = "id, level, public_id, parent, uid, tags, updated, stable, protected"

    def get(self, public_id: str, level: int | None = None) -> Resource | None:
        row = self.conn.execute(
            f"SELECT {self._COLS} FROM resources WHERE public_id=?", (public_id,)
        ).fetchone()
        if row is None or (level is not None and row[1] != level):
            return None
        return self._resource(row)

    def get_by_id(self, rid: int) -> Resource | None:
        row = self.conn.execute(f"SELECT {self._COLS} FROM resources WHERE id=?", (rid,)).fetchone()
        return self._resource(row) if row else None

    def children(self, rid: int) -> list[Resource]:
        return [
            self._resource(r)
            for r in self.conn.execute(
                f"SELECT {self._COLS} FROM resources WHERE parent=? ORDER BY id", (rid,)
            )
        ]

    def list_public_ids(self, level: int, since: int = 0, limit: int = 0) -> list[str]:
        sql = "SELECT public_id FROM resources WHERE level=? ORDER BY id"
        args: list[Any] = [level]
        if limit or since:
            sql += " LIMIT ? OFFSET ?"
            args += [limit if limit else -1, since]
        return [r[0] for r in self.conn.execute(sql, args)]

    def rows_with_ancestors(
        self,
        level: int,
        uid_in: dict[int, list[str]] | None = None,
        equal: dict[int, dict[str, str]] | None = None,
    ) -> Iterator[tuple[list[dict[str, str]], list[str], list[int]]]:
        """For each resource at `level`: the tags, public IDs and row ids of it and its parents.

        Lists are indexed by level (0 = patient). `uid_in` narrows on identifiers, by level
        ({0: PatientIDs, 1: StudyInstanceUIDs, ...}), using the (level, uid) index; `equal`
        on main tags that must equal a value exactly ({1: {"AccessionNumber": "A12"}}), with
        an index for the accession number, or, for the PatientName, on the start of its
        folded form ({0: {"PatientName": FoldedPrefix("DOE")}}, see matching.exact_value),
        with the index of folded names. Both only narrow: callers still match each row.
        """
        cols = []
        for lv in range(level, -1, -1):
            cols += [f"r{lv}.tags", f"r{lv}.public_id", f"r{lv}.id"]
        equal = equal or {}
        if not uid_in and list(equal) == [PATIENT] and "PatientName" in equal[PATIENT]:
            # Patients by their folded name drive. Without statistics SQLite rates that range
            # worse than walking every series or instance in order (no sort for the ORDER
            # BY): CROSS JOIN keeps the patients in the outer loop.
            joins = ["resources r0"] + [
                f"CROSS JOIN resources r{lv} ON r{lv}.parent = r{lv - 1}.id"
                for lv in range(1, level + 1)
            ]
        else:
            joins = [f"resources r{level}"] + [
                f"JOIN resources r{lv} ON r{lv}.id = r{lv + 1}.parent"
                for lv in range(level - 1, -1, -1)
            ]
        # With a narrowing term, "+" keeps SQLite from walking every resource of the level
        # through the level index: without statistics it guesses that path selective, and
        # each query grew with the archive (a PatientID at 100,000 instances: 17 ms, not 0.1).
        narrowed = bool(uid_in or equal)
        sql = (f"SELECT {', '.join(cols)} FROM {' '.join(joins)} "
               f"WHERE {'+' if narrowed else ''}r{level}.level = ?")
        args: list[Any] = [level]
        for lv, uids in sorted((uid_in or {}).items()):
            sql += f" AND r{lv}.level = {lv} AND r{lv}.uid IN ({','.join('?' * len(uids))})"
            args += uids
        for lv, values in sorted(equal.items()):
            # a range on folded names is rated less selective than the level's index: "+"
            # again, or SQLite walks every patient
            plus = "+" if lv == PATIENT and "PatientName" in values else ""
            sql += f" AND {plus}r{lv}.level = {lv}"
            for keyword, value in sorted(values.items()):
                if not keyword.isalnum():
                    raise ValueError(f"not a DICOM keyword: {keyword!r}")
                if keyword == "PatientName" and lv == PATIENT:
                    # patients' folded names are indexed (schema 4)
                    if isinstance(value, FoldedPrefix):
                        sql += f" AND r{lv}.folded_name >= ?"
                        args.append(str(value))
                        after = _after_prefix(value)
                        if after is not None:
                            sql += f" AND r{lv}.folded_name < ?"
                            args.append(after)
                        continue
                    sql += f" AND r{lv}.folded_name = ?"
                    args.append(fold(value))
                elif isinstance(value, FoldedPrefix):
                    raise ValueError(f"{keyword}: no folded values in the index")
                # the path is written out, not bound, so that the expression index applies
                sql += f" AND json_extract(r{lv}.tags, '$.{keyword}') = ?"
                args.append(value)
        sql += f" ORDER BY r{level}.id"
        parsed: dict[int, dict[str, str]] = {}  # parents recur: decode each one once
        for row in self.conn.execute(sql, args):
            n = level + 1
            tags: list[dict[str, str]] = [{}] * n
            pids: list[str] = [""] * n
            rids: list[int] = [0] * n
            for i, lv in enumerate(range(level, -1, -1)):
                rid = row[3 * i + 2]
                if lv == level:
                    tags[lv] = json.loads(row[3 * i])
                else:
                    cached = parsed.get(rid)
                    if cached is None:
                        cached = parsed[rid] = json.loads(row[3 * i])
                    tags[lv] = cached
                pids[lv] = row[3 * i + 1]
                rids[lv] = rid
            yield tags, pids, rids

    def count_descendants(self, rid: int, level: int, target: int) -> int:
        """How many resources of level `target` lie under resource `rid` at `level`."""
        sql = f"SELECT count(*) FROM resources r{target}"
        for lv in range(target - 1, level - 1, -1):
            sql += f" JOIN resources r{lv} ON r{lv}.id = r{lv + 1}.parent"
        sql += f" WHERE r{level}.id = ?"
        return int(self.conn.execute(sql, (rid,)).fetchone()[0])

    def descendant_tag_values(self, rid: int, level: int, target: int, key: str) -> list[str]:
        sql = f"SELECT DISTINCT json_extract(r{target}.tags, ?) FROM resources r{target}"
        for lv in range(target - 1, level - 1, -1):
            sql += f" JOIN resources r{lv} ON r{lv}.id = r{lv + 1}.parent"
        sql += f" WHERE r{level}.id = ?"
        return sorted(v for (v,) in self.conn.execute(sql, ("$." + key, rid)) if v)

    def instances_under(self, rid: int, level: int) -> list[tuple[str, str, str, str, int]]:
        """(public_id, uuid, sop_class, transfer_syntax, compression) of the instances below."""
        sql = (
            "SELECT r3.public_id, a.uuid, "
            "(SELECT value FROM metadata WHERE resource=r3.id AND type=10), "
            "(SELECT value FROM metadata WHERE resource=r3.id AND type=9), a.compression "
            "FROM resources r3 LEFT JOIN attachments a ON a.resource = r3.id AND a.type = 1"
        )
        for lv in range(2, level - 1, -1):
            sql += f" JOIN resources r{lv} ON r{lv}.id = r{lv + 1}.parent"
        sql += f" WHERE r{level}.id = ? ORDER BY r3.id"
        return [tuple(r) for r in self.conn.execute(sql, (rid,))]

    def attachment(self, rid: int, content_type: int = 1) -> Attachment | None:
        row = self.conn.execute(
            "SELECT uuid, type, size, compressed_size, compression, md5, compressed_md5 "
            "FROM attachments WHERE resource=? AND type=?",
            (rid, content_type),
        ).fetchone()
        return Attachment(*row) if row else None

    def metadata(self, rid: int) -> dict[int, str]:
        """A resource's metadata; LastUpdate of patients, studies and series comes from the
        resource row (kept there so storing an instance writes fewer rows)."""
        c = self.conn
        meta = dict(c.execute("SELECT type, value FROM metadata WHERE resource=?", (rid,)))
        row = c.execute("SELECT level, updated FROM resources WHERE id=?", (rid,)).fetchone()
        if row and row[0] < INSTANCE:
            meta.setdefault(METADATA_NUMBERS["LastUpdate"], iso_of(row[1]))
        return meta

    def set_metadata(self, rid: int, level: int, public_id: str, mtype: int, value: str) -> None:
        with self.write() as c:
            c.execute("INSERT OR REPLACE INTO metadata VALUES(?,?,?)", (rid, mtype, value))
            c.execute(
                "INSERT INTO changes(type, level, public_id, date) VALUES(12,?,?,?)",
                (level, public_id, now_iso()),
            )

    # ------------------------------------------------------------ changes and statistics

    def changes(self, since: int = 0, limit: int = 100) -> tuple[list[dict[str, Any]], bool, int]:
        rows = self.conn.execute(
            "SELECT seq, type, level, public_id, date FROM changes WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (since, limit + 1),
        ).fetchall()
        done = len(rows) <= limit
        rows = rows[:limit]
        last = rows[-1][0] if rows else self.last_change_seq() if done else since
        return [change_json(r) for r in rows], done, last

    def last_change(self) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT seq, type, level, public_id, date FROM changes ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return change_json(row) if row else None

    def last_change_seq(self) -> int:
        row = self.conn.execute("SELECT max(seq) FROM changes").fetchone()
        return int(row[0] or 0)

    def counts(self) -> list[int]:
        out = [0, 0, 0, 0]
        for level, n in self.conn.execute("SELECT level, count(*) FROM resources GROUP BY level"):
            out[level] = n
        return out

    def total_sizes(self) -> tuple[int, int]:
        return (
            int(self.get_property("total_compressed", "0")),
            int(self.get_property("total_size", "0")),
        )

    # ------------------------------------------------------------ stability and recycling

    def unstable(self) -> list[tuple[int, int, str, float]]:
        return [
            tuple(r)
            for r in self.conn.execute(
                "SELECT id, level, public_id, updated FROM resources WHERE level < 3 AND stable = 0"
            )
        ]

    def mark_stable(self, items: list[tuple[int, int, str]]) -> None:
        date = now_iso()
        with self.write() as c:
            c.executemany("UPDATE resources SET stable=1 WHERE id=?", [(i,) for i, _, _ in items])
            c.executemany(
                "INSERT INTO changes(type, level, public_id, date) VALUES(?,?,?,?)",
                [(STABLE_CHANGE[lv], lv, pid, date) for _, lv, pid in items],
            )

    def set_protected(self, rid: int, value: bool) -> None:
        with self.write() as c:
            c.execute("UPDATE resources SET protected=? WHERE id=?", (int(value), rid))

    def oldest_unprotected_patient(self, exclude: str = "") -> str | None:
        row = self.conn.execute(
            "SELECT public_id FROM resources WHERE level=0 AND protected=0 AND public_id != ? "
            "ORDER BY updated LIMIT 1",
            (exclude,),
        ).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------ exports

    def log_export(self, level: int, public_id: str, target: str, uids: list[str]) -> None:
        padded = ([*uids, "", "", "", ""])[:4]
        with self.write() as c:
            c.execute(
                "INSERT INTO exports(level, public_id, target, patient_id, study_uid, "
                "series_uid, sop_uid, date) VALUES(?,?,?,?,?,?,?,?)",
                (level, public_id, target, *padded, now_iso()),
            )

    def has_attachment(self, file_uuid: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM attachments WHERE uuid=?", (file_uuid,))
        return row.fetchone() is not None


def change_json(row: tuple[Any, ...]) -> dict[str, Any]:
    seq, ctype, level, public_id, date = row
    return {
        "ChangeType": CHANGE_TYPES.get(ctype, str(ctype)),
        "Date": date,
        "ID": public_id,
        "Path": f"/{LEVEL_PLURALS[level]}/{public_id}",
        "ResourceType": LEVEL_NAMES[level],
        "Seq": seq,
    }


def _after_prefix(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (in code point order,
    which is SQLite's for UTF-8 text), or None when there is none."""
    while prefix:
        code = ord(prefix[-1]) + 1
        if code <= 0x10FFFF:
            if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored as text
                code = 0xE000
            return prefix[:-1] + chr(code)
        prefix = prefix[:-1]
    return None


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
