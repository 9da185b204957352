"""Archives of resources: ZIP streams written as they are read, DICOMDIR media, archive jobs.

An archive never leaves out a file silently. Every instance's file is checked before the
first byte is made, so a missing or unreadable one is a clear error ("Inexistent file" naming
the instance: 404 for a missing file, as Orthanc and GET /instances/{id}/file answer, 500
for one that is there but cannot be read). A file that fails only once streaming has started
(damaged, or removed meanwhile) ends the stream before the ZIP's central directory, never a
ZIP that looks whole. The HTTP routes (http/archives.py) and the job engine use it.
"""

from __future__ import annotations

import errno
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

from pydicom.fileset import FileSet

from . import browse, transcode
from .context import ServerContext
from .errorcodes import INEXISTENT_FILE
from .ids import INSTANCE, PATIENT, STUDY
from .index import Resource
from .jobs import Job, JobFailed, disk_full

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
# Characters a folder name may not hold in a ZIP entry (separators, Windows' reserved ones,
# control characters, Unicode's line and paragraph separators).
_UNSAFE = re.compile('[\\\\/:*?"<>|\x00-\x1f\x7f-\x9f\u2028\u2029]+')


class UnreadableFile(Exception):
    """The file of an instance to archive is missing or cannot be read."""

    def __init__(self, public_id: str, reason: str, sop_uid: str = "", missing: bool = False):
        self.public_id = public_id
        # Orthanc answers a missing file with a 404 (its InexistentFile), as GET
        # /instances/{id}/file does here; a file that is there but unreadable is a 500.
        self.status = 404 if missing else 500
        name = f"{public_id} (SOPInstanceUID {sop_uid})" if sop_uid else public_id
        self.details = f"the file of instance {name} cannot be read: {reason}"
        super().__init__(self.details)

    def job_error(self) -> JobFailed:
        return JobFailed(INEXISTENT_FILE, self.status, self.details)


def _reason(e: OSError) -> str:
    return str(e) if e.filename or not e.strerror else str(e.strerror)


def _gone(context: ServerContext, public_id: str) -> bool:
    """Deleted since the archive was listed: its file went with it (not an error)."""
    return context.index.get(public_id, INSTANCE) is None


def check_files(context: ServerContext, instances: list[Resource]) -> None:
    """Raise UnreadableFile for the first instance whose file is missing or does not open:
    an archive is refused before its first byte rather than sent without a file."""
    for inst in instances:
        att = context.index.attachment(inst.id)
        check_file(context, inst.public_id, att.uuid if att else "")


def check_file(context: ServerContext, public_id: str, file_uuid: str,
               sop_uid: str = "") -> None:
    """Raise UnreadableFile when the instance's file (`file_uuid`, "" for none) is missing
    or does not open, unless the instance has been deleted meanwhile."""
    try:
        if not file_uuid:
            raise FileNotFoundError(errno.ENOENT, "indexed without its DICOM file "
                                    "(StoreDicom was false)")
        try:
            open(context.storage.current_path(file_uuid), "rb").close()
        except FileNotFoundError:  # settled between the look-up and the open
            open(context.storage.path(file_uuid), "rb").close()
    except OSError as e:
        if not _gone(context, public_id):
            missing = isinstance(e, FileNotFoundError)
            raise UnreadableFile(public_id, _reason(e), sop_uid, missing) from e


def read_file(context: ServerContext, public_id: str, sop_uid: str = "") -> bytes | None:
    """The instance's file; None when the instance has been deleted meanwhile;
    UnreadableFile when its file is missing, unreadable or damaged."""
    try:
        return context.read_instance(public_id)
    except KeyError:
        return None
    except OSError as e:
        if _gone(context, public_id):
            return None
        missing = isinstance(e, FileNotFoundError)
        raise UnreadableFile(public_id, _reason(e), sop_uid, missing) from e


def _reader(context: ServerContext, public_id: str,
            syntax: str = "") -> Callable[[], bytes | None]:
    """Reads the instance's file for the archive (see read_file), transcoded to `syntax`
    when one is given (Orthanc's ?transcode= and "Transcode")."""
    if not syntax:
        return lambda: read_file(context, public_id)

    def read() -> bytes | None:
        data = read_file(context, public_id)
        if data is None:
            return None
        quality = context.settings.dicom_lossy_transcoding_quality
        return transcode.transcode(data, syntax, allow_lossy=True, quality=quality)

    return read


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


def stream_zip(entries: Iterable[tuple[str, Callable[[], bytes | None]]]) -> Iterator[bytes]:
    """ZIP bytes as they are produced; one file is held in memory at a time. An entry whose
    reader answers None is left out (deleted meanwhile); one whose reader raises ends the
    stream with that error, before the ZIP's central directory (never a ZIP that looks
    whole without the file)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED, allowZip64=True,  # type: ignore[call-overload]
                         compresslevel=1) as zf:
        for name, read in entries:
            data = read()
            if data is None:
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
    yield sink.take()  # the central directory (an error above leaves it unsent)


def _clean(text: str) -> str:
    """A folder name out of tag values: no separator or control character, and no leading
    or trailing dot ("..", "." or ". ." would name a parent folder or this one)."""
    return " ".join(_UNSAFE.sub(" ", text.replace("^", " ")).split()).strip(". ")


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


def archive_entries(context: ServerContext, instances: list[Resource], syntax: str = ""
                    ) -> Iterator[tuple[str, Callable[[], bytes | None]]]:
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

    for inst in instances:
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
        yield name, _reader(context, inst.public_id, syntax)


class MediaFolder:
    """A folder with a DICOMDIR and the instances, written by pydicom's FileSet in the
    temporary folder. A full disk raises ENOSPC naming that folder."""

    def __init__(self, context: ServerContext, instances: list[Resource],
                 check: Callable[[], None] | None = None, syntax: str = ""):
        self.tmp = Path(_temporary(context,
                                   lambda d: tempfile.mkdtemp(prefix="pipacs-media-", dir=d)))
        staged = self.tmp / "in"
        self.out = self.tmp / "out"
        fs = None
        try:
            try:
                staged.mkdir()
                fs = FileSet()
                _restage(fs, self.tmp)
                fs.ID = "PIPACS"
                for i, inst in enumerate(instances):
                    if check is not None:
                        check()
                    data = _reader(context, inst.public_id, syntax)()
                    if data is None:
                        continue
                    path = staged / f"{i}.dcm"
                    path.write_bytes(data)
                    fs.add(str(path))
                fs.write(str(self.out))
            finally:
                _drop_stage(fs)
        except BaseException as e:
            self.cleanup()
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OSError(e.errno, e.strerror, str(self.tmp.parent)) from e
            raise

    def entries(self) -> Iterator[tuple[str, Callable[[], bytes | None]]]:
        files = sorted(p for p in self.out.rglob("*") if p.is_file())
        for p in sorted(files, key=lambda p: (p.name != "DICOMDIR", str(p))):
            yield str(p.relative_to(self.out)), p.read_bytes

    def stream(self) -> Iterator[bytes]:
        """The folder as a ZIP; removed once sent, or when the client leaves."""
        try:
            yield from stream_zip(self.entries())
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _restage(fs: Any, folder: Path) -> None:
    """Make pydicom's FileSet stage its copies in `folder` (TemporaryDirectory), not in a
    TemporaryDirectory of its own in the system's temporary folder."""
    stage = getattr(fs, "_stage", None)
    if not isinstance(stage, dict) or "path" not in stage:
        return  # another pydicom: it stages where it likes
    old = stage.get("t")
    if not isinstance(old, tempfile.TemporaryDirectory):
        return
    new = tempfile.TemporaryDirectory(prefix="stage-", dir=folder)
    stage["t"], stage["path"] = new, Path(new.name)
    old.cleanup()


def _drop_stage(fs: Any) -> None:
    """Remove the folder pydicom's FileSet stages in (a TemporaryDirectory of its own,
    removed only when the FileSet is garbage-collected: it would stay on a full disk)."""
    stage = getattr(fs, "_stage", None)
    folder = stage.get("t") if isinstance(stage, dict) else None
    if isinstance(folder, tempfile.TemporaryDirectory):
        folder.cleanup()


class ArchiveFile:
    """The ZIP a job wrote to a temporary file, served at /jobs/{id}/archive."""

    def __init__(self, path: Path):
        self.path = path

    def open(self) -> tuple[int, Iterator[bytes]]:
        """(size, chunks) of the file, opened now: a file that has gone (a cleaner of the
        temporary folder) raises OSError here, before the answer starts. Once open, the
        file is read to the end even if it is removed meanwhile."""
        f = self.path.open("rb")
        try:
            size = os.fstat(f.fileno()).st_size
        except BaseException:
            f.close()
            raise

        def chunks() -> Iterator[bytes]:
            with f:
                while chunk := f.read(CHUNK):
                    yield chunk

        return size, chunks()

    def cleanup(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def archive_job(context: ServerContext, items: list[Resource], media: bool,
                syntax: str = "") -> Job:
    """Write the archive (or media) to a temporary file, served once the job succeeded.
    A missing or unreadable file fails the job ("Inexistent file", naming the instance);
    a full temporary folder fails it as a full disk (507)."""

    def work(job: Job) -> dict[str, Any]:
        instances = instances_of(context, items)
        total = len(instances)
        try:
            check_files(context, instances)
        except UnreadableFile as e:
            raise e.job_error() from None
        fd, name = _temporary(context, lambda d: tempfile.mkstemp(prefix="pipacs-archive-",
                                                                  suffix=".zip", dir=d))
        out = ArchiveFile(Path(name))
        try:
            with os.fdopen(fd, "wb") as f:
                def counted() -> Iterator[tuple[str, Callable[[], bytes | None]]]:
                    for n, entry in enumerate(archive_entries(context, instances, syntax)):
                        job.check_cancelled()
                        job.set_progress(n, total)
                        yield entry

                if media:
                    chunks = MediaFolder(context, instances, job.check_cancelled,
                                         syntax).stream()
                else:
                    chunks = stream_zip(counted())
                for chunk in chunks:
                    try:
                        f.write(chunk)
                    except OSError as e:
                        if e.errno in (errno.ENOSPC, errno.EDQUOT):
                            raise OSError(e.errno, e.strerror, name) from e
                        raise
        except UnreadableFile as e:
            out.cleanup()
            raise e.job_error() from None
        except OSError as e:
            out.cleanup()
            if disk_full(context, e) is not None:
                raise  # the job engine answers a full disk
            raise JobFailed("Cannot write the archive", 500, str(e)) from e
        except BaseException:
            out.cleanup()
            raise
        job.output = out
        size = out.path.stat().st_size
        uncompressed = 0
        for inst in instances:
            att = context.index.attachment(inst.id)
            uncompressed += att.size if att else 0
        return {"ArchiveSize": str(size), "ArchiveSizeMB": size // (1024 * 1024),
                "Description": job.description, "InstancesCount": total,
                "UncompressedSize": str(uncompressed),
                "UncompressedSizeMB": uncompressed // (1024 * 1024)}

    return Job("Media" if media else "Archive", work)


def temporary_folder(context: ServerContext) -> str:
    """Where temporary files go: TemporaryDirectory (made when missing), else the system's
    temporary folder (TMPDIR; on Debian 13 a RAM tmpfs)."""
    folder = context.settings.temporary_directory
    if not folder:
        return tempfile.gettempdir()
    os.makedirs(folder, exist_ok=True)
    return folder


def _temporary(context: ServerContext, make: Callable[[str], Any]) -> Any:
    """`make` a temporary file or folder in temporary_folder; a full disk is an ENOSPC
    naming the folder."""
    folder = context.settings.temporary_directory or tempfile.gettempdir()
    try:
        return make(temporary_folder(context))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(e.errno, e.strerror, folder) from e
        raise
