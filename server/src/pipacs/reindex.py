"""Rebuilding a lost or corrupt index from the files of the storage area (`pipacs --reindex`)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import dicomfile
from .config import Settings
from .dicomfile import DicomParseError
from .index import INDEX_FILE, METADATA_NUMBERS, Index, IndexLock, iso_of
from .storage import (
    COMPRESSION_NONE,
    COMPRESSION_ZLIB,
    DICOM_ATTACHMENT,
    Attachment,
    StorageArea,
    decode_stored,
)

logger = logging.getLogger(__name__)

QUARANTINE = ".quarantine"
# What plugins derive from the index and the files under IndexDirectory, and keep: a rebuilt
# index starts without it (the DICOMweb metadata cache, current and old layout).
INDEX_CACHES = ("dicomweb-series", "dicomweb-metadata")


@dataclass
class ReindexReport:
    indexed: int = 0
    duplicates: int = 0
    unreadable: list[str] = field(default_factory=list)
    old_index: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"indexed {self.indexed} instance(s) in {self.seconds:.1f} s"]
        if self.old_index:
            lines.append(f"the previous index was kept as {self.old_index}")
        if self.duplicates:
            lines.append(f"{self.duplicates} duplicate file(s) moved to {QUARANTINE}/")
        if self.unreadable:
            lines.append(
                f"{len(self.unreadable)} unreadable file(s) moved to {QUARANTINE}/: "
                + ", ".join(self.unreadable[:10])
                + (" ..." if len(self.unreadable) > 10 else "")
            )
        return "\n".join(lines)


def _set_aside(index_dir: Path) -> str:
    db = index_dir / INDEX_FILE
    if not db.exists():
        return ""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = db.with_name(f"{INDEX_FILE}.broken-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(db) + suffix)
        if src.exists():
            os.replace(src, Path(str(kept) + suffix))
    return str(kept)


def _decode(raw: bytes, name: str) -> tuple[bytes, int]:
    """The DICOM bytes of a stored file and how it was stored (plain or zlib)."""
    if len(raw) >= 132 and raw[128:132] == b"DICM":
        return raw, COMPRESSION_NONE
    try:
        return decode_stored(raw, COMPRESSION_ZLIB, name), COMPRESSION_ZLIB
    except OSError:
        return raw, COMPRESSION_NONE  # a bare dataset, or garbage: parse() decides


def reindex(settings: Settings) -> ReindexReport:
    """Replace the index with one rebuilt from the storage area; nothing is deleted."""
    t0 = time.monotonic()
    report = ReindexReport()
    index_dir = Path(settings.index_dir)
    lock = IndexLock(index_dir)
    try:
        _rebuild(settings, index_dir, report)
    finally:
        lock.release()
    report.seconds = time.monotonic() - t0
    return report


def _rebuild(settings: Settings, index_dir: Path, report: ReindexReport) -> None:
    report.old_index = _set_aside(index_dir)
    for name in INDEX_CACHES:
        shutil.rmtree(index_dir / name, ignore_errors=True)
    storage = StorageArea(
        settings.storage_directory,
        compress=settings.storage_compression,
        md5=settings.store_md5_for_attachments,
        sync=False,
    )
    quarantine = storage.root / QUARANTINE
    # Staged files may have been acknowledged just before the crash: index them too.
    for staged in sorted(storage.incoming.iterdir()):
        storage._move_into_place(staged.name, staged.name.partition(".")[0])
    index = Index(index_dir, sync=False)
    try:
        for path in storage.files():
            outcome = _index_file(index, storage, path, settings, report)
            if outcome != "Success":
                quarantine.mkdir(exist_ok=True)
                shutil.move(str(path), quarantine / path.name)
    finally:
        index.truncate_wal()
        index.close()


def _index_file(
    index: Index, storage: StorageArea, path: Path, settings: Settings, report: ReindexReport
) -> str:
    try:
        status = index_stored_file(
            index, settings, path.name, path.read_bytes(), path.stat().st_mtime
        )
    except (OSError, DicomParseError) as e:
        logger.warning("cannot index %s: %s", path, e)
        report.unreadable.append(path.name)
        return "Unreadable"
    if status == "Success":
        report.indexed += 1
    else:
        report.duplicates += 1
    return status


def index_stored_file(
    index: Index, settings: Settings, file_uuid: str, stored: bytes, mtime: float
) -> str:
    """Index one file of the storage area under its own uuid; "Success" or "AlreadyStored".

    Raises DicomParseError when the file is not an instance pipacs can index.
    """
    raw, compression = _decode(stored, file_uuid)
    parsed = dicomfile.parse(raw, settings.default_encoding)
    md5 = hashlib.md5(raw).hexdigest() if settings.store_md5_for_attachments else ""
    cmd5 = hashlib.md5(stored).hexdigest() if md5 and compression == COMPRESSION_ZLIB else md5
    att = Attachment(file_uuid, DICOM_ATTACHMENT, len(raw), len(stored), compression, md5, cmd5)
    meta, _ = dicomfile.split_meta(raw)
    metadata = {
        METADATA_NUMBERS["ReceptionDate"]: iso_of(mtime),
        METADATA_NUMBERS["Origin"]: "Unknown",
        METADATA_NUMBERS["TransferSyntax"]: parsed.transfer_syntax,
        METADATA_NUMBERS["SopClassUid"]: parsed.sop_class_uid,
    }
    aet = str(meta.get("SourceApplicationEntityTitle", "") or "").strip() if meta else ""
    if aet:
        metadata[METADATA_NUMBERS["RemoteAET"]] = aet
    return index.store_instance(parsed.ids, parsed.uids, parsed.tags, att, metadata).status
