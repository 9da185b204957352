"""The storage area: files fanned out as Orthanc does, written crash-safe."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import struct
import uuid
import zlib
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
    """Stores blobs under ROOT/ab/cd/<uuid>; writes are temp file, fsync, rename."""

    def __init__(
        self, root: str | Path, *, compress: bool = False, md5: bool = True, sync: bool = True
    ):
        self.root = Path(root)
        self.compress = compress
        self.md5 = md5
        self.sync = sync
        self._made: set[str] = set()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, file_uuid: str) -> Path:
        return self.root / file_uuid[0:2] / file_uuid[2:4] / file_uuid

    def write(self, data: bytes, content_type: int = DICOM_ATTACHMENT) -> Attachment:
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
        target = self.path(file_uuid)
        folder = str(target.parent)
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        tmp = target.with_name("." + file_uuid + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                view = memoryview(stored)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if self.sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            # No fsync of the folder here: the index commit that follows fsyncs the SQLite
            # WAL, and on a journalling file system (ext4 on Raspberry Pi OS, xfs) that
            # commits the journal holding this rename too. The data itself was fsynced above,
            # which the journal does not cover.
            os.rename(tmp, target)
        except OSError as e:
            _unlink_quietly(tmp)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(e.errno, f"no space left in {self.root}") from e
            raise
        return Attachment(
            file_uuid, content_type, len(data), len(stored), compression, digest, cdigest
        )

    def read(self, att: Attachment | str, compression: int | None = None) -> bytes:
        file_uuid = att if isinstance(att, str) else att.uuid
        comp = (
            compression
            if compression is not None
            else (COMPRESSION_NONE if isinstance(att, str) else att.compression)
        )
        raw = self.path(file_uuid).read_bytes()
        if comp == COMPRESSION_ZLIB:
            (size,) = struct.unpack("<Q", raw[:8])
            data = zlib.decompress(raw[8:])
            if len(data) != size:
                raise OSError(errno.EIO, f"stored file {file_uuid} is corrupt (size mismatch)")
            return data
        return raw

    def remove(self, file_uuid: str) -> None:
        _unlink_quietly(self.path(file_uuid))

    def clean_temporaries(self) -> int:
        """Remove temp files left by a crash mid-write; return how many."""
        n = 0
        for tmp in self.root.glob("*/*/.*.tmp"):
            _unlink_quietly(tmp)
            n += 1
        return n

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize


def _unlink_quietly(p: Path) -> None:
    try:
        p.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        logger.warning("cannot remove %s: %s", p, e)
