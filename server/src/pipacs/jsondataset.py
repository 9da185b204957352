"""DICOM datasets built from JSON ({"Keyword": value}), bounded in nesting, size and error text.

Every REST route that turns a JSON body into a pydicom Dataset goes through
`dataset_from_json`. A body of 9 KB nesting 260 sequences used to pass here, then made
pydicom's writer recurse past Python's limit; its error text grew twice as long at each
level it unwound through, until the kernel killed pipacs (22.9 GB). Each dataset also
costs about eight times the memory of the JSON object it comes from. So nesting and the
number of elements are limited before anything is written, and an error message quotes
at most QUOTE_LIMIT characters of what the client sent.
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

MAX_DEPTH = 16  # sequences inside sequences
MAX_ELEMENTS = 10_000  # elements and sequence items, all levels together
QUOTE_LIMIT = 100  # characters of the client's input quoted in an error message


class JsonDatasetError(ValueError):
    """The JSON cannot be a dataset; the message names where and why (a 400 for the client)."""


def clip(text: object, limit: int = QUOTE_LIMIT) -> str:
    """`text` as an error message may quote it: at most `limit` characters, the middle
    elided, so that both ends (the start of a path and the key that failed) stay."""
    s = str(text)
    if len(s) <= limit:
        return s
    head = (limit - 3) // 2
    return f"{s[:head]}...{s[len(s) - (limit - 3 - head):]}"


def dataset_from_json(tags: Any, where: str = "Tags", *, max_depth: int = MAX_DEPTH,
                      max_elements: int = MAX_ELEMENTS) -> Dataset:
    """A dataset from {"Keyword": value}, sequences as lists of such objects.

    Raises JsonDatasetError naming the path of the bad key (`where` is the path of `tags`),
    for sequences nested deeper than `max_depth` or more than `max_elements` elements.
    A dataset without SpecificCharacterSet gets ISO_IR 192 (UTF-8).
    """
    ds = _Builder(max_depth, max_elements).dataset(tags, where, 0)
    if "SpecificCharacterSet" not in ds:
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


class _Builder:
    def __init__(self, max_depth: int, max_elements: int):
        self.max_depth = max_depth
        self.left = max_elements
        self.max_elements = max_elements

    def _count(self, where: str) -> None:
        self.left -= 1
        if self.left < 0:
            raise JsonDatasetError(
                f"{clip(where)}: more than {self.max_elements} elements and items are refused")

    def dataset(self, tags: Any, where: str, depth: int) -> Dataset:
        if not isinstance(tags, dict):
            raise JsonDatasetError(f"{clip(where)} must be an object of DICOM keywords")
        ds = Dataset()
        for key, value in tags.items():
            path = f"{where}.{clip(key)}"
            self._count(path)
            tag = tag_for_keyword(key) if isinstance(key, str) else None
            if tag is None:
                raise JsonDatasetError(f"{clip(path)}: not a DICOM keyword")
            vr = str(dictionary_VR(tag)).split(" or ")[0]
            if vr == "SQ":
                ds.add(DataElement(tag, "SQ", self.sequence(value, path, depth + 1)))
            else:
                ds.add(_element(tag, vr, value, path))
        return ds

    def sequence(self, value: Any, path: str, depth: int) -> Sequence:
        if not isinstance(value, list):
            raise JsonDatasetError(f"{clip(path)}: a sequence must be a list of objects")
        if depth > self.max_depth:
            raise JsonDatasetError(
                f"{clip(path)}: sequences nested deeper than {self.max_depth} levels are refused")
        items = []
        for i, item in enumerate(value):
            self._count(path)
            items.append(self.dataset(item, f"{path}[{i}]", depth))
        return Sequence(items)


def _element(tag: int, vr: str, value: Any, path: str) -> DataElement:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
        raise JsonDatasetError(f"{clip(path)}: expected a string, a number or a list of them")
    try:
        if vr in ("US", "SS", "UL", "SL"):
            typed: list[Any] = [int(v) for v in values]
        elif vr in ("FL", "FD"):
            typed = [float(v) for v in values]
        else:
            typed = [str(v) for v in values]
        return DataElement(tag, vr, typed[0] if len(typed) == 1 else typed)
    except (TypeError, ValueError, OverflowError) as e:  # int(1e999), read as infinity
        raise JsonDatasetError(f"{clip(path)}: {clip(e)}") from None
