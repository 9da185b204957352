"""The tags the index needs, and the hand-written reader of them from little endian bytes."""

from __future__ import annotations

import logging
import struct

import pydicom
from pydicom.tag import Tag

logger = logging.getLogger(__name__)

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
ALL_KEYWORDS = sorted({k for level in MAIN_TAGS for k in level} | set(EXTRA_TAGS))

# DefaultEncoding values and the SpecificCharacterSet each one stands for.
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


class _ScanError(Exception):
    """The scanner met something it does not handle; pydicom takes over."""


_WANTED_VR = {
    int(Tag(k)): (k, str(pydicom.datadict.dictionary_VR(Tag(k))).split(" ")[0])
    for k in ALL_KEYWORDS
}
_LAST_WANTED = max(_WANTED_VR)

# VRs whose explicit-VR header has a 4-byte length.
LONG_VRS = {
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
        if vr in LONG_VRS:
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
