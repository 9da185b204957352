"""WADO-RS metadata: instances' DICOM JSON read from their files once, then kept in a cache."""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import dicomfile
from ..context import ServerContext
from ..dicomfile import MAIN_TAGS
from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from ..index import InstanceRow
from ..storage import COMPRESSION_NONE
from .dicomweb_fastjson import file_json
from .dicomweb_json import ROOT_MARK, dataset_json, tag_of, tags_json

logger = logging.getLogger(__name__)

CACHE_FOLDER = "dicomweb-series"  # one file per series, under IndexDirectory
OLD_CACHE_FOLDER = "dicomweb-metadata"  # one file per instance (before): removed at start
FORMAT = 1
HEAD_BYTES = 64 << 10  # read first: what comes before the pixel data, mostly

# instance public ID -> (its file's UUID, its DICOM JSON)
Entry = dict[str, tuple[str, str]]


def instances(
    context: ServerContext, study: str, series: str | None = None, sop: str | None = None
) -> list[InstanceRow]:
    """The instances under a study, series or instance named by UIDs, in storage order."""
    return context.index.instance_rows(study, series, sop)


def instance_by_row(context: ServerContext, rid: int) -> InstanceRow | None:
    return context.index.instance_row(rid)


class MetadataStore:
    """DICOM JSON of instances. Full metadata is read from the file, one instance at a time,
    and cached (when `cache` is on) in a folder next to the index: one zlib'd file per
    series holding its instances' DICOM JSON (see `encode_entry`), each tied to its
    instance's file UUID. Every answer is checked against the index row by row, so a cache
    file never answers for an instance added, replaced or deleted after it was written: the
    missing instances are read from their files and the series' file is rewritten in the
    background. Deleting a series removes its file; deleting an instance rewrites its
    series' file without it (the deleted instance's tags do not stay on the disk). A file
    cut short or damaged (a power cut) fails its zlib checksum or its lengths and is ignored.

    As Orthanc's plugin does with EnableMetadataCache, a series' file is written in the
    background once the series is stable (StableAge after its last instance), so the first
    WADO-RS metadata call does not have to read the instances' files. The last series used
    stay decoded in memory (QIDO asks for instance attributes one instance at a time)."""

    MEMORY_CHARS = 8 << 20  # decoded series kept in memory, in characters of DICOM JSON

    def __init__(self, context: ServerContext, cache: bool):
        self.context = context
        self.folder: Path | None = None
        index_dir = Path(context.settings.index_dir)
        old = index_dir / OLD_CACHE_FOLDER
        if old.is_dir():  # one file per instance before: 4 KB each, dead now
            threading.Thread(target=_remove_old_layout, args=(old,),
                             name="dicomweb-metadata-cleanup", daemon=True).start()
        if cache:
            self.folder = index_dir / CACHE_FOLDER
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                logger.warning("DICOMweb metadata cache disabled: %s", e)
                self.folder = None
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, Entry] = OrderedDict()
        self._memory_chars = 0
        self._dirty: set[str] = set()  # series whose file is to be (re)written
        self._unplaced: set[str] = set()  # deleted instances whose series is to be found
        self._tasks: queue.Queue[tuple[str, str]] = queue.Queue()
        self._worker: threading.Thread | None = None
        context.add_listener(self._on_event)

    # ------------------------------------------------------------ events, background

    def _on_event(self, event: str, payload: dict[str, Any]) -> None:
        if self.folder is None:
            return
        if event == "stable" and payload.get("level") == SERIES:
            self._submit("warm", str(payload.get("id", "")))
        elif event == "deleted":
            gone, series_gone = set(), False
            for level, public_id in payload.get("resources", []):
                if level == SERIES:
                    self._forget(public_id)
                    series_gone = True
                elif level == INSTANCE:
                    gone.add(public_id)
            if gone and not series_gone:
                # One instance whose series lives on; the event does not say which series
                # (the index has forgotten it). A series in memory holds every instance its
                # file holds: rewrite it. Else its file is found by the instance's ID.
                with self._lock:
                    touched = [s for s, e in self._memory.items() if gone & e.keys()]
                    if not touched:
                        self._unplaced |= gone
                for series_id in touched:
                    self._submit("save", series_id)
                if not touched:
                    self._submit("sweep", "")

    def _submit(self, task: str, series_id: str) -> None:
        with self._lock:
            if task in ("save", "sweep"):  # once while queued ("" stands for the sweep)
                if series_id in self._dirty:
                    return
                self._dirty.add(series_id)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="dicomweb-metadata", daemon=True
                )
                self._worker.start()
        self._tasks.put((task, series_id))

    def _work(self) -> None:
        while True:
            task, series_id = self._tasks.get()
            try:
                if task == "warm":
                    self._warm(series_id)
                elif task == "sweep":
                    self._sweep()
                else:
                    self._save(series_id)
            except Exception as e:  # a deleted series, an unreadable file: answered later
                logger.debug("metadata of series %s not cached: %s", series_id, e)

    def _warm(self, series_id: str) -> None:
        rows = self.context.index.series_instance_rows(series_id)
        entry = self._load(series_id)
        fresh = {}
        for inst in rows:
            if inst.file_uuid and _cached(entry, inst) is None:
                fresh[inst.public_id] = (inst.file_uuid, self._read(inst))
        stale = entry.keys() - {r.public_id for r in rows}
        if fresh or stale or not self._path(series_id).exists():
            self._remember(series_id, fresh)
            self._save(series_id)

    def _sweep(self) -> None:
        """Rewrite the files still holding deleted instances whose series was not in memory:
        each file's header (its first bytes) names its instances."""
        with self._lock:
            self._dirty.discard("")
            gone, self._unplaced = self._unplaced, set()
        assert self.folder is not None
        for path in self.folder.glob("*/*"):
            if not gone:
                return
            held = None if path.name.startswith(".tmp-") else _instances_in_file(path)
            if held and gone & held:
                gone -= held
                try:
                    entry = decode_entry(path.read_bytes(), path.name)
                except OSError:
                    entry = None  # removed meanwhile
                if entry is not None:
                    self._save(path.name, entry)
        if gone:  # not cached, or its file damaged (ignored, then rebuilt when read)
            logger.debug("no metadata cache file holds deleted instances %s", sorted(gone))

    def _save(self, series_id: str, entry: Entry | None = None) -> None:
        """Write the series' file from memory (or `entry`), keeping only the instances the
        series holds now."""
        with self._lock:
            self._dirty.discard(series_id)
            if entry is None:
                entry = self._memory.get(series_id)
                entry = dict(entry) if entry is not None else None
        path = self._path(series_id)
        if entry is None:
            return
        now = self.context.index.series_instance_ids(series_id)
        items = [(pid, *entry[pid]) for pid in now if pid in entry]
        if not items:
            path.unlink(missing_ok=True)
            return
        _write_file(path, encode_entry(series_id, items))

    # ------------------------------------------------------------ the cache

    def _path(self, series_id: str) -> Path:
        assert self.folder is not None
        return self.folder / series_id[:2] / series_id

    def _load(self, series_id: str) -> Entry:
        """The series' cached instances: from memory, else from its file (checked)."""
        with self._lock:
            entry = self._memory.get(series_id)
            if entry is not None:
                self._memory.move_to_end(series_id)
                return entry
        try:
            data = self._path(series_id).read_bytes()
        except OSError:
            return {}
        loaded = decode_entry(data, series_id)
        if loaded is None:
            logger.info("DICOMweb metadata cache of series %s is damaged: rebuilt", series_id)
            self._path(series_id).unlink(missing_ok=True)
            return {}
        self._remember(series_id, loaded)
        return loaded

    def _remember(self, series_id: str, items: Entry) -> None:
        with self._lock:
            old = self._memory.pop(series_id, None)
            if old is not None:
                self._memory_chars -= _chars(old)
            entry = {**old, **items} if old else items  # a new dict: readers keep theirs
            self._memory[series_id] = entry
            self._memory_chars += _chars(entry)
            while self._memory_chars > self.MEMORY_CHARS and len(self._memory) > 1:
                _, old = self._memory.popitem(last=False)
                self._memory_chars -= _chars(old)

    def _forget(self, series_id: str) -> None:
        with self._lock:
            entry = self._memory.pop(series_id, None)
            if entry is not None:
                self._memory_chars -= _chars(entry)
        self._path(series_id).unlink(missing_ok=True)

    # ------------------------------------------------------------ answers

    def _read(self, inst: InstanceRow) -> str:
        """The instance's metadata read from its file: straight from its bytes for the
        common files (the pixel data not read when it comes last), else through pydicom
        (`dicomweb_fastjson` gives the same JSON)."""
        base = ROOT_MARK + inst.path
        raw, out = b"", None
        att = self.context.index.attachment(inst.rid)
        if att is not None and att.compression == COMPRESSION_NONE:
            head, size = self.context.storage.read_head(att.uuid, HEAD_BYTES)
            if len(head) == size:
                raw = head
            else:
                out = file_json(head, base, size)
        if out is None:
            raw = raw or self.context.read_instance(inst.public_id)
            out = file_json(raw, base)
            if out is None:
                out = dataset_json(dicomfile.read_full(raw), base)
        return json.dumps(out, separators=(",", ":"))

    def full(self, inst: InstanceRow) -> str:
        """The instance's metadata as JSON text, with ROOT_MARK standing for the root URL."""
        return next(self._full([inst], False, None))

    def _full(self, rows: list[InstanceRow], whole: bool,
              fallback: Callable[[InstanceRow, Exception], str] | None) -> Iterator[str]:
        """Full metadata of the rows, in order; `whole` when they are every instance of
        their series (a study or series request). An instance whose file cannot be read is
        answered by `fallback`, or raises what reading it raised."""
        entries: dict[str, Entry] = {}
        fresh: dict[str, Entry] = {}
        for inst in rows:
            entry = entries.get(inst.series_id)
            if entry is None:
                entry = entries[inst.series_id] = (
                    self._load(inst.series_id) if self.folder is not None else {})
            text = _cached(entry, inst)
            if text is None:
                try:
                    text = self._read(inst)
                except (KeyError, OSError, ValueError, EOFError, AttributeError,
                        TypeError) as e:
                    if fallback is None:
                        raise
                    yield fallback(inst, e)
                    continue
                if inst.file_uuid:
                    fresh.setdefault(inst.series_id, {})[inst.public_id] = (inst.file_uuid, text)
            yield text
        if self.folder is None:
            return
        if whole:  # a cached instance deleted since: rewrite without it
            ids = {inst.public_id for inst in rows}
            for series_id, entry in entries.items():
                if entry.keys() - ids:
                    fresh.setdefault(series_id, {})
        for series_id, items in fresh.items():
            self._remember(series_id, items)
            self._submit("save", series_id)

    def full_json(self, inst: InstanceRow) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.full(inst))
        return result

    def main_tags(self, inst: InstanceRow) -> str:
        """Metadata from the index alone (StudiesMetadata/SeriesMetadata "MainDicomTags")."""
        levels = self.context.index.tags_with_ancestors(inst.rid)
        pairs: dict[int, str] = {}
        if levels is not None:
            for lv in (INSTANCE, SERIES, STUDY, PATIENT):
                for kw, value in levels[lv].items():
                    tag = tag_of(kw)
                    if tag is not None and kw in MAIN_TAGS[lv]:
                        pairs.setdefault(tag, value)
        if inst.sop_class:
            pairs[0x00080016] = inst.sop_class
        return json.dumps(tags_json(pairs.items()), separators=(",", ":"))

    def answer(self, rows: list[InstanceRow], mode: str, whole: bool = False) -> Iterator[str]:
        """JSON texts of the rows' metadata, in order (files read one at a time); `whole`
        when the rows are every instance of their series."""
        if mode == "MainDicomTags":
            for inst in rows:
                yield self.main_tags(inst)
            return
        yield from self._full(rows, whole, self._fallback)

    def _fallback(self, inst: InstanceRow, e: Exception) -> str:
        if not isinstance(e, (KeyError, FileNotFoundError)):  # StoreDicom false, or deleted
            logger.warning("metadata of %s unreadable (%s): main tags only", inst.sop_uid, e)
        return self.main_tags(inst)


def _cached(entry: Entry, inst: InstanceRow) -> str | None:
    hit = entry.get(inst.public_id)
    if hit is None or not inst.file_uuid or hit[0] != inst.file_uuid:
        return None  # not cached yet, or another file since
    return hit[1]


def _chars(entry: Entry) -> int:
    return sum(len(text) for _, text in entry.values())


def encode_entry(series_id: str, items: list[tuple[str, str, str]]) -> bytes:
    """A series' cache file: zlib (with its checksum) of a header line, then the DICOM JSON
    array of its instances, whose texts the header's lengths delimit."""
    header = {"format": FORMAT, "series": series_id,
              "instances": [[pid, uuid, len(text)] for pid, uuid, text in items]}
    body = json.dumps(header, separators=(",", ":")) + "\n[" + ",".join(t for _, _, t in items)
    return zlib.compress((body + "]").encode("utf-8"), 6)


def decode_entry(data: bytes, series_id: str) -> Entry | None:
    """The instances of a series' cache file, or None when it is not one whole and intact."""
    try:
        text = zlib.decompress(data).decode("utf-8")
        head, sep, body = text.partition("\n")
        header = json.loads(head)
        if (not sep or not isinstance(header, dict) or header.get("format") != FORMAT
                or header.get("series") != series_id):
            return None
        entry: Entry = {}
        pos = 1  # after "["
        for pid, uuid, length in header["instances"]:
            if body[pos - 1] != ("," if entry else "["):
                return None
            entry[str(pid)] = (str(uuid), body[pos:pos + int(length)])
            pos += int(length) + 1
        end = pos - 1 if entry else pos  # where "]" must be, the last character
        if end != len(body) - 1 or body[end] != "]":
            return None
        return entry
    except (zlib.error, UnicodeError, ValueError, TypeError, KeyError, IndexError):
        return None


def _instances_in_file(path: Path) -> set[str] | None:
    """The instance IDs a series' cache file names in its header, read without inflating
    the DICOM JSON that follows; None when the file cannot be read or is not one."""
    inflate = zlib.decompressobj()
    head = b""
    try:
        with path.open("rb") as f:
            while b"\n" not in head:
                chunk = f.read(16384)
                if not chunk:
                    return None
                head += inflate.decompress(chunk)
        header = json.loads(head.partition(b"\n")[0])
        return {str(item[0]) for item in header["instances"]}
    except (OSError, zlib.error, ValueError, TypeError, KeyError, IndexError):
        return None


def _write_file(path: Path, data: bytes) -> None:
    """Temp file then rename, without fsync: a cache lost at a power cut is rebuilt."""
    tmp = ""
    try:
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:  # a full disk: answer without caching
        logger.debug("cannot cache metadata in %s: %s", path, e)
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def _remove_old_layout(folder: Path) -> None:
    t0 = time.monotonic()
    shutil.rmtree(folder, ignore_errors=True)
    logger.info("removed the old DICOMweb metadata cache %s (one file per instance) in %.1f s",
                folder, time.monotonic() - t0)
