"""DICOM values as text and back: the one formatter used by the index, C-FIND, worklists and
the REST tags, and the one check for a multi-valued element."""

from __future__ import annotations

import logging
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from .matching import vr_of

logger = logging.getLogger(__name__)


def is_multi(value: Any) -> bool:
    """A value of several items (pydicom's MultiValue, or a list or tuple)."""
    return isinstance(value, list | tuple | MultiValue)


def format_value(value: Any, *, orthanc: bool = False) -> str:
    """A DICOM value as text, several values joined by backslashes.

    By default the index's form, which C-FIND matches and answers with: padding stripped at
    both ends, bytes read as ASCII. `orthanc=True` prints as Orthanc's tags JSON does:
    bytes as Latin-1, floats with 17 significant digits, only trailing padding of bytes
    stripped (the caller strips the rest, knowing the VR).
    """
    if value is None:
        return ""
    if is_multi(value):
        return "\\".join(format_value(v, orthanc=orthanc) for v in value)
    if isinstance(value, bytes):
        if orthanc:
            return value.decode("latin-1").rstrip(" \x00")
        return value.decode("ascii", "replace").strip(" \x00")
    original = getattr(value, "original_string", None)
    if isinstance(original, str):
        return original.strip()
    if orthanc:
        return f"{value:.17g}" if isinstance(value, float) else str(value)  # 9.6999998092651367
    return str(value).strip(" \x00")


def element_text(elem: DataElement | None) -> str:
    """An element's value in the index's form; "" when absent, empty or unreadable."""
    if elem is None:
        return ""
    try:
        return format_value(elem.value)
    except (ValueError, UnicodeError):
        return ""


def set_value(ds: Dataset, keyword: str, value: str) -> None:
    """Put a value in the index's text form into a Dataset, typed by the keyword's VR."""
    vr = vr_of(keyword)
    try:
        if vr == "SQ":
            setattr(ds, keyword, [])
        elif not value:
            setattr(ds, keyword, None)
        elif vr in ("US", "UL", "SS", "SL"):
            parts = [int(float(v)) for v in value.split("\\") if v]
            setattr(ds, keyword, parts if len(parts) > 1 else parts[0])
        elif vr in ("FL", "FD"):
            parts_f = [float(v) for v in value.split("\\") if v]
            setattr(ds, keyword, parts_f if len(parts_f) > 1 else parts_f[0])
        elif "\\" in value and vr not in ("LT", "ST", "UT"):
            setattr(ds, keyword, value.split("\\"))
        else:
            setattr(ds, keyword, value)
    except (ValueError, TypeError, OverflowError) as e:
        logger.debug("cannot set %s=%r: %s", keyword, value, e)
        setattr(ds, keyword, None)
