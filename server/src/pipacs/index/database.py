"""The index's database: pooled reading connections, one writer with grouped commits,
durability and checkpoints (the write path every change goes through)."""

from __future__ import annotations

import collections
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from ..storage import make_dirs
from .errors import IndexError_
from .schema import INDEX_FILE, SCHEMA_VERSION, check_version, migrate, stored_version

logger = logging.getLogger(__name__)
T = TypeVar("T")


class IndexLock:
    """An exclusive lock on an index folder: one pipacs process (or --reindex) at a time."""

    def __init__(self, folder: str | Path):
        import fcntl

        make_dirs(folder)  # durable in its parent: the index is made in it next
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


class Database:
    """The connections and the write path of the index (see Index, which adds the questions
    and the changes)."""

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
        make_dirs(self.folder, sync=sync)  # durable: what a cut loses in it is then SQLite's
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
        self._page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])

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
    def _conn(self) -> sqlite3.Connection:
        """This thread's reading connection (private: only pipacs.index runs SQL)."""
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
    def _write(self) -> Iterator[sqlite3.Connection]:
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

    def _grouped(self, work: Callable[[sqlite3.Connection], T]) -> T:
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
            with self._write() as c:  # the write lock is held already (it is reentrant)
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
        c = self._conn
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

    def truncate_wal(self) -> None:
        """Copy the whole WAL into the database and cut it to nothing (after --reindex, so
        that the rebuilt index is one file)."""
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ------------------------------------------------------------ schema

    def schema_version(self) -> int:
        return stored_version(self._conn, self.path)

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
        check_version(version, self.path, upgrade)
        for step in range(version, target):
            logger.info("index schema: migrating to version %d", step + 1)
            with self._write() as w:
                migrate(w, step)

    # ------------------------------------------------------------ properties

    def get_property(self, key: str, default: str = "") -> str:
        row = self._conn.execute("SELECT value FROM properties WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_property(self, key: str, value: str) -> None:
        with self._write() as w:
            w.execute("INSERT OR REPLACE INTO properties(key, value) VALUES(?, ?)", (key, value))

