"""Transcoding, as Orthanc 1.7+ does: an instance rewritten in another transfer syntax.

Used where a peer does not accept the stored syntax (C-STORE SCU, C-MOVE and C-GET
sub-operations: `TranscodeDicomProtocol`, `DicomScuPreferredTransferSyntax`, a modality's
`AllowTranscoding`), by `"Transcode"` in /modify and /anonymize, `?transcode=` on archives,
WADO-RS `transfer-syntax=` and `IngestTranscoding`.

Decoding goes through pydicom's pixel-data plugins (pipacs/pixels.py). Writing: the little
endian native syntaxes (explicit, implicit, deflated) always; RLE with pydicom's own encoder;
JPEG-LS (pyjpegls) and JPEG 2000 (pylibjpeg-openjpeg) where their plugin is installed; JPEG
baseline (8 bits) with Pillow. Lossy targets only where the caller allows them; a lossy
encoding of an image that was not lossy gets a new SOPInstanceUID and LossyImageCompression
01, as DCMTK's encoders do in Orthanc. Big endian is read, never written (retired syntax).
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from . import pixels

logger = logging.getLogger(__name__)

NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
# Syntaxes whose encoding loses information.
LOSSY = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203",
})


class TranscodeError(ValueError):
    """The instance cannot be written in the asked syntax; the message says why."""


def _label(ts: UID) -> str:
    return f"{ts.name} ({ts})" if ts.name != str(ts) else f"transfer syntax {ts}"


def cannot_write(target: str, allow_lossy: bool = False) -> str | None:
    """None when pipacs can write instances in `target` here, else why not."""
    from pydicom.pixels import get_encoder

    ts = UID(target)
    if not ts.is_transfer_syntax:
        return f"{target!r} is not a transfer syntax UID"
    if ts in NATIVE:
        return None
    if ts == ExplicitVRBigEndian:
        return f"pipacs does not write {_label(ts)} (a retired syntax)"
    if ts in LOSSY and not allow_lossy:
        return f"{_label(ts)} is lossy, and lossy transcoding is not allowed here"
    if ts == JPEGBaseline8Bit:
        return None  # Pillow
    try:
        encoder = get_encoder(ts)
    except NotImplementedError:
        return f"pipacs has no encoder for {_label(ts)}"
    if not encoder.is_available:
        needs = "; or ".join(encoder.missing_dependencies) or "a pixel-data plugin of pydicom"
        return f"this server has no encoder for {_label(ts)}: it needs {needs}"
    return None


def choose(stored: str, accepted: list[str], preferred: str, allowed: bool) -> str | None:
    """The syntax to send an instance stored in `stored` to a peer that accepted `accepted`
    for its SOP class: the stored one when accepted (pynetdicom converts between the little
    endian native ones), else the preferred syntax (lossy if so configured), explicit or
    implicit little endian, or another lossless one pipacs can write. None: nothing fits (or
    transcoding is off)."""
    if stored in accepted:
        return stored
    plain = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))
    if stored in plain and any(a in plain for a in accepted):
        return stored
    if not allowed:
        return None
    for candidate in (preferred, *plain, *accepted):
        if candidate in accepted and cannot_write(candidate, candidate == preferred) is None:
            return candidate
    return None


def _to_little_endian(ds: Dataset) -> None:
    if "PixelData" in ds and int(ds.get("BitsAllocated", 8)) > 8:
        arr = ds.pixel_array
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def _jpeg_baseline(ds: Dataset, quality: int) -> None:
    """8-bit grey or RGB frames as JPEG baseline with Pillow (colour as YBR_FULL_422)."""
    from PIL import Image

    if int(ds.BitsAllocated) != 8 or int(ds.get("SamplesPerPixel", 1)) not in (1, 3):
        raise TranscodeError("JPEG baseline holds 8-bit grey or RGB images only")
    arr = ds.pixel_array
    frames = arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[None]
    colour = int(ds.get("SamplesPerPixel", 1)) == 3
    encoded = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame)).save(
            buf, format="JPEG", quality=quality, subsampling=1 if colour else 0)
        encoded.append(buf.getvalue())
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if colour:
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


def _lossy_options(ts: UID, quality: int) -> dict[str, object]:
    """pydicom's encoder options for a lossy syntax from Orthanc's quality (1-100): a JPEG 2000
    compression ratio (90: 5.5:1, 50: 25.5:1), JPEG-LS's NEAR 2 (DCMTK's default)."""
    if ts == "1.2.840.10008.1.2.4.91":
        return {"j2k_cr": [max(1.5, (101 - quality) / 2)]}
    if ts == "1.2.840.10008.1.2.4.81":
        return {"jls_error": 2}
    return {}


def transcode_dataset(ds: Dataset, target: str, allow_lossy: bool = False,
                      quality: int = 90) -> Dataset:
    """`ds` rewritten in `target` (in place; returned); TranscodeError when it cannot be."""
    source, ts = UID(ds.file_meta.TransferSyntaxUID), UID(target)
    if source == ts:
        return ds
    why = cannot_write(ts, allow_lossy)
    if why:
        raise TranscodeError(why)
    has_pixels = "PixelData" in ds
    if source.is_encapsulated and has_pixels:
        missing = pixels.missing_decoder(source, int(ds.get("BitsStored", 8) or 8))
        if missing:
            raise TranscodeError(missing)
        try:
            # explicit VR little endian, YBR colour as RGB; the UID changes only if lossy
            ds.decompress(generate_instance_uid=False)
        except (NotImplementedError, RuntimeError, ValueError) as e:
            raise TranscodeError(f"cannot decode the pixel data ({e})") from e
    elif not source.is_little_endian:
        _to_little_endian(ds)
    if ts.is_encapsulated and has_pixels:
        try:
            if ts == JPEGBaseline8Bit:
                _jpeg_baseline(ds, quality)
            else:
                options = _lossy_options(ts, quality)
                ds.compress(ts, generate_instance_uid=False, **options)  # type: ignore[arg-type]
        except (NotImplementedError, RuntimeError, ValueError) as e:
            raise TranscodeError(f"cannot encode the pixel data as {_label(ts)} ({e})") from e
        if ts in LOSSY and source not in LOSSY:
            ds.LossyImageCompression = "01"
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    else:
        ds.file_meta.TransferSyntaxUID = ts
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """A Part 10 file of `ds` in the syntax its file meta names."""
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def transcode(raw: bytes, target: str, allow_lossy: bool = False, quality: int = 90) -> bytes:
    """A stored file (Part 10 bytes) in another transfer syntax; the same bytes when it is
    already in that syntax."""
    ds = dcmread(io.BytesIO(raw), force=True)
    if str(ds.file_meta.get("TransferSyntaxUID", "")) == str(target):
        return raw
    return to_bytes(transcode_dataset(ds, target, allow_lossy, quality))


# Orthanc's "uncompressed" for IngestTranscodingOfUncompressed (deflated counts as compressed).
INGEST_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def ingest(settings: Any, raw: bytes) -> bytes:
    """A received Part 10 file in the IngestTranscoding syntax (when set, and allowed for its
    kind by IngestTranscodingOfUncompressed/-Compressed); as received when it cannot be
    transcoded (logged), as Orthanc does."""
    target = settings.ingest_transcoding
    if not target or raw[128:132] != b"DICM":
        return raw
    try:
        ds = dcmread(io.BytesIO(raw))
    except Exception:  # a damaged file: the store refuses it with its own message
        return raw
    source = str(ds.file_meta.get("TransferSyntaxUID", ""))
    wanted = settings.ingest_transcoding_of_uncompressed if source in INGEST_UNCOMPRESSED \
        else settings.ingest_transcoding_of_compressed
    if source == target or not wanted:
        return raw
    try:
        quality = settings.dicom_lossy_transcoding_quality
        return to_bytes(transcode_dataset(ds, target, True, quality))
    except TranscodeError as e:
        logger.warning("IngestTranscoding: instance %s stored as received (%s): %s",
                       ds.get("SOPInstanceUID", "?"), source, e)
        return raw
