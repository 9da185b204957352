"""DICOM JSON (PS3.18 F.2) read straight from a stored file's little endian bytes.

`file_json` gives what `dataset_json(dicomfile.read_full(raw), ...)` gives, without building
pydicom's dataset (five to ten times faster), for the common files: explicit or implicit VR
little endian, single-byte or UTF-8 character sets. Whatever it does not reproduce exactly
(big endian, deflate, code extensions, a VR pydicom would correct or guess, a malformed
length, an undecodable string, elements out of order...) makes it answer None, and the caller
reads the file with pydicom as before: never a different answer, only a slower one.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from functools import lru_cache
from typing import Any

from pydicom import filewriter
from pydicom.datadict import dictionary_VR, private_dictionary_VR

from .dicomweb_json import BULK_THRESHOLD, _number, _person_name

# The "US or SS" tags pydicom reads by PixelRepresentation (a private name of pydicom 3.0: a
# release without it leaves every such element to pydicom, never a different answer).
_AMBIGUOUS_US_SS_TAGS: frozenset[int] = frozenset(
    getattr(filewriter, "_AMBIGUOUS_US_SS_TAGS", ()))

_u16 = struct.Struct("<H").unpack_from
_u32 = struct.Struct("<I").unpack_from
_tag_len = struct.Struct("<HHI").unpack_from  # implicit VR header, and item headers

IMPLICIT_LE = "1.2.840.10008.1.2"
_FALLBACK_SYNTAXES = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}  # big endian, deflate
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_CHARSET = 0x00080005
_PIXEL_REP = 0x00280103
_MAX_DEPTH = 32  # nested sequences: deeper ones are left to pydicom

_VRS = ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD",
        "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL",
        "UN", "UR", "US", "UT", "UV")
_VR_OF_BYTES = {vr.encode(): vr for vr in _VRS}
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_NUMBERS = {"FL": ("f", 4), "FD": ("d", 8), "SL": ("l", 4), "SS": ("h", 2), "SV": ("q", 8),
            "UL": ("L", 4), "US": ("H", 2), "UV": ("Q", 8)}
# How each VR's value is read (pydicom's converters, values.py, as dataset_json sees them).
_BINARY, _SPLIT, _DECIMAL, _UID, _NUMBER, _MULTI_TEXT, _SINGLE_TEXT, _NAME, _OTHER = range(9)
_KINDS = {
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), _BINARY),  # bytes
    **dict.fromkeys(("AS", "CS", "DA", "DT", "TM"), _SPLIT),  # latin-1, trailing " \0" off
    "DS": _DECIMAL, "IS": _DECIMAL, "UI": _UID,
    **dict.fromkeys(_NUMBERS, _NUMBER),
    # the character set's; split, each part's trailing " \0" off / one value
    "SH": _MULTI_TEXT, "LO": _MULTI_TEXT, "UC": _MULTI_TEXT,
    "ST": _SINGLE_TEXT, "LT": _SINGLE_TEXT, "UT": _SINGLE_TEXT,
    "PN": _NAME,
}
# pydicom reads these US/SS values with a fix of its own: left to it.
_LUT_DESCRIPTORS = {0x00281101, 0x00281102, 0x00281103, 0x00283002}
# SpecificCharacterSet values decoded here (one value, no code extensions), as pydicom names
# them; any other value (multi-byte sets, ISO 2022, a misspelling) goes to pydicom.
_CODECS = {"": "iso8859", "ISO_IR 6": "iso8859", "ISO_IR 100": "latin_1",
           "ISO_IR 101": "iso8859_2", "ISO_IR 109": "iso8859_3", "ISO_IR 110": "iso8859_4",
           "ISO_IR 126": "iso_ir_126", "ISO_IR 127": "iso_ir_127", "ISO_IR 138": "iso_ir_138",
           "ISO_IR 144": "iso_ir_144", "ISO_IR 148": "iso_ir_148", "ISO_IR 166": "iso_ir_166",
           "ISO_IR 192": "UTF8"}
_DS = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_IS = re.compile(r"[+-]?[0-9]{1,12}")


# The JSON of short values already read, by VR, character set and bytes: the instances of a
# series mostly repeat each other's (the answers only read these dicts, never change them).
_MEMO: dict[tuple[str, str, bytes], dict[str, Any]] = {}
_MEMO_SIZE, _MEMO_BYTES = 4096, 256


class _Fallback(Exception):
    """Something pydicom reads differently or more leniently: it answers for this file."""


@lru_cache(maxsize=4096)
def _public_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


@lru_cache(maxsize=1024)
def _private_vr(tag: int, creator: str) -> str:
    try:
        return str(private_dictionary_VR(tag, creator))
    except KeyError:
        return "UN"


def file_json(raw: bytes, bulk_base: str, size: int | None = None) -> dict[str, Any] | None:
    """The file's dataset as DICOM JSON (as `dataset_json` makes it), or None when pydicom
    must read this file. `raw` may be the file's first bytes only, `size` its length: the
    answer is then None too unless the bytes not read are the value of a last element that
    goes out as a BulkDataURI (the pixel data, mostly)."""
    try:
        return _Reader(raw, bulk_base, len(raw) if size is None else size).read()
    except (_Fallback, struct.error, UnicodeError, LookupError, ValueError, RecursionError):
        return None


class _Reader:
    """One file's reading: its bytes, its text codec, where its bulk data URIs point."""

    def __init__(self, raw: bytes, bulk_base: str, size: int):
        self.raw = raw
        self.size = size  # the file's; the bytes past len(raw) are not read
        self.bulk = bulk_base + "/bulk/"
        self.codec = "iso8859"

    def read(self) -> dict[str, Any]:
        raw = self.raw
        if len(raw) < 132 or raw[128:132] != b"DICM":
            raise _Fallback("no preamble")
        pos, syntax = self._meta(132)
        if syntax is None or syntax in _FALLBACK_SYNTAXES or pos + 8 > len(raw):
            raise _Fallback("transfer syntax")
        if _u16(raw, pos)[0] == 0:
            raise _Fallback("command set elements")  # read as implicit VR by pydicom
        implicit = syntax == IMPLICIT_LE
        if _looks_implicit(raw, pos, self.size) != implicit:
            raise _Fallback("the dataset's encoding is not its transfer syntax's")
        out, pos, deferred = self._dataset(pos, self.size, implicit, "", 0, False)
        if pos != self.size:
            raise _Fallback("bytes after the last element")
        if deferred:
            self._us_or_ss(out, deferred)
        return out

    def _meta(self, pos: int) -> tuple[int, str | None]:
        """Skip the file meta group (explicit VR); return where the dataset starts and the
        transfer syntax."""
        raw, end = self.raw, len(self.raw)
        syntax = None
        while pos + 8 <= end and _u16(raw, pos)[0] == 2:
            vr = _VR_OF_BYTES.get(raw[pos + 4:pos + 6])
            if vr is None:
                raise _Fallback("file meta VR")
            if vr in _LONG:
                length, start = _u32(raw, pos + 8)[0], pos + 12
            else:
                length, start = _u16(raw, pos + 6)[0], pos + 8
            if length == _UNDEFINED or start + length > end:
                raise _Fallback("file meta length")
            tag = 0x00020000 | _u16(raw, pos + 2)[0]
            if vr == "SQ" or (vr in _NUMBERS and length % _NUMBERS[vr][1]):
                raise _Fallback("file meta value")  # pydicom fails to convert it
            if tag == 0x00020010:
                if vr != "UI":
                    raise _Fallback("transfer syntax VR")
                syntax = raw[start:start + length].decode("latin-1").rstrip("\0 ").strip()
                if "\\" in syntax:
                    raise _Fallback("transfer syntax")
            pos = start + length
        return pos, syntax

    def _dataset(self, pos: int, end: int, implicit: bool, path: str, depth: int,
                 delimited: bool) -> tuple[dict[str, Any], int, list[tuple[str, int, int]]]:
        """The elements from `pos` up to `end` (or, `delimited`: an undefined-length item, up
        to its delimiter); returns them, where reading stopped, and (top level of an implicit
        VR dataset) the US-or-SS elements whose VR PixelRepresentation decides."""
        raw = self.raw
        codec = self.codec  # an item's own SpecificCharacterSet holds within it only
        out: dict[str, Any] = {}
        deferred: list[tuple[str, int, int]] = []
        creators: dict[int, str | None] = {}
        last = -1
        while pos < end:
            if pos + 8 > end:
                raise _Fallback("a partial element header")
            group, elem, length = _tag_len(raw, pos)
            tag = group << 16 | elem
            if group == 0xFFFE:
                if delimited and tag == _ITEM_END:
                    self.codec = codec
                    return out, pos + 8, deferred
                raise _Fallback("a delimiter out of place")
            if tag <= last or group in (0, 2):
                raise _Fallback(f"element {tag:08X} out of order, or where pydicom reads it apart")
            last = tag
            if implicit:
                start = pos + 8
                vr = self._implicit_vr(tag, group, elem, length, creators, start)
            else:
                evr = _VR_OF_BYTES.get(raw[pos + 4:pos + 6])
                if evr is None:
                    raise _Fallback("unknown VR")
                vr = evr
                if vr in _LONG:
                    length, start = _u32(raw, pos + 8)[0], pos + 12
                else:
                    length, start = length >> 16, pos + 8
                if vr == "UN":
                    vr = self._un_vr(tag, group, elem, length, creators)
            key = f"{tag:08X}"
            if length == _UNDEFINED:
                if vr == "SQ":
                    value, pos = self._sequence(start, end, implicit, path + key.lower(), depth,
                                                None)
                elif tag == _PIXEL_DATA:
                    pos = self._encapsulated(start, end)
                    value = {"vr": "OB" if implicit else vr,
                             "BulkDataURI": self.bulk + path + key.lower()}
                else:
                    raise _Fallback("undefined length")
            else:
                pos = start + length
                if pos > end:
                    raise _Fallback("a value past its end")
                if vr == "SQ":
                    value = self._sequence(start, pos, implicit, path + key.lower(), depth,
                                           pos)[0]
                elif " or " in vr:
                    if tag == _PIXEL_DATA:
                        vr = "OW"
                    elif vr == "US or SS" and depth == 0 and tag in _AMBIGUOUS_US_SS_TAGS:
                        deferred.append((key, start, pos))
                        continue
                    else:
                        raise _Fallback(f"ambiguous VR {vr}")
                    value = self._value(tag, vr, start, pos, path, key)
                else:
                    value = self._value(tag, vr, start, pos, path, key)
            if elem >= 0x0010 and elem <= 0x00FF and group & 1:
                creators[tag] = self._creator(value)
            elif tag == _CHARSET:
                self._charset(value)
            if elem == 0 or tag == 0xFFFCFFFC:
                continue  # group lengths and trailing padding: read, not answered
            out[key] = value
        if delimited:
            raise _Fallback("an item without its delimiter")
        self.codec = codec
        return out, pos, deferred

    def _implicit_vr(self, tag: int, group: int, elem: int, length: int,
                     creators: dict[int, str | None], start: int) -> str:
        """The VR pydicom gives an implicit VR element (its dictionaries, its guesses)."""
        vr = _public_vr(tag)
        if length == _UNDEFINED and vr is None:
            # pydicom looks at what follows: items make it a sequence
            raw = self.raw
            if start + 4 <= len(raw) and raw[start:start + 4] == b"\xfe\xff\x00\xe0":
                return "SQ"
            raise _Fallback("undefined length of an unknown element")
        if vr is not None:
            return vr
        if group & 1:
            if 0x0010 <= elem <= 0x00FF:
                return "LO"
            if elem & 0xFF00:
                creator = self._creator_of(creators, group << 16 | elem >> 8)
                if creator is not None:
                    return _private_vr(tag, creator)
            return "UN"
        return "UL" if elem == 0 else "UN"

    def _un_vr(self, tag: int, group: int, elem: int, length: int,
               creators: dict[int, str | None]) -> str:
        """The VR pydicom reads an explicit UN element as: a sequence when its length is
        undefined, else what its dictionaries know (PS3.5 6.2.2: UN stands for a VR the
        writer did not know), else UN."""
        if length == _UNDEFINED:
            return "SQ"
        vr = "UN"
        if group & 1:
            if 0x0010 <= elem <= 0x00FF:
                vr = "LO"
            elif elem & 0xFF00:
                creator = self._creator_of(creators, group << 16 | elem >> 8)
                if creator is not None:
                    vr = _private_vr(tag, creator)
        elif length < 0xFFFF:
            vr = _public_vr(tag) or "UN"
        if " or " in vr:
            raise _Fallback(f"UN read as {vr}")  # pydicom's correction of explicit VR
        return vr

    def _creator(self, value: dict[str, Any]) -> str | None:
        """A private creator's name; None when pydicom's lookup by it would differ."""
        if _KINDS.get(value["vr"]) not in (_MULTI_TEXT, _SINGLE_TEXT, _SPLIT, _UID):
            return None
        values = value.get("Value")
        if not values:
            return ""
        return values[0] if len(values) == 1 and isinstance(values[0], str) else None

    def _creator_of(self, creators: dict[int, str | None], tag: int) -> str | None:
        if tag not in creators:
            return None
        creator = creators[tag]
        if creator is None:
            raise _Fallback("a private creator pydicom may read otherwise")
        return creator

    def _charset(self, value: dict[str, Any]) -> None:
        values = value.get("Value") or [""]
        if value["vr"] != "CS" or len(values) != 1 or (values[0] or "") not in _CODECS:
            raise _Fallback("character set")
        self.codec = _CODECS[values[0] or ""]

    def _sequence(self, pos: int, end: int, implicit: bool, path: str, depth: int,
                  defined_end: int | None) -> tuple[dict[str, Any], int]:
        """A sequence's items, up to `defined_end` or, undefined, to its delimiter."""
        if depth >= _MAX_DEPTH:
            raise _Fallback("sequences nested too deep")
        raw = self.raw
        limit = end if defined_end is None else defined_end
        items: list[dict[str, Any]] = []
        while True:
            if defined_end is not None and pos >= defined_end:
                break
            if pos + 8 > limit:
                raise _Fallback("a sequence cut short")
            group, elem, length = _tag_len(raw, pos)
            tag = group << 16 | elem
            if tag == _SEQ_END and defined_end is None:
                pos += 8
                break
            if tag != _ITEM:
                raise _Fallback("not an item")
            start = pos + 8
            item_end = limit if length == _UNDEFINED else start + length
            if item_end > limit:
                raise _Fallback("an item past its sequence")
            item_implicit = implicit or _looks_implicit(raw, start, min(limit, len(raw)))
            prefix = f"{path}/{len(items) + 1}/"
            ds, pos, _ = self._dataset(start, item_end, item_implicit, prefix, depth + 1,
                                       length == _UNDEFINED)
            if length != _UNDEFINED and pos != item_end:
                raise _Fallback("an item's elements past its length")
            items.append(ds)
        return ({"vr": "SQ", "Value": items} if items else {"vr": "SQ"}), pos

    def _encapsulated(self, pos: int, end: int) -> int:
        """Skip encapsulated pixel data (items up to the sequence delimiter)."""
        raw = self.raw
        first = pos
        while pos + 8 <= end:
            group, elem, length = _tag_len(raw, pos)
            tag = group << 16 | elem
            if tag == _SEQ_END:
                if pos == first:
                    raise _Fallback("empty encapsulated pixel data")
                return pos + 8
            if tag != _ITEM or length == _UNDEFINED:
                raise _Fallback("not a fragment")
            pos += 8 + length
        raise _Fallback("pixel data cut short")

    def _value(self, tag: int, vr: str, start: int, stop: int, path: str,
                key: str) -> dict[str, Any]:
        """One element's JSON, from its value's bytes (`path + key`: its bulk data path)."""
        if start == stop:
            return {"vr": vr}
        raw = self.raw
        kind = _KINDS.get(vr, _OTHER)
        if kind == _BINARY or tag == _PIXEL_DATA:
            if tag == _PIXEL_DATA or stop - start > BULK_THRESHOLD:
                return {"vr": vr, "BulkDataURI": self.bulk + path + key.lower()}
            if stop > len(raw):
                raise _Fallback("a value past the bytes read")
            return {"vr": vr, "InlineBinary": base64.b64encode(raw[start:stop]).decode("ascii")}
        if stop > len(raw):
            raise _Fallback("a value past the bytes read")
        data = raw[start:stop]
        if stop - start > _MEMO_BYTES or tag in _LUT_DESCRIPTORS:
            return self._convert(tag, vr, kind, data)
        memo = (vr, self.codec, data)
        value = _MEMO.get(memo)
        if value is None:
            value = self._convert(tag, vr, kind, data)
            if len(_MEMO) >= _MEMO_SIZE:
                _MEMO.clear()
            _MEMO[memo] = value
        return value

    def _convert(self, tag: int, vr: str, kind: int, data: bytes) -> dict[str, Any]:
        """A value's JSON from its bytes (not empty, not binary)."""
        if kind == _SPLIT:
            parts = data.decode("latin-1").rstrip(" \x00").split("\\")
        elif kind == _DECIMAL:
            return self._decimal(vr, data)
        elif kind == _UID:  # and each UID stripped (pydicom's UID class)
            parts = [p.strip() for p in data.decode("latin-1").rstrip(" \x00").split("\\")]
        elif kind == _NUMBER:
            return self._numbers(tag, vr, data)
        elif kind == _MULTI_TEXT:
            parts = [p.rstrip("\0 ") for p in self._text(data).split("\\")]
        elif kind == _SINGLE_TEXT:
            parts = [self._text(data).rstrip("\0 ")]
        elif kind == _NAME:
            parts = self._text(data.rstrip(b"\x00 ")).split("\\")
            if len(parts) == 1 and parts[0] == "":
                return {"vr": vr}
            return {"vr": vr, "Value": [_person_name(p) for p in parts]}
        elif vr == "AE":
            parts = [p.strip() for p in data.decode("latin-1").split("\\")]
        elif vr == "UR":
            parts = [data.decode("latin-1").rstrip()]
        elif vr == "AT":
            if len(data) % 4:
                raise _Fallback("AT length")
            pairs = struct.unpack(f"<{len(data) // 2}H", data)
            return {"vr": vr, "Value": [f"{pairs[i]:04X}{pairs[i + 1]:04X}"
                                        for i in range(0, len(pairs), 2)]}
        else:
            raise _Fallback(f"VR {vr}")
        if len(parts) == 1 and parts[0] == "":
            return {"vr": vr}
        return {"vr": vr, "Value": [p or None for p in parts]}

    def _text(self, data: bytes) -> str:
        if b"\x1b" in data:
            raise _Fallback("code extensions")
        return data.decode(self.codec)

    def _decimal(self, vr: str, data: bytes) -> dict[str, Any]:
        text = data.decode("latin-1")
        if vr == "DS":
            text = text.strip()
        parts = text.rstrip(" \x00").split("\\")
        if len(parts) == 1 and parts[0] == "":
            return {"vr": vr}
        pattern = _DS if vr == "DS" else _IS
        for p in parts:
            p = p.strip()
            if p and not pattern.fullmatch(p):
                raise _Fallback(f"{vr} value pydicom reads otherwise")
        return {"vr": vr, "Value": [_number(p, vr) for p in parts]}

    def _numbers(self, tag: int, vr: str, data: bytes) -> dict[str, Any]:
        fmt, size = _NUMBERS[vr]
        if len(data) % size or tag in _LUT_DESCRIPTORS:
            raise _Fallback("binary number length")
        values = struct.unpack(f"<{len(data) // size}{fmt}", data)
        if fmt in "fd":
            return {"vr": vr, "Value": [v if math.isfinite(v) else str(v) for v in values]}
        return {"vr": vr, "Value": list(values)}

    def _us_or_ss(self, out: dict[str, Any], deferred: list[tuple[str, int, int]]) -> None:
        """Implicit VR US-or-SS elements, read as PixelRepresentation says (pydicom's rule
        for the top level: US when it is 0, or when the dataset has neither it nor pixel
        data)."""
        rep = out.get(f"{_PIXEL_REP:08X}")
        if rep is None:
            if f"{_PIXEL_DATA:08X}" in out:
                raise _Fallback("US or SS without PixelRepresentation")
            vr = "US"
        else:
            values = rep.get("Value")
            if rep["vr"] != "US" or not values or len(values) != 1:
                raise _Fallback("PixelRepresentation")
            vr = "US" if values[0] == 0 else "SS"
        for key, start, stop in deferred:
            out[key] = self._value(int(key, 16), vr, start, stop, "", key)
        for key in sorted(out):
            out[key] = out.pop(key)  # back in tag order


def _looks_implicit(raw: bytes, pos: int, end: int) -> bool:
    """pydicom's test of a dataset's first element: explicit when its bytes 4-5 are two
    capital letters."""
    if pos + 6 > end:
        return False
    a, b = raw[pos + 4], raw[pos + 5]
    return not (0x40 < a < 0x5B and 0x40 < b < 0x5B)
