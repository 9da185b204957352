"""The storage area: files fanned out as Orthanc does, written crash-safe."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import struct
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
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

    A write is staged as ROOT/.incoming/<uuid>.<crc32> and fsynced before the instance is
    acknowledged. The index records it in a transaction that is not fsynced on its own (one
    fsync per instance instead of two: SD cards are slow at them); a background step makes
    a batch of commits durable with one checkpoint, then `settle`s the batch: moves the
    files into place. So a file outside .incoming is always durably indexed, and after a
    power cut `recover` puts back what the index knows, re-indexes complete staged files the
    index lost (their CRC proves them whole), and removes partial ones (never acknowledged).
    """

    INCOMING = ".incoming"

    def __init__(
        self, root: str | Path, *, compress: bool = False, md5: bool = True, sync: bool = True
    ):
        self.root = Path(root)
        self.compress = compress
        self.md5 = md5
        self.sync = sync
        self._made: set[str] = set()
        self._staged: dict[str, str] = {}  # uuid -> staged file name
        self._lock = threading.Lock()
        self.incoming = self.root / self.INCOMING
        self.incoming.mkdir(parents=True, exist_ok=True)

    def path(self, file_uuid: str) -> Path:
        return self.root / file_uuid[0:2] / file_uuid[2:4] / file_uuid

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
        digest = hashlib.md5(data).hexdigest() if self.md5 else ""
        cdigest = (
            (hashlib.md5(stored).hexdigest() if stored is not data else digest) if self.md5 else ""
        )
        name = f"{file_uuid}.{zlib.crc32(stored):08x}"
        staged = self.incoming / name
        try:
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                view = memoryview(stored)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if self.sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            _unlink_quietly(staged)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(e.errno, f"no space left in {self.root}") from e
            raise
        with self._lock:
            self._staged[file_uuid] = name
        return Attachment(
            file_uuid, content_type, len(data), len(stored), compression, digest, cdigest
        )

    def settle(self, file_uuids: list[str]) -> None:
        """Move staged files into place (their index rows are durable now)."""
        for file_uuid in file_uuids:
            with self._lock:
                name = self._staged.get(file_uuid)
            if name is None:
                continue  # deleted meanwhile
            self._move_into_place(name, file_uuid)
            with self._lock:
                self._staged.pop(file_uuid, None)

    def _move_into_place(self, name: str, file_uuid: str) -> None:
        target = self.path(file_uuid)
        folder = str(target.parent)
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        try:
            os.rename(self.incoming / name, target)
        except FileNotFoundError:
            pass  # removed meanwhile

    def discard(self, file_uuid: str) -> None:
        with self._lock:
            name = self._staged.pop(file_uuid, None)
        if name:
            _unlink_quietly(self.incoming / name)

    def recover(
        self, indexed: Callable[[str], bool], reindex: Callable[[str, bytes], bool]
    ) -> tuple[int, int, int]:
        """After a crash: (files put in place, files re-indexed, partial files removed)."""
        placed = reindexed = removed = 0
        for staged in sorted(self.incoming.iterdir()):
            file_uuid, _, crc = staged.name.partition(".")
            if indexed(file_uuid):
                self._move_into_place(staged.name, file_uuid)
                placed += 1
                continue
            try:
                stored = staged.read_bytes()
                whole = crc == f"{zlib.crc32(stored):08x}"
            except OSError:
                whole = False
            if whole and reindex(file_uuid, stored):
                self._move_into_place(staged.name, file_uuid)
                reindexed += 1
            else:
                _unlink_quietly(staged)
                removed += 1
        return placed, reindexed, removed

    def read(self, att: Attachment | str, compression: int | None = None) -> bytes:
        file_uuid = att if isinstance(att, str) else att.uuid
        comp = (
            compression
            if compression is not None
            else (COMPRESSION_NONE if isinstance(att, str) else att.compression)
        )
        try:
            raw = self.current_path(file_uuid).read_bytes()
        except FileNotFoundError:
            raw = self.path(file_uuid).read_bytes()  # settled between the look-up and read
        return decode_stored(raw, comp, file_uuid)

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
        st = os.statvfs(self.root)
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


def _unlink_quietly(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        logger.warning("cannot remove %s: %s", p, e)
