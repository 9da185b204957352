"""What the index stores and answers with: resource rows, store outcomes, instance rows,
exports and changes, and the dates written with them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..ids import LEVEL_NAMES, LEVEL_PLURALS
from .schema import CHANGE_TYPES

_now_iso: tuple[int, str] = (0, "")


def now_iso() -> str:
    """The current UTC time as Orthanc writes dates (formatted once per second: every
    stored instance asks for it twice)."""
    global _now_iso
    second = int(time.time())
    if _now_iso[0] != second:
        _now_iso = (second, time.strftime("%Y%m%dT%H%M%S", time.gmtime(second)))
    return _now_iso[1]


def iso_of(timestamp: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(timestamp))


@dataclass
class Resource:
    id: int
    level: int
    public_id: str
    parent: int | None
    uid: str
    tags: dict[str, str]
    updated: float
    stable: bool
    protected: bool


@dataclass
class StoreOutcome:
    status: str  # "Success" or "AlreadyStored"
    ids: tuple[str, str, str, str]
    created: list[int]  # levels created by this instance
    removed_files: list[str]  # uuids of files replaced (OverwriteInstances)


class InstanceRow(NamedTuple):
    """An instance with the UIDs of its study and series, its file and its syntax (what
    DICOMweb reads for each instance it sends or describes)."""

    rid: int
    public_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    file_uuid: str
    transfer_syntax: str
    sop_class: str
    series_id: str = ""

    @property
    def path(self) -> str:
        return f"studies/{self.study_uid}/series/{self.series_uid}/instances/{self.sop_uid}"


class Export(NamedTuple):
    """One entry of the exports log (/exports)."""

    seq: int
    level: int
    public_id: str
    target: str
    patient_id: str | None
    study_uid: str | None
    series_uid: str | None
    sop_uid: str | None
    date: str


def change_json(row: tuple[Any, ...]) -> dict[str, Any]:
    seq, ctype, level, public_id, date = row
    return {
        "ChangeType": CHANGE_TYPES.get(ctype, str(ctype)),
        "Date": date,
        "ID": public_id,
        "Path": f"/{LEVEL_PLURALS[level]}/{public_id}",
        "ResourceType": LEVEL_NAMES[level],
        "Seq": seq,
    }


