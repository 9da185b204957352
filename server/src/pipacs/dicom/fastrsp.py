"""C-STORE and C-FIND responses encoded by hand.

pynetdicom builds every DIMSE command set, and every C-FIND answer, as a pydicom Dataset
and encodes it; for the small fixed messages that dominate ingest and queries that was most
of the time pipacs spent. This module:

- encodes plain C-STORE-RSP and C-FIND-RSP command sets itself (`send_msg` hook), leaving
  every other message, and responses carrying error details, to pynetdicom;
- lets a C-FIND handler yield an `Answer` (tag, VR, text value triples) that is written
  straight to bytes when pynetdicom encodes the identifier (`encode` hook in its service
  classes); any other syntax falls back to a pydicom Dataset.

Tests check every byte against pynetdicom's and pydicom's own encodings.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom import dimse, evt, service_class
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.pdu_primitives import P_DATA

from . import reactor

_implicit_header = struct.Struct("<HHI")
_explicit_short = struct.Struct("<HH2sH")
_explicit_long = struct.Struct("<HH2sHI")
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_BINARY_INTS = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i"}
_BINARY_FLOATS = {"FL": "<f", "FD": "<d"}


def _implicit(element: int, value: bytes) -> bytes:
    return _implicit_header.pack(0x0000, element, len(value)) + value


def _uid(value: Any) -> bytes:
    raw = str(value).encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _command(command_field: int, primitive: Any, has_dataset: bool) -> bytes:
    """The implicit VR little endian command set of a C-STORE/C-FIND response."""
    parts = []
    if primitive.AffectedSOPClassUID is not None:
        parts.append(_implicit(0x0002, _uid(primitive.AffectedSOPClassUID)))
    parts += [
        _implicit(0x0100, struct.pack("<H", command_field)),
        _implicit(0x0120, struct.pack("<H", primitive.MessageIDBeingRespondedTo)),
        _implicit(0x0800, struct.pack("<H", 0x0001 if has_dataset else 0x0101)),
        _implicit(0x0900, struct.pack("<H", primitive.Status)),
    ]
    sop_uid = getattr(primitive, "AffectedSOPInstanceUID", None)
    if sop_uid is not None:
        parts.append(_implicit(0x1000, _uid(sop_uid)))
    body = b"".join(parts)
    return _implicit(0x0000, struct.pack("<I", len(body))) + body


def encode_store_response(primitive: C_STORE) -> bytes:
    return _command(0x8001, primitive, False)


def encode_find_response(primitive: C_FIND) -> tuple[bytes, bytes]:
    """(command set, identifier bytes or b"") of a C-FIND-RSP."""
    data = primitive.Identifier.getvalue() if primitive.Identifier is not None else b""
    return _command(0x8020, primitive, bool(data)), data


def _simple(primitive: Any) -> bool:
    """A response pynetdicom would encode with only the elements `_command` writes."""
    if primitive.MessageIDBeingRespondedTo is None or primitive.Status is None:
        return False
    if type(primitive) is C_STORE:
        return (
            primitive.AffectedSOPClassUID is not None
            and primitive.AffectedSOPInstanceUID is not None
            and primitive.ErrorComment is None
            and primitive.OffendingElement is None
        )
    if type(primitive) is C_FIND:
        return primitive.ErrorComment is None and primitive.OffendingElement is None
    return False


def _fragments(data: bytes, max_pdu: int, more: bytes, last: bytes) -> Iterator[bytes]:
    size = len(data) if max_pdu == 0 else max(1, max_pdu - 6)
    for start in range(0, max(len(data), 1), size):
        chunk = data[start : start + size]
        yield (last if start + size >= len(data) else more) + chunk


# ---------------------------------------------------------------- C-FIND answers


@lru_cache(maxsize=2048)
def _tag_vr(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return int(tag), str(dictionary_VR(tag)).split(" or ")[0]


class Answer:
    """A C-FIND answer as text values; encoded straight to bytes, UTF-8 (ISO_IR 192)."""

    def __init__(self) -> None:
        self.items: dict[int, tuple[str, str]] = {}  # tag -> (VR, value)

    def set(self, keyword: str, value: str) -> None:
        tag, vr = _tag_vr(keyword)
        self.items[tag] = (vr, value)

    def set_tag(self, tag: int, vr: str, value: str = "") -> None:
        self.items[int(tag)] = (vr, value)

    def _value(self, vr: str, value: str) -> bytes:
        if not value or vr == "SQ":
            return b""
        if vr in _BINARY_INTS:
            fmt = _BINARY_INTS[vr]
            return b"".join(struct.pack(fmt, int(float(v))) for v in value.split("\\") if v)
        if vr in _BINARY_FLOATS:
            fmt = _BINARY_FLOATS[vr]
            return b"".join(struct.pack(fmt, float(v)) for v in value.split("\\") if v)
        raw = value.encode("utf-8")
        if len(raw) % 2:
            raw += b"\x00" if vr == "UI" else b" "
        return raw

    def encode(self, implicit: bool) -> bytes:
        out = []
        for tag in sorted(self.items):
            vr, value = self.items[tag]
            try:
                raw = self._value(vr, value)
            except (ValueError, struct.error, OverflowError):
                raw = b""  # a value the VR cannot hold is answered empty
            group, element = tag >> 16, tag & 0xFFFF
            if implicit:
                out.append(_implicit_header.pack(group, element, len(raw)) + raw)
            elif vr in _LONG_VRS:
                out.append(_explicit_long.pack(group, element, vr.encode(), 0, len(raw)) + raw)
            else:
                out.append(_explicit_short.pack(group, element, vr.encode(), len(raw)) + raw)
        return b"".join(out)

    def to_dataset(self) -> Dataset:
        from pydicom.dataelem import DataElement

        ds = Dataset()
        for tag, (vr, value) in sorted(self.items.items()):
            ds.add(DataElement(tag, vr, self._value(vr, value) or None))
        return ds


# ---------------------------------------------------------------- hooks

def patch(p: Any) -> None:
    """Fast path "fast-responses": plain C-STORE/C-FIND responses and `Answer`s encoded here."""
    original_send = dimse.DIMSEServiceProvider.send_msg
    original_encode = service_class.encode

    def send_msg(self: Any, primitive: Any, context_id: int) -> None:
        if not _simple(primitive) or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            original_send(self, primitive, context_id)
            return
        if type(primitive) is C_STORE:
            command, data = encode_store_response(primitive), b""
        else:
            command, data = encode_find_response(primitive)
        max_pdu = self.maximum_pdu_size
        pdvs = list(_fragments(command, max_pdu, b"\x01", b"\x03"))
        if data:
            pdvs += _fragments(data, max_pdu, b"\x00", b"\x02")
        if reactor.send_now(self.dul, b"".join(reactor.encode_pdata(context_id, p) for p in pdvs)):
            return
        for pdv in pdvs:
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, pdv))
            self.dul.send_pdu(pdata)

    def encode(
        ds: Any, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
    ) -> bytes | None:
        if isinstance(ds, Answer):
            if is_little_endian and not deflated:
                return ds.encode(is_implicit_vr)
            ds = ds.to_dataset()
        return original_encode(ds, is_implicit_vr, is_little_endian, deflated)

    p.set(dimse.DIMSEServiceProvider, "send_msg", send_msg)
    p.set(service_class, "encode", encode)
