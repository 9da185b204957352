"""Reading the few tags the index needs from a DICOM byte stream, without decoding the rest.

Little endian datasets go through the hand-written scanner (`tagscan`), anything else through
pydicom; the file meta information is read and written in `part10`. The names other modules
use are all importable from here.
"""

from __future__ import annotations

import functools
import io
import logging
import struct
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from . import ids
from .part10 import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    ensure_part10,
    meta_summary,
    part10_header,
    split_meta,
)
from .tagscan import (
    ALL_KEYWORDS,
    ENCODINGS,
    EXTRA_TAGS,
    LEVEL_UID,
    MAIN_TAGS,
    DicomParseError,
    scan,
)
from .values import format_value

__all__ = [
    "ENCODINGS",
    "EXTRA_TAGS",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION",
    "LEVEL_UID",
    "MAIN_TAGS",
    "DicomParseError",
    "ParsedInstance",
    "ensure_part10",
    "meta_summary",
    "parse",
    "part10_header",
    "read_full",
    "scan",
    "split_meta",
    "values_of",
]

logger = logging.getLogger(__name__)

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

_WANTED: list[Any] = [Tag(k) for k in ALL_KEYWORDS]


@dataclass
class ParsedInstance:
    """What the index needs to know of one instance."""

    tags: list[dict[str, str]]  # main tags per level
    sop_class_uid: str
    transfer_syntax: str
    ids: tuple[str, str, str, str] = field(default=("", "", "", ""))

    @property
    def uids(self) -> tuple[str, str, str, str]:
        return tuple(self.tags[i].get(LEVEL_UID[i], "") for i in range(4))  # type: ignore[return-value]


def values_of(ds: Dataset, keywords: tuple[str, ...] | list[str]) -> dict[str, str]:
    out = {}
    for kw in keywords:
        try:
            # data_element: Dataset.get(keyword) gives the value, not the element
            elem = ds.data_element(kw)
        except (KeyError, ValueError, TypeError):
            elem = None
        if elem is not None and elem.VR != "SQ":
            try:
                out[kw] = format_value(elem.value)
            except (ValueError, UnicodeError, struct.error) as e:
                logger.debug("tag %s unreadable: %s", kw, e)
    return out


@functools.lru_cache(maxsize=64)
def _transfer_syntax(ts: str) -> tuple[str, bool, bool, bool, bool]:
    """(uid, known, little endian, implicit VR, deflated) of a transfer syntax UID."""
    uid = pydicom.uid.UID(ts)
    if not uid.is_transfer_syntax:
        return ts, False, False, False, False
    return str(uid), True, uid.is_little_endian, uid.is_implicit_VR, uid.is_deflated


def parse(
    raw: bytes, default_encoding: str = "Latin1", transfer_syntax: str | None = None
) -> ParsedInstance:
    """Read the index tags from a DICOM Part 10 file (or a bare dataset with `transfer_syntax`).

    Little endian files are scanned directly (the hot path of every C-STORE); other syntaxes
    and anything the scanner does not expect go through pydicom. Raises DicomParseError
    naming what is wrong.
    """
    if len(raw) < 8:
        raise DicomParseError(f"only {len(raw)} bytes: too short to be DICOM")
    quick = meta_summary(raw)
    if quick is not None:
        return _parse_dataset(raw, quick[2], quick[0], quick[1], default_encoding)
    try:
        meta, offset = split_meta(raw)
    except (
        EOFError,
        struct.error,
        ValueError,
        OSError,
        InvalidDicomError,
        KeyError,
        TypeError,
        AttributeError,
        NotImplementedError,
    ) as e:
        raise DicomParseError(f"unreadable file meta information ({type(e).__name__}: {e})") from e
    ts = transfer_syntax
    if meta is not None:
        ts = str(meta.get("TransferSyntaxUID", "") or "").strip("\x00 ") or ts
    if not ts:
        raise DicomParseError("no DICM prefix and no transfer syntax: not a DICOM file")
    media_sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "") if meta else ""
    return _parse_dataset(raw, offset, ts, media_sop_class, default_encoding)


def _parse_dataset(
    raw: bytes, offset: int, ts: str, media_sop_class: str, default_encoding: str
) -> ParsedInstance:
    uid, known, little, implicit, deflated = _transfer_syntax(ts)
    if not known:
        raise DicomParseError(f"unknown transfer syntax {ts}")
    values: dict[str, str] | None = None
    if little and not deflated:
        try:
            values = scan(raw, offset, implicit, default_encoding)
        except DicomParseError:
            raise
        except Exception:  # _ScanError, or bytes the scanner did not foresee: ask pydicom
            values = None
    if values is None:
        values = _parse_with_pydicom(raw, offset, pydicom.uid.UID(uid), default_encoding)
    tags = [{k: values[k] for k in level if k in values} for level in MAIN_TAGS]
    sop_class = values.get("SOPClassUID", "") or media_sop_class
    for level, kw in enumerate(LEVEL_UID):
        if level > 0 and not tags[level].get(kw):
            raise DicomParseError(f"missing {kw}: cannot index this instance")
    tags[0].setdefault("PatientID", "")
    parsed = ParsedInstance(tags, sop_class, uid)
    parsed.ids = ids.resource_ids(*parsed.uids)
    return parsed


# A deflated dataset is read from its first bytes only (the index tags come before the pixel
# data), and refused when it would inflate more than INFLATE_RATIO times: a deflate bomb.
INFLATE_PREFIX = 16 << 20
INFLATE_RATIO = 100


def _inflate(data: bytes) -> bytes:
    import zlib

    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        head = inflater.decompress(data, INFLATE_PREFIX)
    except zlib.error as e:
        raise DicomParseError(f"the deflated dataset is corrupt ({e})") from None
    if inflater.unconsumed_tail:  # more to come: how much, without keeping it?
        total = len(head)
        limit = max(INFLATE_PREFIX, INFLATE_RATIO * len(data))
        try:
            while inflater.unconsumed_tail and total <= limit:
                total += len(inflater.decompress(inflater.unconsumed_tail, 1 << 20))
        except zlib.error as e:
            raise DicomParseError(f"the deflated dataset is corrupt ({e})") from None
        if total > limit:
            raise DicomParseError(
                f"the deflated dataset would expand more than {INFLATE_RATIO} times its "
                f"{len(data)} bytes: refused"
            )
    return head


def _parse_with_pydicom(
    raw: bytes, offset: int, uid: pydicom.uid.UID, default_encoding: str
) -> dict[str, str]:
    try:
        if uid.is_deflated:
            body = io.BytesIO(_inflate(raw[offset:]))
        else:
            body = io.BytesIO(raw)
            body.seek(offset)
        ds = pydicom.filereader.read_dataset(
            body,
            uid.is_implicit_VR,
            uid.is_little_endian,
            stop_when=_stop_at_pixels,
            specific_tags=list(_WANTED),
        )
        if "SpecificCharacterSet" not in ds:
            ds.SpecificCharacterSet = ENCODINGS.get(default_encoding, "ISO_IR 100")
        return values_of(ds, [k for k in ALL_KEYWORDS if k != "SpecificCharacterSet"])
    except DicomParseError:
        raise
    except Exception as e:  # untrusted bytes into a third-party parser: any failure
        raise DicomParseError(f"unreadable DICOM ({type(e).__name__}: {e})") from e


def _stop_at_pixels(tag: Any, vr: Any, length: int) -> bool:
    return tag >= 0x7FE00010


def read_full(raw: bytes) -> Dataset:
    """Decode a whole stored file (for answers that need more than the index holds)."""
    return pydicom.dcmread(io.BytesIO(raw), force=True)
