"""The DICOM JSON model (PS3.18 F.2) of index values and of whole datasets, with bulk data URIs."""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from ..values import is_multi

logger = logging.getLogger(__name__)

BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
INT_VRS = {"US", "SS", "UL", "SL", "SV", "UV", "IS"}
FLOAT_VRS = {"FL", "FD", "DS"}
# Binary values longer than this go out as a BulkDataURI, shorter ones inline (base64).
BULK_THRESHOLD = 1024
# Stands for the DICOMweb root URL (scheme, host, root) in cached metadata; replaced per request.
ROOT_MARK = "@@PIPACS-DICOMWEB-ROOT@@/"


@lru_cache(maxsize=4096)
def tag_of(key: str) -> int | None:
    """A tag from a keyword ("PatientName") or eight hex digits ("00100010")."""
    if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
        return int(key, 16)
    t = tag_for_keyword(key)
    return int(t) if t is not None else None


@lru_cache(maxsize=4096)
def vr_of_tag(tag: int) -> str:
    try:
        vr = str(dictionary_VR(tag))
    except KeyError:
        return "UN"
    if vr in ("US or SS", "US or SS or OW"):
        return "US"
    if vr == "OB or OW":
        return "OW"
    return vr.split(" or ")[0]


@lru_cache(maxsize=4096)
def keyword_of(tag: int) -> str:
    return keyword_for_tag(tag) or ""


def hex_tag(tag: int) -> str:
    return f"{tag:08X}"


def _number(text: str, vr: str) -> Any:
    text = text.strip()
    if text == "":
        return None
    try:
        if vr in INT_VRS:
            return int(text)
        value = float(text)
    except ValueError:
        return text  # malformed in the file: passed on as written rather than lost
    if not math.isfinite(value):
        return text
    return int(value) if vr == "DS" and value.is_integer() and abs(value) < 2**53 else value


def _person_name(text: str) -> Any:
    if text == "":
        return None
    groups = text.split("=")
    out = {}
    for name, value in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False):
        if value:
            out[name] = value
    return out or None


def element_from_text(tag: int, text: str, vr: str | None = None) -> dict[str, Any]:
    """An element from a value as the index keeps it (multiple values joined by backslashes)."""
    vr = vr or vr_of_tag(tag)
    if text == "":
        return {"vr": vr}
    parts = text.split("\\")
    if vr == "PN":
        values = [_person_name(p) for p in parts]
    elif vr in INT_VRS or vr in FLOAT_VRS:
        values = [_number(p, vr) for p in parts]
    elif vr in ("LT", "ST", "UT", "UR"):
        values = [text]  # single-valued: a backslash is text
    else:
        values = [p.strip() or None for p in parts]
    return {"vr": vr, "Value": values}


def _text(v: Any) -> str:
    original = getattr(v, "original_string", None)
    if isinstance(original, str):
        return original
    if isinstance(v, bytes):
        return v.decode("latin-1")
    return str(v)


def _values(elem: Any) -> list[Any]:
    value = elem.value
    if value is None or value == "":
        return []
    if is_multi(value):
        return list(value)
    return [value]


def dataset_json(ds: Dataset, bulk_base: str, path: str = "") -> dict[str, Any]:
    """A whole dataset as DICOM JSON. Binary values above BULK_THRESHOLD (and pixel data)
    become BulkDataURI `{bulk_base}/bulk/{path}{tag}`; nested ones carry the item path."""
    out: dict[str, Any] = {}
    for elem in ds:
        tag = int(elem.tag)
        if tag == 0xFFFCFFFC or ((tag & 0xFFFF) == 0 and tag >> 16 != 0):
            continue  # trailing padding and group lengths: meaningless in JSON
        key = hex_tag(tag)
        vr = str(elem.VR)
        if " or " in vr:
            vr = "OW" if tag == 0x7FE00010 or "OW" in vr else vr.split(" or ")[0]
        try:
            out[key] = _element_json(elem, tag, vr, bulk_base, path + key.lower())
        except (ValueError, TypeError, UnicodeError, OverflowError) as e:
            logger.debug("element %s cannot be put in JSON: %s", key, e)
            out[key] = {"vr": vr}
    return out


def _element_json(elem: Any, tag: int, vr: str, bulk_base: str, path: str) -> dict[str, Any]:
    if vr == "SQ":
        items = [
            dataset_json(item, bulk_base, f"{path}/{i + 1}/") for i, item in enumerate(elem.value)
        ]
        return {"vr": vr, "Value": items} if items else {"vr": vr}
    if vr in BINARY_VRS or tag == 0x7FE00010:
        value = elem.value
        if value is None or len(value) == 0:
            return {"vr": vr}
        if tag == 0x7FE00010 or len(value) > BULK_THRESHOLD:
            return {"vr": vr, "BulkDataURI": f"{bulk_base}/bulk/{path}"}
        return {"vr": vr, "InlineBinary": base64.b64encode(bytes(value)).decode("ascii")}
    values = _values(elem)
    if not values:
        return {"vr": vr}
    if vr == "PN":
        out: list[Any] = [_person_name(_text(v)) for v in values]
    elif vr in INT_VRS or vr in FLOAT_VRS:
        out = []
        for v in values:
            if isinstance(v, int | float) and vr not in ("DS", "IS"):
                out.append(v if not isinstance(v, float) or math.isfinite(v) else str(v))
            else:
                out.append(_number(_text(v), vr))
    elif vr == "AT":
        out = [f"{int(v):08X}" for v in values]
    else:
        out = [_text(v) or None for v in values]
    return {"vr": vr, "Value": out}


def tags_json(pairs: Iterable[tuple[int, str]]) -> dict[str, Any]:
    """Elements from (tag, index text) pairs, keyed and sorted as DICOM JSON wants."""
    return {hex_tag(t): element_from_text(t, v) for t, v in sorted(pairs)}
