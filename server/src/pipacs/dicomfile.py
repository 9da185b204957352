"""Reading the few tags the index needs from a DICOM byte stream, without decoding the rest."""

from __future__ import annotations

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

logger = logging.getLogger(__name__)

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

# Main DICOM tags per level, as Orthanc 1.10 keeps them.
MAIN_TAGS: tuple[tuple[str, ...], ...] = (
    ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDs"),
    ("StudyDate", "StudyTime", "StudyID", "StudyDescription", "AccessionNumber",
     "StudyInstanceUID", "RequestedProcedureDescription", "InstitutionName",
     "RequestingPhysician", "ReferringPhysicianName"),
    ("SeriesDate", "SeriesTime", "Modality", "Manufacturer", "StationName",
     "SeriesDescription", "BodyPartExamined", "SequenceName", "ProtocolName", "SeriesNumber",
     "CardiacNumberOfImages", "ImagesInAcquisition", "NumberOfTemporalPositions",
     "NumberOfSlices", "NumberOfTimeSlices", "SeriesInstanceUID", "ImageOrientationPatient",
     "SeriesType", "OperatorsName", "PerformedProcedureStepDescription",
     "AcquisitionDeviceProcessingDescription", "ContrastBolusAgent"),
    ("InstanceCreationDate", "InstanceCreationTime", "AcquisitionNumber", "ImageIndex",
     "InstanceNumber", "NumberOfFrames", "TemporalPositionIdentifier", "SOPInstanceUID",
     "ImagePositionPatient", "ImageComments", "ImageOrientationPatient"),
)
EXTRA_TAGS = ("SOPClassUID", "SpecificCharacterSet")
LEVEL_UID = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_ALL_KEYWORDS = sorted({k for level in MAIN_TAGS for k in level} | set(EXTRA_TAGS))
_WANTED = [Tag(k) for k in _ALL_KEYWORDS]

ENCODINGS = {
    "Ascii": "ISO_IR 6", "Utf8": "ISO_IR 192", "Latin1": "ISO_IR 100", "Latin2": "ISO_IR 101",
    "Latin3": "ISO_IR 109", "Latin4": "ISO_IR 110", "Latin5": "ISO_IR 148",
    "Cyrillic": "ISO_IR 144", "Windows1251": "ISO_IR 144", "Arabic": "ISO_IR 127",
    "Greek": "ISO_IR 126", "Hebrew": "ISO_IR 138", "Thai": "ISO_IR 166",
    "Japanese": "ISO_IR 13", "Chinese": "GB18030", "JapaneseKanji": "ISO 2022 IR 87",
    "Korean": "ISO 2022 IR 149", "SimplifiedChinese": "GB18030",
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


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip(" \x00")
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        return "\\".join(_format(v) for v in value)
    original = getattr(value, "original_string", None)
    if isinstance(original, str):
        return original.strip()
    return str(value).strip(" \x00")


def values_of(ds: Dataset, keywords: tuple[str, ...] | list[str]) -> dict[str, str]:
    out = {}
    for kw in keywords:
        try:
            elem = ds[kw] if kw in ds else None
        except (KeyError, ValueError, TypeError):
            elem = None
        if elem is not None and elem.VR != "SQ":
            try:
                out[kw] = _format(elem.value)
            except (ValueError, UnicodeError, struct.error) as e:
                logger.debug("tag %s unreadable: %s", kw, e)
    return out


def split_meta(raw: bytes) -> tuple[FileMetaDataset | None, int]:
    """Parse the file meta information of a Part 10 stream; return it and the dataset offset."""
    if len(raw) >= 132 and raw[128:132] == b"DICM":
        fp = io.BytesIO(raw)
        fp.seek(132)
        meta = pydicom.filereader._read_file_meta_info(fp)
        return meta, fp.tell()
    return None, 0


def parse(raw: bytes, default_encoding: str = "Latin1", transfer_syntax: str | None = None
          ) -> ParsedInstance:
    """Read the index tags from a DICOM Part 10 file (or a bare dataset with `transfer_syntax`).

    Raises DicomParseError naming what is wrong.
    """
    if len(raw) < 8:
        raise DicomParseError(f"only {len(raw)} bytes: too short to be DICOM")
    try:
        meta, offset = split_meta(raw)
        ts = transfer_syntax
        if meta is not None:
            ts = str(meta.get("TransferSyntaxUID", "") or "") or ts
        if not ts:
            raise DicomParseError("no DICM prefix and no transfer syntax: not a DICOM file")
        uid = pydicom.uid.UID(ts)
        if uid == pydicom.uid.DeflatedExplicitVRLittleEndian:
            import zlib
            body = io.BytesIO(zlib.decompress(raw[offset:], -zlib.MAX_WBITS))
            implicit, little = False, True
        else:
            body = io.BytesIO(raw)
            body.seek(offset)
            if not uid.is_transfer_syntax:
                raise DicomParseError(f"unknown transfer syntax {ts}")
            implicit, little = uid.is_implicit_VR, uid.is_little_endian
        ds = pydicom.filereader.read_dataset(
            body, implicit, little, stop_when=_stop_at_pixels, specific_tags=_WANTED)
    except DicomParseError:
        raise
    except (EOFError, struct.error, ValueError, OSError, NotImplementedError, KeyError,
            InvalidDicomError, OverflowError, MemoryError, TypeError, AttributeError) as e:
        raise DicomParseError(f"unreadable DICOM ({type(e).__name__}: {e})") from e
    if "SpecificCharacterSet" not in ds:
        ds.SpecificCharacterSet = ENCODINGS.get(default_encoding, "ISO_IR 100")
    tags = [values_of(ds, level) for level in MAIN_TAGS]
    sop_class = values_of(ds, ["SOPClassUID"]).get("SOPClassUID", "")
    if meta is not None and not sop_class:
        sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
    for level, kw in enumerate(LEVEL_UID):
        if level > 0 and not tags[level].get(kw):
            raise DicomParseError(f"missing {kw}: cannot index this instance")
    tags[0].setdefault("PatientID", "")
    parsed = ParsedInstance(tags, sop_class, str(uid))
    parsed.ids = ids.resource_ids(*parsed.uids)
    return parsed


def _stop_at_pixels(tag: Any, vr: Any, length: int) -> bool:
    return tag >= 0x7FE00010


def read_full(raw: bytes) -> Dataset:
    """Decode a whole stored file (for answers that need more than the index holds)."""
    return pydicom.dcmread(io.BytesIO(raw), force=True)


def ensure_part10(raw: bytes, sop_class: str, sop_uid: str, transfer_syntax: str,
                  source_aet: str = "") -> bytes:
    """Prefix a bare dataset with a preamble and file meta information."""
    if len(raw) >= 132 and raw[128:132] == b"DICM":
        return raw
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if source_aet:
        meta.SourceApplicationEntityTitle = source_aet
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue() + raw


IMPLEMENTATION_CLASS_UID = "2.25.241860311337419082433625405283165789644"
IMPLEMENTATION_VERSION = "PIPACS_01"
