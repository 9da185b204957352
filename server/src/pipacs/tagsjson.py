"""DICOM datasets as Orthanc's JSON: full ("Name", "Type", "Value"), simplified and short."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from .privatetags import private_name, retired_tags
from .values import format_value, is_multi

FULL, SIMPLIFY, SHORT = "full", "simplify", "short"
BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW", "US or OW"}
NUMBER_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"}
UNKNOWN_NAME = "Unknown Tag & Data"
# Retired in DCMTK's dictionary, yet named plainly by Orthanc (which registers its main
# DICOM tags itself).
ORTHANC_NAMED = {"OtherPatientIDs"}


def tag_key(tag: int) -> str:
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


def element_name(elem: DataElement) -> str:
    """The tag's name as Orthanc (DCMTK's dictionaries) gives it: retired tags are
    "RETIRED_<keyword>", repeating groups (60xx overlays) are named too."""
    keyword = elem.keyword or (keyword_for_tag(elem.tag) if not elem.tag.is_private else "")
    if keyword:
        retired = elem.tag in retired_tags() and keyword not in ORTHANC_NAMED
        return f"RETIRED_{keyword}" if retired else str(keyword)
    if elem.tag.is_private_creator:
        return "PrivateCreator"  # as Orthanc names (gggg,0010-00ff)
    if elem.tag.is_private:  # named from DCMTK's private dictionary, as Orthanc does
        creator = getattr(elem, "private_creator", None) or ""
        return private_name(elem.tag.group, elem.tag.element, creator) or UNKNOWN_NAME
    return UNKNOWN_NAME


def element_value(elem: DataElement) -> str | None:
    """The element's value as Orthanc prints it; None for binary values."""
    if elem.VR in BINARY_VRS or elem.tag == 0x7FE00010:
        return None
    try:
        value = elem.value
    except (ValueError, TypeError, UnicodeError):
        return None
    if value is None:
        return ""
    text = format_value(value, orthanc=True)
    if is_multi(value):
        return text
    return text.rstrip(" \x00") if elem.VR not in ("LT", "ST", "UT") else text.rstrip("\x00")


def to_json(ds: Dataset, mode: str = FULL) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for elem in ds:
        if elem.tag == 0xFFFCFFFC:  # DataSetTrailingPadding
            continue
        if elem.VR == "SQ":
            value: Any = [to_json(item, mode) for item in elem.value]
            kind = "Sequence"
        else:
            value = element_value(elem)
            kind = "Null" if value is None else "String"
        if mode == FULL:
            entry: dict[str, Any] = {"Name": element_name(elem)}
            creator = getattr(elem, "private_creator", None)
            if elem.tag.is_private and creator and not elem.tag.is_private_creator:
                entry["PrivateCreator"] = creator
            entry["Type"] = kind
            entry["Value"] = value
            out[tag_key(elem.tag)] = entry
        elif mode == SHORT:
            out[tag_key(elem.tag)] = value
        else:
            # Orthanc keys a private tag by its name even when that is "Unknown Tag & Data"
            name = element_name(elem)
            out[name if name != UNKNOWN_NAME or elem.tag.is_private else tag_key(elem.tag)] = \
                value
    return out


def mode_of(query: Any) -> str:
    """The answer format a request asks for with ?simplify or ?short."""
    for key, mode in (("simplify", SIMPLIFY), ("short", SHORT)):
        if key in query and query.get(key, "").lower() not in ("false", "0"):
            return mode
    return FULL
