"""The storage area: files fanned out as Orthanc does, written crash-safe."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import struct
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
    """Stores blobs under ROOT/ab/cd/<uuid>, in two steps that survive a crash at any point.

    `write` puts the bytes in ROOT/.incoming/<uuid> and fsyncs them; the caller then records
    the file in the index (one transaction, fsynced) and calls `commit`, which renames it
    into place, or `discard`. After a crash, `recover` finishes what the index knows about
    and removes the rest, so files and index always agree, looking only at .incoming.
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
        self.incoming = self.root / self.INCOMING
        self.incoming.mkdir(parents=True, exist_ok=True)

    def path(self, file_uuid: str) -> Path:
        return self.root / file_uuid[0:2] / file_uuid[2:4] / file_uuid

    def write(self, data: bytes, content_type: int = DICOM_ATTACHMENT) -> Attachment:
        """Stage `data` durably in .incoming; `commit` or `discard` it next."""
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
        staged = self.incoming / file_uuid
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
        return Attachment(
            file_uuid, content_type, len(data), len(stored), compression, digest, cdigest
        )

    def commit(self, file_uuid: str) -> None:
        """Move a staged file into place (after the index has recorded it).

        The new directory entry is not fsynced: if it is lost, the file is still in
        .incoming, and `recover` moves it again on the next start.
        """
        target = self.path(file_uuid)
        folder = str(target.parent)
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        os.rename(self.incoming / file_uuid, target)

    def discard(self, file_uuid: str) -> None:
        _unlink_quietly(self.incoming / file_uuid)

    def recover(self, indexed: Callable[[str], bool]) -> tuple[int, int]:
        """Finish or undo writes interrupted by a crash; return (committed, discarded)."""
        committed = discarded = 0
        for staged in sorted(self.incoming.iterdir()):
            if indexed(staged.name):
                self.commit(staged.name)
                committed += 1
            else:
                _unlink_quietly(staged)
                discarded += 1
        return committed, discarded

    def read(self, att: Attachment | str, compression: int | None = None) -> bytes:
        file_uuid = att if isinstance(att, str) else att.uuid
        comp = (
            compression
            if compression is not None
            else (COMPRESSION_NONE if isinstance(att, str) else att.compression)
        )
        try:
            raw = self.path(file_uuid).read_bytes()
        except FileNotFoundError:
            # Between the index commit and `commit`, the file is still staged.
            raw = (self.incoming / file_uuid).read_bytes()
        return decode_stored(raw, comp, file_uuid)

    def remove(self, file_uuid: str) -> None:
        _unlink_quietly(self.path(file_uuid))

    def files(self) -> Iterator[Path]:
        """Every stored file (not the staged ones), in storage order."""
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
