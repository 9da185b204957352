"""ZIP archives of resources, streamed while they are written; DICOMDIR media; archive jobs."""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import bottle

from .. import browse
from ..context import ServerContext
from ..ids import INSTANCE, PATIENT, STUDY
from ..index import Resource
from ..jobs import Job, JobFailed
from .app import HttpError
from .common import LEVEL_ROUTE, PLURALS, body_json, flag, resource, resources_of_body
from .jobs import run

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f]+')


class _Sink:
    """A write-only, unseekable file: zipfile then writes data descriptors, never seeks back."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.position = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def stream_zip(entries: Iterable[tuple[str, Callable[[], bytes]]]) -> Iterator[bytes]:
    """ZIP bytes as they are produced; one file is held in memory at a time."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED, allowZip64=True,  # type: ignore[call-overload]
                         compresslevel=1) as zf:
        for name, read in entries:
            try:
                data = read()
            except (OSError, KeyError) as e:
                logger.error("archive: skipping %s: %s", name, e)
                continue
            info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.file_size = len(data)
            with zf.open(info, "w") as f:
                for i in range(0, len(data), CHUNK):
                    f.write(data[i:i + CHUNK])
                    if sink.position and len(sink.chunks) > 8:
                        yield sink.take()
            yield sink.take()
    yield sink.take()


def _clean(text: str) -> str:
    return " ".join(_UNSAFE.sub(" ", text.replace("^", " ")).split())


def _folder(level: int, tags: dict[str, str]) -> str:
    if level == PATIENT:
        name = f"{tags.get('PatientID', '')} {tags.get('PatientName', '')}"
    elif level == STUDY:
        name = f"{tags.get('AccessionNumber', '')} {tags.get('StudyDescription', '')}"
    else:
        name = f"{tags.get('Modality', '')} {tags.get('SeriesDescription', '')}"
    return _clean(name) or ("Unknown patient", "Unknown study", "Unknown series")[level]


def instances_of(context: ServerContext, items: list[Resource]) -> list[Resource]:
    seen: set[str] = set()
    out = []
    for res in items:
        for inst in browse.descendants(context, res, INSTANCE):
            if inst.public_id not in seen:
                seen.add(inst.public_id)
                out.append(inst)
    return out


def archive_entries(context: ServerContext, items: list[Resource]
                    ) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(path in the ZIP, reader) for each instance: Patient/Study/Series/XX000000.dcm."""
    idx = context.index
    parents: dict[int, Resource | None] = {}
    names: dict[int, str] = {}
    used: dict[str, set[str]] = {}
    counters: dict[int, int] = {}

    def get(rid: int | None) -> Resource | None:
        if rid is None:
            return None
        if rid not in parents:
            parents[rid] = idx.get_by_id(rid)
        return parents[rid]

    def folder_of(res: Resource, prefix: str) -> str:
        if res.id not in names:
            base = _folder(res.level, res.tags)
            taken = used.setdefault(prefix, set())
            name, n = base, 1
            while name in taken:
                n += 1
                name = f"{base} ({n})"
            taken.add(name)
            names[res.id] = name
        return names[res.id]

    for inst in instances_of(context, items):
        series = get(inst.parent)
        study = get(series.parent) if series else None
        patient = get(study.parent) if study else None
        if series is None or study is None or patient is None:
            continue
        p = folder_of(patient, "")
        s = folder_of(study, p)
        se = folder_of(series, p + "/" + s)
        n = counters.get(series.id, 0)
        counters[series.id] = n + 1
        modality = _clean(series.tags.get("Modality", ""))[:2].upper() or "IM"
        name = f"{p}/{s}/{se}/{modality}{n:06d}.dcm"
        yield name, functools.partial(context.read_instance, inst.public_id)


class _MediaFolder:
    """A folder with a DICOMDIR and the instances, written by pydicom's FileSet."""

    def __init__(self, context: ServerContext, items: list[Resource]):
        from pydicom.fileset import FileSet

        self.tmp = Path(tempfile.mkdtemp(prefix="pipacs-media-"))
        staged = self.tmp / "in"
        staged.mkdir()
        self.out = self.tmp / "out"
        fs = FileSet()
        fs.ID = "PIPACS"
        try:
            for i, inst in enumerate(instances_of(context, items)):
                path = staged / f"{i}.dcm"
                path.write_bytes(context.read_instance(inst.public_id))
                fs.add(str(path))
            fs.write(str(self.out))
        except Exception:
            self.cleanup()
            raise

    def entries(self) -> Iterator[tuple[str, Callable[[], bytes]]]:
        files = sorted(p for p in self.out.rglob("*") if p.is_file())
        for p in sorted(files, key=lambda p: (p.name != "DICOMDIR", str(p))):
            yield str(p.relative_to(self.out)), p.read_bytes

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def stream_media(context: ServerContext, items: list[Resource]) -> Iterator[bytes]:
    folder = _MediaFolder(context, items)
    try:
        yield from stream_zip(folder.entries())
    finally:
        folder.cleanup()


class ArchiveFile:
    """The ZIP a job wrote to a temporary file, served at /jobs/{id}/archive."""

    def __init__(self, path: Path):
        self.path = path

    def stream(self) -> Iterator[bytes]:
        with self.path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def cleanup(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def archive_job(context: ServerContext, items: list[Resource], media: bool) -> Job:
    def work(job: Job) -> dict[str, Any]:
        fd, name = tempfile.mkstemp(prefix="pipacs-archive-", suffix=".zip")
        out = ArchiveFile(Path(name))
        total = len(instances_of(context, items))
        try:
            with os.fdopen(fd, "wb") as f:
                def counted() -> Iterator[tuple[str, Callable[[], bytes]]]:
                    for n, entry in enumerate(archive_entries(context, items)):
                        job.check_cancelled()
                        job.set_progress(n, total)
                        yield entry

                chunks = stream_media(context, items) if media else stream_zip(counted())
                for chunk in chunks:
                    f.write(chunk)
        except Exception as e:
            out.cleanup()
            if isinstance(e, OSError):
                raise JobFailed("Cannot write the archive", 500, str(e)) from e
            raise
        job.output = out
        size = out.path.stat().st_size
        uncompressed = 0
        for inst in instances_of(context, items):
            att = context.index.attachment(inst.id)
            uncompressed += att.size if att else 0
        return {"ArchiveSize": str(size), "ArchiveSizeMB": size // (1024 * 1024),
                "Description": job.description, "InstancesCount": total,
                "UncompressedSize": str(uncompressed),
                "UncompressedSizeMB": uncompressed // (1024 * 1024)}

    return Job("Media" if media else "Archive", work)


def install(app: bottle.Bottle, context: ServerContext) -> None:

    def send(items: list[Resource], media: bool, filename: str) -> Iterator[bytes]:
        bottle.response.content_type = "application/zip"
        bottle.response.set_header("Content-Disposition", f'attachment; filename="{filename}"')
        if media:
            return stream_media(context, items)
        return stream_zip(archive_entries(context, items))

    def answer(items: list[Resource], media: bool, body: dict[str, Any], filename: str) -> Any:
        asynchronous = flag(body, "Asynchronous", False) or not flag(body, "Synchronous", True)
        if asynchronous:
            return run(context, body, archive_job(context, items, media),
                       synchronous_default=False)
        return send(items, media, filename)

    @app.get(f"/{LEVEL_ROUTE}/<pid>/<kind:re:archive|media>")
    def get_archive(plural: str, pid: str, kind: str) -> Any:
        res = resource(context, PLURALS[plural], pid)
        return send([res], kind == "media", f"{pid}.zip")

    @app.post(f"/{LEVEL_ROUTE}/<pid>/<kind:re:archive|media>")
    def post_archive(plural: str, pid: str, kind: str) -> Any:
        res = resource(context, PLURALS[plural], pid)
        body = body_json(default={}, kind=dict)
        return answer([res], kind == "media", body, f"{pid}.zip")

    @app.post("/tools/<kind:re:create-archive|create-media|create-media-extended>")
    def create_archive(kind: str) -> Any:
        body = body_json(kind=(dict, list))
        if isinstance(body, list):
            body = {"Resources": body}
        items = resources_of_body(context, body)
        if not items:
            raise HttpError(400, "Bad request", "no resources to put in the archive")
        return answer(items, kind != "create-archive", body, "archive.zip")

