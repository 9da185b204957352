"""Part 10 file meta information: reading it (by hand, else with pydicom) and writing it."""

from __future__ import annotations

import io
import struct

import pydicom
from pydicom.dataset import FileMetaDataset

from .tagscan import LONG_VRS, DicomParseError


def split_meta(raw: bytes) -> tuple[FileMetaDataset | None, int]:
    """Parse the file meta information of a Part 10 stream; return it and the dataset offset."""
    if len(raw) >= 132 and raw[128:132] == b"DICM":
        fp = io.BytesIO(raw)
        fp.seek(132)
        try:
            meta = pydicom.filereader._read_file_meta_info(fp)
            for tag in list(meta.keys()):
                meta[tag]  # decode now: pydicom converts lazily and may fail later
        except Exception as e:  # untrusted bytes into a third-party parser: any failure
            raise DicomParseError(
                f"unreadable file meta information ({type(e).__name__}: {e})"
            ) from e
        return meta, fp.tell()
    return None, 0


_META_HEAD = struct.Struct("<HH2sH")


def meta_summary(raw: bytes) -> tuple[str, str, int] | None:
    """(transfer syntax, media storage SOP class, dataset offset) of a Part 10 stream, read
    by hand; None when anything is unusual (pydicom's `split_meta` then decides).

    Every stored instance passes here: pydicom's meta reader cost more than the rest of the
    tag scan. Like pydicom, it reads group 0002 elements until another group starts.
    """
    if len(raw) < 144 or raw[128:132] != b"DICM":
        return None
    pos, end = 132, len(raw)
    ts = sop_class = ""
    while pos + 8 <= end:
        group, element, vr, short = _META_HEAD.unpack_from(raw, pos)
        if group != 2:
            break
        if vr in LONG_VRS:
            if short or pos + 12 > end:
                return None
            length = int.from_bytes(raw[pos + 8 : pos + 12], "little")
            pos += 12
        elif not vr.isalpha() or not vr.isupper():
            return None
        else:
            length = short
            pos += 8
        if length == 0xFFFFFFFF or pos + length > end:
            return None
        if element == 0x0010:
            ts = raw[pos : pos + length].decode("latin-1").strip("\x00").strip()
        elif element == 0x0002:
            sop_class = raw[pos : pos + length].decode("latin-1").strip("\x00").strip()
        pos += length
    if pos == 132 or not ts:
        return None
    return ts, sop_class, pos


def ensure_part10(
    raw: bytes, sop_class: str, sop_uid: str, transfer_syntax: str, source_aet: str = ""
) -> bytes:
    """Prefix a bare dataset with a preamble and file meta information."""
    if len(raw) >= 132 and raw[128:132] == b"DICM":
        return raw
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.UID(sop_class)
    meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(sop_uid)
    meta.TransferSyntaxUID = pydicom.uid.UID(transfer_syntax)
    meta.ImplementationClassUID = pydicom.uid.UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if source_aet:
        meta.SourceApplicationEntityTitle = source_aet
    buf = pydicom.filebase.DicomBytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue() + raw


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    if vr == b"OB":
        return struct.pack("<HH2sHI", 2, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 2, element, vr, len(value)) + value


def part10_header(
    sop_class: str, sop_uid: str, transfer_syntax: str, source_aet: str = ""
) -> bytes:
    """Preamble, prefix and file meta information for a dataset received over the network.

    Written by hand: building it with pydicom cost as much as the rest of a C-STORE.
    """
    body = b"".join(
        (
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", sop_class.encode("ascii")),
            _meta_element(0x0003, b"UI", sop_uid.encode("ascii")),
            _meta_element(0x0010, b"UI", transfer_syntax.encode("ascii")),
            _meta_element(0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
            _meta_element(0x0013, b"SH", IMPLEMENTATION_VERSION.encode("ascii")),
            _meta_element(0x0016, b"AE", source_aet.encode("ascii", "replace"))
            if source_aet
            else b"",
        )
    )
    length = struct.pack("<HH2sHI", 2, 0x0000, b"UL", 4, len(body))
    return b"\x00" * 128 + b"DICM" + length + body


IMPLEMENTATION_CLASS_UID = "2.25.241860311337419082433625405283165789644"
IMPLEMENTATION_VERSION = "PIPACS_01"
