"""WADO-RS metadata: instances' DICOM JSON read from their files once, then kept in a cache."""

from __future__ import annotations

import json
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import dicomfile
from ..context import ServerContext
from ..dicomfile import MAIN_TAGS
from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from .dicomweb_json import ROOT_MARK, dataset_json, tag_of, tags_json

logger = logging.getLogger(__name__)

CACHE_FOLDER = "dicomweb-metadata"


@dataclass
class InstanceRow:
    """One stored instance as DICOMweb names it."""

    rid: int
    public_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    file_uuid: str
    transfer_syntax: str
    sop_class: str

    @property
    def path(self) -> str:
        return f"studies/{self.study_uid}/series/{self.series_uid}/instances/{self.sop_uid}"


_INSTANCE_SQL = (
    "SELECT r3.id, r3.public_id, r1.uid, r2.uid, r3.uid, COALESCE(a.uuid, ''), "
    "COALESCE((SELECT value FROM metadata WHERE resource = r3.id AND type = 9), ''), "
    "COALESCE((SELECT value FROM metadata WHERE resource = r3.id AND type = 10), '') "
    "FROM resources r1 JOIN resources r2 ON r2.parent = r1.id "
    "JOIN resources r3 ON r3.parent = r2.id "
    "LEFT JOIN attachments a ON a.resource = r3.id AND a.type = 1 "
)


def instances(
    context: ServerContext, study: str, series: str | None = None, sop: str | None = None
) -> list[InstanceRow]:
    """The instances under a study, series or instance named by UIDs, in storage order."""
    where = ["r1.level = 1", "r1.uid = ?"]
    args = [study]
    if series is not None:
        where.append("r2.uid = ?")
        args.append(series)
    if sop is not None:
        where.append("r3.uid = ?")
        args.append(sop)
    sql = _INSTANCE_SQL + f"WHERE {' AND '.join(where)} ORDER BY r3.id"
    return [InstanceRow(*row) for row in context.index.conn.execute(sql, args)]


def instance_by_row(context: ServerContext, rid: int) -> InstanceRow | None:
    row = context.index.conn.execute(_INSTANCE_SQL + "WHERE r3.id = ?", (rid,)).fetchone()
    return InstanceRow(*row) if row else None


class MetadataStore:
    """DICOM JSON of instances. Full metadata is read from the file, one instance at a time,
    and cached (when `cache` is on) in a folder next to the index: one small file per
    instance, named by its public ID and tied to its file's UUID, so a replaced file is
    never answered from stale metadata. Deleting an instance removes its entry.

    As Orthanc's plugin does with EnableMetadataCache, a series' entries are computed in the
    background once the series is stable (StableAge after its last instance), so the first
    WADO-RS metadata call does not have to read the files."""

    def __init__(self, context: ServerContext, cache: bool):
        self.context = context
        self.folder: Path | None = None
        if cache:
            self.folder = Path(context.settings.index_dir) / CACHE_FOLDER
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                logger.warning("DICOMweb metadata cache disabled: %s", e)
                self.folder = None
        self._stable: queue.Queue[str] = queue.Queue()
        self._worker: threading.Thread | None = None
        context.add_listener(self._on_event)

    def _entry(self, public_id: str) -> Path | None:
        return self.folder / public_id[:2] / public_id if self.folder else None

    def _on_event(self, event: str, payload: dict[str, Any]) -> None:
        if self.folder is None:
            return
        if event == "stable" and payload.get("level") == SERIES:
            self._stable.put(str(payload.get("id", "")))
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._warm_loop, name="dicomweb-metadata", daemon=True
                )
                self._worker.start()
            return
        if event != "deleted":
            return
        for level, public_id in payload.get("resources", []):
            if level == INSTANCE:
                entry = self._entry(public_id)
                if entry is not None:
                    entry.unlink(missing_ok=True)

    def _warm_loop(self) -> None:
        while True:
            series_id = self._stable.get()
            try:
                rows = self.context.index.conn.execute(
                    _INSTANCE_SQL + "WHERE r2.public_id = ? ORDER BY r3.id", (series_id,)
                ).fetchall()
                for row in rows:
                    self.full(InstanceRow(*row))
            except Exception as e:  # a deleted series, an unreadable file: answered later
                logger.debug("metadata of series %s not cached: %s", series_id, e)

    def full(self, inst: InstanceRow) -> str:
        """The instance's metadata as JSON text, with ROOT_MARK standing for the root URL."""
        entry = self._entry(inst.public_id)
        if entry is not None and inst.file_uuid:
            text = _read_entry(entry, inst.file_uuid)
            if text is not None:
                return text
        raw = self.context.read_instance(inst.public_id)
        ds = dicomfile.read_full(raw)
        text = json.dumps(dataset_json(ds, ROOT_MARK + inst.path), separators=(",", ":"))
        if entry is not None and inst.file_uuid:
            _write_entry(entry, inst.file_uuid, text)
        return text

    def full_json(self, inst: InstanceRow) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.full(inst))
        return result

    def main_tags(self, inst: InstanceRow) -> str:
        """Metadata from the index alone (StudiesMetadata/SeriesMetadata "MainDicomTags")."""
        row = self.context.index.conn.execute(
            "SELECT r3.tags, r2.tags, r1.tags, r0.tags FROM resources r3 "
            "JOIN resources r2 ON r2.id = r3.parent JOIN resources r1 ON r1.id = r2.parent "
            "JOIN resources r0 ON r0.id = r1.parent WHERE r3.id = ?",
            (inst.rid,),
        ).fetchone()
        pairs: dict[int, str] = {}
        if row is not None:
            for lv, text in zip((INSTANCE, 2, STUDY, PATIENT), row, strict=True):
                for kw, value in json.loads(text).items():
                    tag = tag_of(kw)
                    if tag is not None and kw in MAIN_TAGS[lv]:
                        pairs.setdefault(tag, value)
        if inst.sop_class:
            pairs[0x00080016] = inst.sop_class
        return json.dumps(tags_json(pairs.items()), separators=(",", ":"))

    def answer(self, rows: list[InstanceRow], mode: str) -> Iterator[str]:
        """JSON texts of the rows' metadata, in order (files read one at a time)."""
        for inst in rows:
            if mode == "MainDicomTags":
                yield self.main_tags(inst)
                continue
            try:
                yield self.full(inst)
            except (KeyError, FileNotFoundError):
                yield self.main_tags(inst)  # StoreDicom false, or deleted meanwhile
            except (OSError, ValueError, EOFError, AttributeError, TypeError) as e:
                logger.warning("metadata of %s unreadable (%s): main tags only", inst.sop_uid, e)
                yield self.main_tags(inst)


def _read_entry(entry: Path, file_uuid: str) -> str | None:
    try:
        data = entry.read_text(encoding="utf-8")
    except (OSError, UnicodeError):
        return None
    head, sep, text = data.partition("\n")
    uuid, _, length = head.partition(" ")
    if not sep or uuid != file_uuid or not length.isdigit() or int(length) != len(text):
        return None  # another file, or a write cut short
    return text


def _write_entry(entry: Path, file_uuid: str, text: str) -> None:
    try:
        entry.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{file_uuid} {len(text)}\n{text}")
        os.replace(tmp, entry)
    except OSError as e:  # a full disk: answer without caching
        logger.debug("cannot cache metadata in %s: %s", entry, e)
        try:
            os.unlink(tmp)
        except (OSError, UnboundLocalError):
            pass
