"""Modality worklists: C-FIND on the worklist model from .wl files, and a REST API to author them.

The folder (Worklists.Database) is listed again on every query, so staff may drop files in
or remove them while the server runs; parsed files are cached by size and modification time.
Matching follows PS3.4 C.2.2.2 with the rules of the other C-FIND queries (matching.py):
single value, universal, wildcard, range and list matching, and sequence matching: a query
sequence item (Scheduled Procedure Step) matches when one item of the worklist's sequence
matches all its keys, and only the matching items are returned.
Worklists.FilterIssuerAet keeps the worklists scheduled for the calling AE title;
Worklists.LimitAnswers caps the answers (0: no limit).

REST, as Orthanc's worklists plugin: GET /worklists, POST /worklists/create {"Tags": {...}},
GET, PUT and DELETE /worklists/{id}. Tags are keywords with strings (or numbers, or lists
for several values) and sequences as lists of objects; each worklist is a .wl file.
"""

from __future__ import annotations

import copy
import errno
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bottle
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence

from .. import tagsjson
from ..context import ServerContext
from ..dicom.contexts import WORKLIST_FIND
from ..dicom.find import answered
from ..dicom.statuses import CANCEL, PENDING, SUCCESS
from ..http.common import body_json
from ..http.errors import HttpError
from ..http.responses import json_response
from ..jsondataset import dataset_from_json
from ..matching import make_matcher
from ..storage import StorageFullError
from ..values import element_text

logger = logging.getLogger(__name__)

NAME = "worklists"
SECTION = "worklists"

SPS = "ScheduledProcedureStepSequence"
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SINGLE_VALUE_VRS = {"LT", "ST", "UT", "UR"}


# ---------------------------------------------------------------- matching


def _keys(item: Dataset) -> list[DataElement]:
    """The matching keys of an identifier or item (no group lengths, no character set)."""
    return [e for e in item if e.tag.element != 0 and e.keyword != "SpecificCharacterSet"]


def _has_constraint(item: Dataset) -> bool:
    for elem in _keys(item):
        if elem.VR == "SQ":
            if elem.value and _has_constraint(elem.value[0]):
                return True
        elif element_text(elem) not in ("", "*"):
            return True
    return False


def matches(query: Dataset, candidate: Dataset, case_sensitive_pn: bool = False) -> bool:
    """Whether `candidate` (a worklist or one of its items) matches every key of `query`."""
    for elem in _keys(query):
        target = candidate.get(elem.tag)
        if elem.VR == "SQ":
            if not elem.value or not _has_constraint(elem.value[0]):
                continue  # universal
            items = target.value if target is not None and target.VR == "SQ" else []
            if not any(matches(elem.value[0], it, case_sensitive_pn) for it in items):
                return False
            continue
        value = element_text(elem)
        if value in ("", "*"):
            continue
        if not elem.keyword:  # private or unknown tag: plain comparison
            if element_text(target) != value:
                return False
            continue
        matcher = make_matcher(elem.keyword, value, case_sensitive_pn=case_sensitive_pn)
        if matcher is None:
            continue
        have = element_text(target)
        # A key matches a multi-valued attribute when it matches one of its values.
        values = (
            [have]
            if target is None or target.VR in SINGLE_VALUE_VRS
            else [have, *have.split("\\")]
            if "\\" in have
            else [have]
        )
        if not any(matcher(v) for v in values):
            return False
    return True


def extract(query: Dataset, candidate: Dataset, case_sensitive_pn: bool = False) -> Dataset:
    """The answer: the requested keys with the worklist's values (matching items only)."""
    out = Dataset()
    for elem in _keys(query):
        target = candidate.get(elem.tag)
        if elem.VR == "SQ":
            items: list[Dataset] = []
            if target is not None and target.VR == "SQ" and target.value:
                if elem.value and _keys(elem.value[0]):
                    q = elem.value[0]
                    items = [
                        extract(q, it, case_sensitive_pn)
                        for it in target.value
                        if matches(q, it, case_sensitive_pn)
                    ]
                else:
                    items = [copy.deepcopy(it) for it in target.value]
            out.add(DataElement(elem.tag, "SQ", Sequence(items)))
        elif target is not None:
            out.add(copy.deepcopy(target))
        else:
            out.add(DataElement(elem.tag, elem.VR, None))
    if "SpecificCharacterSet" in candidate:
        out.SpecificCharacterSet = candidate.SpecificCharacterSet
    return out


def with_issuer(query: Dataset, aet: str) -> Dataset:
    """The query restricted to worklists scheduled for `aet` (FilterIssuerAet)."""
    q = copy.deepcopy(query)
    if SPS not in q or q[SPS].VR != "SQ":
        q.add(DataElement(0x00400100, "SQ", Sequence([Dataset()])))
    if not q[SPS].value:
        q[SPS].value = Sequence([Dataset()])
    item = q[SPS].value[0]
    if element_text(item.get("ScheduledStationAETitle")) in ("", "*"):
        item.ScheduledStationAETitle = aet
    return q


# ---------------------------------------------------------------- the folder


class WorklistFolder:
    """The .wl files of one folder, parsed on demand and cached by size and mtime."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._cache: dict[str, tuple[int, int, Dataset]] = {}
        self._lock = threading.Lock()

    def path_of(self, wid: str) -> Path:
        if not ID_PATTERN.fullmatch(wid):
            raise KeyError(wid)
        return self.folder / f"{wid}.wl"

    def entries(self) -> list[tuple[str, Dataset]]:
        """Every readable worklist as (ID, dataset), sorted by ID; unreadable files are logged."""
        try:
            names = sorted(
                e.name
                for e in os.scandir(self.folder)
                if e.name.lower().endswith(".wl") and e.is_file()
            )
        except OSError as e:
            logger.warning("worklists: cannot list %s: %s", self.folder, e)
            return []
        out = []
        with self._lock:
            for stale in set(self._cache) - set(names):
                del self._cache[stale]
        for name in names:
            ds = self._load(name)
            if ds is not None:
                out.append((name[:-3], ds))
        return out

    def _load(self, name: str) -> Dataset | None:
        path = self.folder / name
        try:
            st = path.stat()
        except OSError:
            return None
        with self._lock:
            cached = self._cache.get(name)
        if cached and cached[:2] == (st.st_size, st.st_mtime_ns):
            return cached[2]
        try:
            ds = pydicom.dcmread(path, force=True)
            ds.remove_private_tags()
            if ds.get(SPS) is None or ds[SPS].VR != "SQ":
                raise ValueError("no ScheduledProcedureStepSequence: not a worklist")
        except (
            OSError,
            InvalidDicomError,
            ValueError,
            EOFError,
            AttributeError,
            TypeError,
            KeyError,
        ) as e:
            logger.warning("worklists: %s is not a readable DICOM file: %s", path, e)
            return None
        with self._lock:
            self._cache[name] = (st.st_size, st.st_mtime_ns, ds)
        return ds

    def get(self, wid: str) -> Dataset | None:
        path = self.path_of(wid)
        return self._load(path.name) if path.is_file() else None

    def write(self, wid: str, ds: Dataset) -> None:
        """Write a worklist file whole or not at all; a full disk is a StorageFullError."""
        path = self.path_of(wid)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.UID(WORKLIST_FIND)
        meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        meta.TransferSyntaxUID = pydicom.uid.UID(pydicom.uid.ExplicitVRLittleEndian)
        ds.file_meta = meta
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            ds.save_as(tmp, enforce_file_format=True)
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(e.errno, f"no space left in {self.folder}") from e
            raise

    def delete(self, wid: str) -> bool:
        try:
            self.path_of(wid).unlink()
        except FileNotFoundError:
            return False
        return True


# ---------------------------------------------------------------- C-FIND


class WorklistProvider:
    """Answers C-FIND on the Modality Worklist model (called by dicom.find)."""

    def __init__(self, context: ServerContext, folder: WorklistFolder, options: dict[str, Any]):
        self.context = context
        self.folder = folder
        self.filter_issuer = bool(options.get("FilterIssuerAet", False))
        self.limit = int(options.get("LimitAnswers", 0) or 0)

    def __call__(self, event: Any, identifier: Dataset) -> Iterator[tuple[int, Dataset | None]]:
        return answered("worklist C-FIND", self._answers(event, identifier))

    def _answers(self, event: Any, identifier: Dataset) -> Iterator[tuple[int, Dataset | None]]:
        cs_pn = self.context.settings.case_sensitive_pn
        query = identifier
        if self.filter_issuer:
            aet = event.assoc.requestor.ae_title
            aet = aet.decode("ascii", "replace") if isinstance(aet, bytes) else str(aet)
            query = with_issuer(identifier, aet.strip())
        count = 0
        for wid, ds in self.folder.entries():
            if event.is_cancelled:
                yield CANCEL, None
                return
            if not matches(query, ds, cs_pn):
                continue
            if self.limit and count >= self.limit:
                logger.warning("worklists: answers cut at %d (LimitAnswers)", self.limit)
                break
            count += 1
            logger.debug("worklist %s matches", wid)
            yield PENDING, extract(identifier, ds, cs_pn)
        yield SUCCESS, None


# ---------------------------------------------------------------- REST


def install_rest(app: bottle.Bottle, folder: WorklistFolder) -> None:
    def describe(wid: str, ds: Dataset) -> dict[str, Any]:
        return {
            "ID": wid,
            "Path": f"/worklists/{wid}",
            "Tags": tagsjson.to_json(ds, tagsjson.SIMPLIFY),
        }

    def parse_body() -> Dataset:
        body = body_json(kind=dict)
        try:
            return dataset_from_json(body.get("Tags"))
        except ValueError as e:
            raise HttpError(400, "Bad request", str(e)) from None

    def existing(wid: str) -> Dataset:
        try:
            ds = folder.get(wid)
        except KeyError:
            ds = None
        if ds is None:
            raise HttpError(404, "Unknown resource", f"no worklist with ID {wid}")
        return ds

    @app.get("/worklists")
    def list_worklists() -> str:
        return json_response([describe(wid, ds) for wid, ds in folder.entries()])

    @app.post("/worklists/create")
    def create_worklist() -> str:
        ds = parse_body()
        wid = str(uuid.uuid4())
        folder.write(wid, ds)
        logger.info("worklist %s created", wid)
        return json_response({"ID": wid, "Path": f"/worklists/{wid}"})

    @app.get("/worklists/<wid>")
    def get_worklist(wid: str) -> str:
        return json_response(describe(wid, existing(wid)))

    @app.put("/worklists/<wid>")
    def put_worklist(wid: str) -> str:
        existing(wid)
        folder.write(wid, parse_body())
        return json_response({"ID": wid, "Path": f"/worklists/{wid}"})

    @app.delete("/worklists/<wid>")
    def delete_worklist(wid: str) -> str:
        existing(wid)
        folder.delete(wid)
        logger.info("worklist %s deleted", wid)
        return json_response({})


def install(app: bottle.Bottle | None, context: ServerContext) -> None:
    options = context.settings.worklists
    database = options.get("Database")
    if not database:
        database = str(Path(context.settings.config_dir) / "WorklistsDatabase")
        logger.warning("Worklists.Database is not set: using %s", database)
    folder = WorklistFolder(Path(database))
    if not folder.folder.is_dir():
        logger.warning(
            "Worklists.Database %s does not exist (yet): no worklist to serve", folder.folder
        )
    context.plugins.worklist_provider = WorklistProvider(context, folder, options)
    if app is not None:
        install_rest(app, folder)
