"""Sending stored files as they are: C-STORE sub-operations reuse the stored bytes.

pynetdicom encodes every dataset it sends. For an instance whose stored transfer syntax is
the one negotiated, re-encoding is wasted work and may change bytes, so `RawDataset` carries
the stored file and the encoder used by pynetdicom's association returns its dataset bytes
untouched. Any other case (a different syntax was negotiated) decodes the file and lets
pynetdicom convert it as before.
"""

from __future__ import annotations

import io
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from pynetdicom import association

from ..dicomfile import split_meta

_original_encode = association.encode  # pynetdicom's (dsutils.encode), taken at import


class RawDataset(Dataset):
    """The few attributes pynetdicom needs to route a C-STORE, plus the stored file."""

    def __init__(self, raw: bytes, sop_class: str, sop_uid: str, transfer_syntax: str):
        super().__init__()
        self.SOPClassUID = sop_class
        self.SOPInstanceUID = sop_uid
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = UID(transfer_syntax)
        self.file_meta = meta
        object.__setattr__(self, "_pipacs_raw", raw)


def _encode(
    ds: Any, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    raw = ds.__dict__.get("_pipacs_raw") if isinstance(ds, RawDataset) else None
    if raw is None:
        return _original_encode(ds, is_implicit_vr, is_little_endian, deflated)
    meta, offset = split_meta(raw)
    ts = UID(str(meta.TransferSyntaxUID)) if meta is not None else UID("")
    if ts.is_transfer_syntax and (ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated) == (
        is_implicit_vr,
        is_little_endian,
        deflated,
    ):
        return raw[offset:]
    full = pydicom.dcmread(io.BytesIO(raw), force=True)
    return _original_encode(full, is_implicit_vr, is_little_endian, deflated)


def patch(p: Any) -> None:
    """Fast path "rawsend": pynetdicom's association encoder goes through `_encode`."""
    p.set(association, "encode", _encode)
