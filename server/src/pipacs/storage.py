"""The storage area: files fanned out as Orthanc does, written crash-safe."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

COMPRESSION_NONE, COMPRESSION_ZLIB = 1, 2
DICOM_ATTACHMENT = 1


class StorageFullError(OSError):
    """The disk holding the storage area has no room left."""


@dataclass(frozen=True)
class Attachment:
    """A file in the storage area, as the index records it."""

    uuid: str
    content_type: int
    size: int
    compressed_size: int
    compression: int
    md5: str
    compressed_md5: str


class StorageArea:
    """Stores blobs under ROOT/ab/cd/<uuid>; one fsync per file, and no file ever lost.

    A write is staged as ROOT/.incoming/<uuid>.<crc32> and fsynced, and so is its name in
    .incoming (one fsync of the folder for the writes made meanwhile: see GroupedSync),
    before the instance is acknowledged. The index records it in a transaction that is not
    fsynced on its own (SD cards are slow at fsyncs); a background step makes a batch of
    commits durable with one checkpoint, then `settle`s the batch: moves the files into
    place. So a file outside .incoming is always durably indexed, and after a power cut
    `recover` puts back what the index knows, re-indexes complete staged files the index
    lost (their CRC proves them whole), and removes partial ones (never acknowledged).

    Every folder is made durable in its parent before anything durable depends on it: ROOT
    and .incoming when the area opens, a new fan-out folder before a file settles in it. A
    journalled file system (ext4) keeps names through a file's fsync anyway (its journal
    commits in order); one without that ordering (ext2, ext4 without a journal) keeps a
    name only once its folder is fsynced: bench/powercut.py --strict lost every instance.
    On ext4 the folder's fsync finds the journal committed and costs a cache flush.
    """

    INCOMING = ".incoming"
    OVERLAP_BYTES = 64 * 1024  # from this size a file's MD5 is computed during its fsync

    def __init__(
        self, root: str | Path, *, compress: bool = False, md5: bool = True, sync: bool = True
    ):
        self.root = Path(root)
        self.compress = compress
        self.md5 = md5
        self.sync = sync
        self._made: set[str] = set()
        self._unsynced_parents: set[str] = set()  # of fan-out folders made since a settle
        self._staged: dict[str, str] = {}  # uuid -> staged file name
        self._lock = threading.Lock()
        self._stuck_since = 0.0  # when files first could not settle (a full disk)
        # fsyncs of large files, run while the writing thread computes their MD5
        self._syncer = futures.ThreadPoolExecutor(8, thread_name_prefix="fsync")
        self.incoming = self.root / self.INCOMING
        make_dirs(self.incoming, sync=sync)
        # fsyncs of .incoming, shared by the writes that need one at the same time
        self._incoming_sync = GroupedSync(str(self.incoming))
        # The same as strings: the store path builds a few paths per file (pathlib's
        # objects cost more than the rest of a small file's write).
        self._root_s = str(self.root)
        self._incoming_s = str(self.incoming)

    def path(self, file_uuid: str) -> Path:
        return self.root / file_uuid[0:2] / file_uuid[2:4] / file_uuid

    def _folder(self, file_uuid: str) -> str:
        """The fan-out folder of a file, as a string (`path` without pathlib, for the store
        path)."""
        return f"{self._root_s}/{file_uuid[0:2]}/{file_uuid[2:4]}"

    def current_path(self, file_uuid: str) -> Path:
        """Where the file is now: staged in .incoming, or in place."""
        with self._lock:
            staged = self._staged.get(file_uuid)
        return self.incoming / staged if staged else self.path(file_uuid)

    def write(self, data: bytes, content_type: int = DICOM_ATTACHMENT) -> Attachment:
        """Stage `data` durably; then `settle` it once indexed, or `discard` it."""
        file_uuid = str(uuid.uuid4())
        if self.compress:
            stored = struct.pack("<Q", len(data)) + zlib.compress(data, 6)
            compression = COMPRESSION_ZLIB
        else:
            stored = data
            compression = COMPRESSION_NONE
        name = f"{file_uuid}.{zlib.crc32(stored):08x}"
        staged = f"{self._incoming_s}/{name}"
        folder = self._folder(file_uuid)
        digests: list[str] = []

        def side_work() -> None:
            # The file's folder is made now, so that settling it needs no room on the disk.
            self._make_folder(folder)
            if self.md5:
                digest = hashlib.md5(data).hexdigest()
                digests.extend((digest, hashlib.md5(stored).hexdigest()
                                if stored is not data else digest))

        try:
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                view = memoryview(stored)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if self.sync and len(stored) >= self.OVERLAP_BYTES:
                    # fsync and MD5 both release the GIL: a large file's sum (about 1 ms per
                    # 0.5 MB) and its fan-out folder are made while the disk syncs it.
                    synced = self._syncer.submit(os.fsync, fd)
                    try:
                        side_work()
                    finally:
                        failed = synced.exception()  # waits for the fsync, whatever happened
                    if failed is not None:
                        raise failed
                else:
                    side_work()
                    if self.sync:
                        os.fsync(fd)
            finally:
                os.close(fd)
            if self.sync:  # the file's name, which its own fsync may not make durable
                self._incoming_sync.sync()
        except OSError as e:
            _unlink_quietly(staged)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(e.errno, f"no space left in {self.root}") from e
            raise
        digest, cdigest = digests if digests else ("", "")
        with self._lock:
            self._staged[file_uuid] = name
        return Attachment(
            file_uuid, content_type, len(data), len(stored), compression, digest, cdigest
        )

    def settle(self, file_uuids: list[str]) -> list[str]:
        """Move staged files into place (their index rows are durable now).

        Returns the files that cannot move yet (on a full disk a new fan-out folder cannot
        be made): they stay staged and readable, to be settled on a later try.
        """
        left = []
        for file_uuid in file_uuids:
            with self._lock:
                name = self._staged.get(file_uuid)
            if name is None:
                continue  # deleted meanwhile
            try:
                self._move_into_place(name, file_uuid)
            except OSError as e:
                left.append(file_uuid)
                self._stuck(e)
                continue
            with self._lock:
                self._staged.pop(file_uuid, None)
        if not left and self._stuck_since:
            logger.warning("staged files settle again in %s", self.root)
            self._stuck_since = 0.0
        return left

    def _stuck(self, e: OSError) -> None:
        if not self._stuck_since:
            self._stuck_since = time.monotonic()
            logger.warning("cannot move stored files into place yet (%s); they stay in %s, "
                           "readable, until there is room", e, self.incoming)

    def staged(self) -> list[str]:
        """The files still staged (written, indexed or not yet durably so)."""
        with self._lock:
            return list(self._staged)

    def _move_into_place(self, name: str, file_uuid: str) -> None:
        folder = self._folder(file_uuid)
        self._make_folder(folder)
        self._sync_new_folders()
        try:
            os.rename(f"{self._incoming_s}/{name}", f"{folder}/{file_uuid}")
        except FileNotFoundError:
            pass  # removed meanwhile

    def _make_folder(self, folder: str) -> None:
        if folder in self._made:
            return
        for path in (os.path.dirname(folder), folder):  # ROOT/ab, then ROOT/ab/cd
            try:
                os.mkdir(path)
            except FileExistsError:
                continue
            with self._lock:
                self._unsynced_parents.add(os.path.dirname(path))
        self._made.add(folder)

    def _sync_new_folders(self) -> None:
        """Make the fan-out folders made so far durable, before a file settles in one: a
        rename into a folder whose own name a power cut loses would lose the file (made
        in the write path, they are synced here, off it, once for a batch)."""
        if not self._unsynced_parents or not self.sync:
            return
        with self._lock:
            parents, self._unsynced_parents = sorted(self._unsynced_parents), set()
        try:
            for parent in parents:  # ROOT before ROOT/ab
                fsync_dir(parent)
        except OSError:
            with self._lock:
                self._unsynced_parents.update(parents)
            raise

    def discard(self, file_uuid: str) -> None:
        with self._lock:
            name = self._staged.pop(file_uuid, None)
        if name:
            _unlink_quietly(self.incoming / name)

    def recover(
        self, indexed: Callable[[str], bool], reindex: Callable[[str, bytes], bool | None]
    ) -> tuple[int, int, int]:
        """After a crash: (files put in place, files re-indexed, partial files removed).

        `reindex` returns True (indexed), False (not an instance: removed) or None (cannot
        be indexed now, say on a full disk: the file stays staged for the next start). A file
        that cannot move into place stays staged and readable; `staged` lists it for a later
        `settle`.
        """
        placed = reindexed = removed = 0
        for staged in sorted(self.incoming.iterdir()):
            file_uuid, _, crc = staged.name.partition(".")
            if indexed(file_uuid):
                self._place_recovered(staged.name, file_uuid)
                placed += 1
                continue
            try:
                stored = staged.read_bytes()
                whole = crc == f"{zlib.crc32(stored):08x}"
            except OSError:
                whole = False
            done = reindex(file_uuid, stored) if whole else False
            if done:
                self._place_recovered(staged.name, file_uuid)
                reindexed += 1
            elif done is None:
                logger.warning("staged file %s kept for the next start", staged)
            else:
                _unlink_quietly(staged)
                removed += 1
        return placed, reindexed, removed

    def _place_recovered(self, name: str, file_uuid: str) -> None:
        try:
            self._move_into_place(name, file_uuid)
        except OSError as e:
            self._stuck(e)
            with self._lock:
                self._staged[file_uuid] = name

    def read(self, att: Attachment | str, compression: int | None = None) -> bytes:
        file_uuid = att if isinstance(att, str) else att.uuid
        comp = (
            compression
            if compression is not None
            else (COMPRESSION_NONE if isinstance(att, str) else att.compression)
        )
        return decode_stored(self.read_stored(file_uuid), comp, file_uuid)

    def read_stored(self, file_uuid: str) -> bytes:
        """The bytes as stored (compressed when StorageCompression), staged or settled."""
        try:
            return self.current_path(file_uuid).read_bytes()
        except FileNotFoundError:
            return self.path(file_uuid).read_bytes()  # settled between the look-up and read

    def read_head(self, file_uuid: str, size: int) -> tuple[bytes, int]:
        """The first `size` bytes of a file stored uncompressed, and its length."""
        try:
            f = self.current_path(file_uuid).open("rb")
        except FileNotFoundError:
            f = self.path(file_uuid).open("rb")  # settled between the look-up and open
        with f:
            return f.read(size), os.fstat(f.fileno()).st_size

    def remove(self, file_uuid: str) -> None:
        with self._lock:
            name = self._staged.pop(file_uuid, None)
        if name:
            _unlink_quietly(self.incoming / name)
        _unlink_quietly(self.path(file_uuid))

    def files(self) -> Iterator[Path]:
        """Every settled file, in storage order."""
        for top in sorted(self.root.iterdir()):
            if len(top.name) != 2 or not top.is_dir():
                continue
            for sub in sorted(top.iterdir()):
                if sub.is_dir():
                    yield from sorted(p for p in sub.iterdir() if p.is_file())

    def free_bytes(self) -> int:
        return free_bytes(self.root)


class SpaceReserve:
    """A file that holds a little disk space back for the index.

    SQLite needs room to delete (its WAL grows with every commit) and to open an index
    (its -shm file). On a full disk the reserve is given up for exactly those, so that a
    teacher can still delete studies over REST, and pipacs can still start, to make room;
    it is made again once the disk has room to spare.
    """

    NAME = "pipacs-reserve"
    SIZE = 1 << 20  # at most; 1/32 of a small filesystem

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / self.NAME

    def size(self) -> int:
        st = os.statvfs(self.folder)
        return min(self.SIZE, st.f_blocks * st.f_frsize // 32)

    def ensure(self) -> bool:
        """Make the reserve when it is missing and the disk has room to spare; True if held."""
        if self.path.exists():
            return True
        try:
            size = self.size()
            if free_bytes(self.folder) < 4 * size:
                return False
            part = self.path.with_name(self.NAME + ".part")
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    os.write(fd, bytes(size))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(part, self.path)
        except OSError as e:
            logger.info("no space reserve for the index in %s yet: %s", self.folder, e)
            _unlink_quietly(self.path.with_name(self.NAME + ".part"))
            return False
        return True

    def release(self) -> bool:
        """Give the reserved space back to the disk; False when there was none to give."""
        try:
            size = self.path.stat().st_size
            self.path.unlink()
        except FileNotFoundError:
            return False
        logger.warning("the disk of %s is full: its space reserve (%d KB) is released for the "
                       "index", self.folder, size // 1024)
        return True


class GroupedSync:
    """fsyncs of one folder shared by the threads that need one at the same time: a caller
    waits for an fsync that started after it called (so that it covers what the caller did
    before), running it itself when none is running. With parallel writers this makes one
    directory fsync per batch instead of one per file."""

    def __init__(self, folder: str):
        self.folder = folder
        self._cond = threading.Condition()
        self._started = 0  # fsyncs started, numbered from 1
        self._done = 0  # the number of the last one that completed
        self._running = False

    def sync(self) -> None:
        with self._cond:
            need = self._started + 1  # the first that can start after this call
            while self._done < need:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                number = self._started
                self._cond.release()
                try:
                    fsync_dir(self.folder)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
                self._done = number


def fsync_dir(folder: str | Path) -> None:
    """Make a folder's entries durable (the names of the files and folders made in it)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: str | Path, *, sync: bool = True) -> None:
    """os.makedirs, each folder made being made durable in its parent (`sync`)."""
    missing = []
    path = os.path.abspath(folder)
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    if sync:
        for made in reversed(missing):
            fsync_dir(os.path.dirname(made))


def free_bytes(folder: str | Path) -> int:
    """The room left for new files on the disk holding `folder`."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def decode_stored(raw: bytes, compression: int, name: str = "") -> bytes:
    """The original bytes of a stored file (decompressing zlib storage)."""
    if compression == COMPRESSION_ZLIB:
        if len(raw) < 8:
            raise OSError(errno.EIO, f"stored file {name} is corrupt (truncated)")
        (size,) = struct.unpack("<Q", raw[:8])
        try:
            data = zlib.decompress(raw[8:])
        except zlib.error as e:
            raise OSError(errno.EIO, f"stored file {name} is corrupt ({e})") from e
        if len(data) != size:
            raise OSError(errno.EIO, f"stored file {name} is corrupt (size mismatch)")
        return data
    return raw


def _unlink_quietly(p: str | Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
    except OSError as e:
        logger.warning("cannot remove %s: %s", p, e)
