"""Reading the few tags the index needs from a DICOM byte stream, without decoding the rest."""

from __future__ import annotations

import functools
import io
import logging
import struct
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from . import ids
from .values import format_value

logger = logging.getLogger(__name__)

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

# Main DICOM tags per level, as Orthanc 1.10 keeps them.
MAIN_TAGS: tuple[tuple[str, ...], ...] = (
    ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDs"),
    (
        "StudyDate",
        "StudyTime",
        "StudyID",
        "StudyDescription",
        "AccessionNumber",
        "StudyInstanceUID",
        "RequestedProcedureDescription",
        "InstitutionName",
        "RequestingPhysician",
        "ReferringPhysicianName",
    ),
    (
        "SeriesDate",
        "SeriesTime",
        "Modality",
        "Manufacturer",
        "StationName",
        "SeriesDescription",
        "BodyPartExamined",
        "SequenceName",
        "ProtocolName",
        "SeriesNumber",
        "CardiacNumberOfImages",
        "ImagesInAcquisition",
        "NumberOfTemporalPositions",
        "NumberOfSlices",
        "NumberOfTimeSlices",
        "SeriesInstanceUID",
        "ImageOrientationPatient",
        "SeriesType",
        "OperatorsName",
        "PerformedProcedureStepDescription",
        "AcquisitionDeviceProcessingDescription",
        "ContrastBolusAgent",
    ),
    (
        "InstanceCreationDate",
        "InstanceCreationTime",
        "AcquisitionNumber",
        "ImageIndex",
        "InstanceNumber",
        "NumberOfFrames",
        "TemporalPositionIdentifier",
        "SOPInstanceUID",
        "ImagePositionPatient",
        "ImageComments",
        "ImageOrientationPatient",
    ),
)
EXTRA_TAGS = ("SOPClassUID", "SpecificCharacterSet")
LEVEL_UID = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_ALL_KEYWORDS = sorted({k for level in MAIN_TAGS for k in level} | set(EXTRA_TAGS))
_WANTED: list[Any] = [Tag(k) for k in _ALL_KEYWORDS]

ENCODINGS = {
    "Ascii": "ISO_IR 6",
    "Utf8": "ISO_IR 192",
    "Latin1": "ISO_IR 100",
    "Latin2": "ISO_IR 101",
    "Latin3": "ISO_IR 109",
    "Latin4": "ISO_IR 110",
    "Latin5": "ISO_IR 148",
    "Cyrillic": "ISO_IR 144",
    "Windows1251": "ISO_IR 144",
    "Arabic": "ISO_IR 127",
    "Greek": "ISO_IR 126",
    "Hebrew": "ISO_IR 138",
    "Thai": "ISO_IR 166",
    "Japanese": "ISO_IR 13",
    "Chinese": "GB18030",
    "JapaneseKanji": "ISO 2022 IR 87",
    "Korean": "ISO 2022 IR 149",
    "SimplifiedChinese": "GB18030",
}


class DicomParseError(ValueError):
    """The bytes are not a DICOM instance pipacs can index; the message says why."""


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
        if vr in _LONG_VRS:
            if short or pos + 12 > end:
                return None
            length = int.from_bytes(raw[pos + 8:pos + 12], "little")
            pos += 12
        elif not vr.isalpha() or not vr.isupper():
            return None
        else:
            length = short
            pos += 8
        if length == 0xFFFFFFFF or pos + length > end:
            return None
        if element == 0x0010:
            ts = raw[pos:pos + length].decode("latin-1").strip("\x00").strip()
        elif element == 0x0002:
            sop_class = raw[pos:pos + length].decode("latin-1").strip("\x00").strip()
        pos += length
    if pos == 132 or not ts:
        return None
    return ts, sop_class, pos


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
        return values_of(ds, [k for k in _ALL_KEYWORDS if k != "SpecificCharacterSet"])
    except DicomParseError:
        raise
    except Exception as e:  # untrusted bytes into a third-party parser: any failure
        raise DicomParseError(f"unreadable DICOM ({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------- the fast scanner


class _ScanError(Exception):
    """The scanner met something it does not handle; pydicom takes over."""


_WANTED_VR = {
    int(Tag(k)): (k, str(pydicom.datadict.dictionary_VR(Tag(k))).split(" ")[0])
    for k in _ALL_KEYWORDS
}
_LAST_WANTED = max(_WANTED_VR)
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_TEXT_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_u16 = struct.Struct("<H").unpack_from
_u32 = struct.Struct("<I").unpack_from
_tag = struct.Struct("<HH").unpack_from
_PYTHON_CODECS = {
    "": "latin-1",
    "ISO_IR 6": "latin-1",
    "ISO_IR 100": "latin-1",
    "ISO_IR 192": "utf-8",
}


def _skip_items(raw: bytes, pos: int, implicit: bool, end: int) -> int:
    """Skip an undefined-length value (items up to the sequence delimiter)."""
    while pos + 8 <= end:
        g, e = _tag(raw, pos)
        tag = (g << 16) | e
        length = _u32(raw, pos + 4)[0]
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise _ScanError("unexpected element in a sequence")
        if length == _UNDEFINED:
            pos = _skip_elements(raw, pos, implicit, end)
        else:
            pos += length
    raise _ScanError("sequence runs past the end")


def _skip_elements(raw: bytes, pos: int, implicit: bool, end: int) -> int:
    """Skip the elements of an undefined-length item, up to its delimiter."""
    while pos + 8 <= end:
        g, e = _tag(raw, pos)
        tag = (g << 16) | e
        if tag == _ITEM_END:
            return pos + 8
        pos, _, _, _ = _element(raw, pos, implicit, end)
    raise _ScanError("item runs past the end")


def _element(raw: bytes, pos: int, implicit: bool, end: int) -> tuple[int, int, bytes, int]:
    """Read one element header at `pos`; return (next pos, tag, VR, value start)."""
    g, e = _tag(raw, pos)
    tag = (g << 16) | e
    if implicit or g == 0xFFFE:
        vr = b""
        length = _u32(raw, pos + 4)[0]
        start = pos + 8
    else:
        vr = raw[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            length = _u32(raw, pos + 8)[0]
            start = pos + 12
        else:
            if not vr.isalpha():
                raise _ScanError("bad VR")
            length = _u16(raw, pos + 6)[0]
            start = pos + 8
    if length == _UNDEFINED:
        # A sequence, or encapsulated data; UN of undefined length holds implicit VR items.
        return _skip_items(raw, start, implicit or vr == b"UN", end), tag, vr, -1
    nxt = start + length
    if nxt > end:
        raise DicomParseError(
            f"element ({g:04X},{e:04X}) declares {length} bytes but only "
            f"{end - start} remain: the file is truncated or corrupt"
        )
    return nxt, tag, vr, start


def scan(raw: bytes, offset: int, implicit: bool, default_encoding: str) -> dict[str, str]:
    """The index tags of a little endian dataset, read straight from its bytes."""
    end = len(raw)
    pos = offset
    found: dict[int, bytes] = {}
    try:
        while pos + 8 <= end:
            if _tag(raw, pos)[0] << 16 > _LAST_WANTED:
                break
            nxt, tag, _, start = _element(raw, pos, implicit, end)
            if tag in _WANTED_VR and start >= 0:
                found[tag] = raw[start:nxt]
            pos = nxt
    except struct.error as e:
        raise _ScanError(str(e)) from e
    # The rest (pixel data mostly) is not read, but every element must fit in the file:
    # a file cut short in its pixel data is refused, not stored.
    try:
        while pos + 8 <= end:
            pos = _element(raw, pos, implicit, end)[0]
    except (_ScanError, struct.error) as e:
        g, el = _tag(raw, pos)
        raise DicomParseError(
            f"malformed dataset at element ({g:04X},{el:04X}), offset {pos}: {e}"
        ) from e
    if pos < end and pos + 8 > end and not found:
        raise DicomParseError("the dataset is truncated")
    charset_raw = found.pop(0x00080005, b"").decode("ascii", "replace").strip(" \x00")
    if not charset_raw:
        charset_raw = ENCODINGS.get(default_encoding, "ISO_IR 100")
    codec = _PYTHON_CODECS.get(charset_raw.split("\\")[0].strip())
    if codec is None or "\\" in charset_raw:
        codec = ""
        try:
            encodings = pydicom.charset.convert_encodings(charset_raw.split("\\"))
        except (ValueError, LookupError):
            logger.warning("unknown SpecificCharacterSet %r: reading text as Latin-1", charset_raw)
            codec = "latin-1"
    out: dict[str, str] = {}
    for tag, value in found.items():
        kw, vr = _WANTED_VR[tag]
        if vr in ("US", "SS", "UL", "SL"):
            fmt = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i"}[vr]
            size = struct.calcsize(fmt)
            if len(value) % size:
                raise _ScanError(f"{kw}: bad length")
            out[kw] = "\\".join(str(v[0]) for v in struct.iter_unpack(fmt, value))
            continue
        if vr in _TEXT_VRS:
            if codec:
                text = value.decode(codec, "replace")
            else:
                try:
                    text = pydicom.charset.decode_bytes(
                        value, encodings, {0x5C, 0x3D, 0x5E} if vr == "PN" else {0x5C}
                    )
                except (ValueError, LookupError):
                    text = value.decode("latin-1")
        else:
            text = value.decode("latin-1")
        out[kw] = text.strip(" \x00")
    return out


def _stop_at_pixels(tag: Any, vr: Any, length: int) -> bool:
    return tag >= 0x7FE00010


def read_full(raw: bytes) -> Dataset:
    """Decode a whole stored file (for answers that need more than the index holds)."""
    return pydicom.dcmread(io.BytesIO(raw), force=True)


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
