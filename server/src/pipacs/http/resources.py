"""Resource routes: lists, one resource, children, parents, statistics, metadata, uploads."""

from __future__ import annotations

import io
import logging
import zipfile
from typing import IO, Any

import bottle

from .. import browse
from ..context import Origin, ServerContext, StoreRefused, StoreResult
from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from ..index import Resource
from ..storage import StorageFullError
from .attachments import etag, find_attachment
from .auth import remote_user
from .common import (
    LEVEL_ROUTE,
    LEVEL_WORDS,
    PLURALS,
    body_bytes,
    query_flag,
    query_int,
    resource,
)
from .errors import HttpError
from .responses import json_response, text_response

logger = logging.getLogger(__name__)

STORE_ERRORS = {"BadFile": 400, "Full": 507, "Filtered": 403, "Failure": 500}
ATTACHMENT_OPERATIONS = ["compressed-data", "compressed-md5", "compressed-size", "data",
                         "is-compressed", "md5", "size", "uuid"]


def install(app: bottle.Bottle, context: ServerContext) -> None:
    idx = context.index

    @app.get(f"/{LEVEL_ROUTE}")
    def list_resources(plural: str) -> str:
        level = PLURALS[plural]
        ids = idx.list_public_ids(level, query_int("since", 0), query_int("limit", 0))
        if not query_flag("expand"):
            return json_response(ids)
        return json_response(browse.resources_json(context,
                                                   browse.resources_of(context, ids, level)))

    @app.get(f"/{LEVEL_ROUTE}/<pid>")
    def get_resource(plural: str, pid: str) -> str:
        return json_response(browse.resource_json(context, resource(context, PLURALS[plural],
                                                                    pid)))

    @app.delete(f"/{LEVEL_ROUTE}/<pid>")
    def delete_resource(plural: str, pid: str) -> str:
        res = resource(context, PLURALS[plural], pid)
        chain = []
        parent = res
        while parent.parent is not None:
            parent = idx.get_by_id(parent.parent)  # type: ignore[assignment]
            if parent is None:
                break
            chain.append(parent.public_id)
        try:
            context.delete(res.public_id)
        except StorageFullError as e:
            raise HttpError(507, "The file storage is full", str(e)) from None
        remaining = None
        for ancestor_id in chain:
            found = idx.get(ancestor_id)
            if found is not None:
                remaining = browse.short_json(found)
                break
        return json_response({"RemainingAncestor": remaining})

    @app.get(f"/{LEVEL_ROUTE}/<pid>/<rel:re:patient|study|series|studies|instances>")
    def related(plural: str, pid: str, rel: str) -> str:
        res = resource(context, PLURALS[plural], pid)
        if rel in PLURALS and PLURALS[rel] > res.level:
            return json_response(browse.resources_json(
                context, browse.descendants(context, res, PLURALS[rel])))
        target = LEVEL_WORDS.get(rel)
        if target is None or target >= res.level:
            raise HttpError(404, "Unknown resource", f"/{plural}/{{id}}/{rel} does not exist")
        found = browse.ancestor(context, res, target)
        if found is None:
            raise HttpError(404, "Unknown resource", "the parent is gone")
        return json_response(browse.resource_json(context, found))

    @app.get(f"/{LEVEL_ROUTE}/<pid>/statistics")
    def resource_statistics(plural: str, pid: str) -> str:
        return json_response(browse.statistics(context, resource(context, PLURALS[plural], pid)))

    # ------------------------------------------------------------ metadata

    @app.get(f"/{LEVEL_ROUTE}/<pid>/metadata")
    def metadata_list(plural: str, pid: str) -> str:
        res = resource(context, PLURALS[plural], pid)
        named = browse.named_metadata(context, res.id)
        return json_response(named if query_flag("expand") else list(named))

    def _metadata_number(name: str, writing: bool) -> int:
        number = browse.metadata_number(context, name)
        if number is None:
            raise HttpError(404 if not writing else 400, "Unknown metadata",
                            f"no metadata named {name!r} (see UserMetadata)")
        if writing and number < browse.USER_METADATA_START:
            raise HttpError(403, "Cannot modify a system metadata",
                            f"{name} is written by the server")
        return number

    @app.get(f"/{LEVEL_ROUTE}/<pid>/metadata/<name>")
    def metadata_get(plural: str, pid: str, name: str) -> str:
        res = resource(context, PLURALS[plural], pid)
        number = _metadata_number(name, False)
        value = idx.metadata(res.id).get(number)
        if value is None:
            raise HttpError(404, "Inexistent item", f"{plural}/{pid} has no metadata {name}")
        return text_response(value)

    @app.put(f"/{LEVEL_ROUTE}/<pid>/metadata/<name>")
    def metadata_put(plural: str, pid: str, name: str) -> str:
        res = resource(context, PLURALS[plural], pid)
        number = _metadata_number(name, True)
        try:
            value = body_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "Bad request", "metadata must be UTF-8 text") from None
        idx.set_metadata(res.id, res.level, res.public_id, number, value)
        return json_response({})

    @app.delete(f"/{LEVEL_ROUTE}/<pid>/metadata/<name>")
    def metadata_delete(plural: str, pid: str, name: str) -> str:
        res = resource(context, PLURALS[plural], pid)
        number = _metadata_number(name, True)
        if not browse.delete_metadata(context, res, number):
            raise HttpError(404, "Inexistent item", f"{plural}/{pid} has no metadata {name}")
        return json_response({})

    # ------------------------------------------------------------ attachments

    def _attachment(plural: str, pid: str, name: str) -> Any:
        att = find_attachment(context, plural, pid, name)
        if etag(att):  # Orthanc's ETag on every attachment answer
            bottle.response.set_header("ETag", etag(att))
        return att

    @app.get(f"/{LEVEL_ROUTE}/<pid>/attachments")
    def attachments(plural: str, pid: str) -> str:
        res = resource(context, PLURALS[plural], pid)
        has = res.level == INSTANCE and idx.attachment(res.id) is not None
        names = ["dicom"] if has else []
        if query_flag("full"):
            return json_response({"dicom": 1} if has else {})
        return json_response(names)

    @app.get(f"/{LEVEL_ROUTE}/<pid>/attachments/<name>")
    def attachment_operations(plural: str, pid: str, name: str) -> str:
        _attachment(plural, pid, name)
        return json_response(ATTACHMENT_OPERATIONS)

    @app.get(f"/{LEVEL_ROUTE}/<pid>/attachments/<name>/<op>")
    def attachment_operation(plural: str, pid: str, name: str, op: str) -> Any:
        att = _attachment(plural, pid, name)
        if op == "data":
            bottle.response.content_type = "application/dicom"
            return context.storage.read(att)
        if op == "compressed-data":
            bottle.response.content_type = "application/octet-stream"
            return context.storage.read_stored(att.uuid)  # staged files too
        values = {"size": str(att.size), "compressed-size": str(att.compressed_size),
                  "md5": att.md5, "compressed-md5": att.compressed_md5, "uuid": att.uuid,
                  "is-compressed": "1" if att.compression != 1 else "0"}
        if op not in values:
            raise HttpError(404, "Unknown resource", f"unknown attachment operation {op!r}")
        return text_response(values[op])

    # ------------------------------------------------------------ protection

    @app.get("/patients/<pid>/protected")
    def protected_get(pid: str) -> str:
        return text_response("1" if resource(context, PATIENT, pid).protected else "0")

    @app.put("/patients/<pid>/protected")
    def protected_put(pid: str) -> str:
        res = resource(context, PATIENT, pid)
        value = body_bytes().strip()
        if value not in (b"0", b"1"):
            raise HttpError(400, "Bad request", 'the body must be "0" or "1"')
        idx.set_protected(res.id, value == b"1")
        return text_response("")

    # ------------------------------------------------------------ uploads

    @app.post("/instances")
    def upload() -> str:
        origin = Origin("RestApi", remote_ip=bottle.request.environ.get("REMOTE_ADDR", ""),
                        http_user=remote_user())
        # bottle holds the body in a temporary file (beyond 100 KB): a ZIP archive is read
        # from there one member at a time, not copied into memory whole
        body = bottle.request.body
        if body.read(4) == b"PK\x03\x04":
            body.seek(0)
            return json_response(_upload_zip(context, body, origin))
        body.seek(0)
        raw = body_bytes()
        try:
            result = context.store(raw, origin)
        except StoreRefused as e:
            raise store_error(e) from None
        return json_response(store_json(result))


def store_json(result: StoreResult) -> dict[str, Any]:
    """The answer to POST /instances for one stored instance."""
    return {
        "ID": result.ids[INSTANCE],
        "ParentPatient": result.ids[PATIENT],
        "ParentStudy": result.ids[STUDY],
        "ParentSeries": result.ids[SERIES],
        "Path": f"/instances/{result.ids[INSTANCE]}",
        "Status": result.status,
    }


def store_error(e: StoreRefused) -> HttpError:
    """The HTTP answer to a refused store: Orthanc's status and message, pipacs' details."""
    message = {"BadFile": "Bad file format", "Full": "The file storage is full"}
    return HttpError(STORE_ERRORS.get(e.reason, 500), message.get(e.reason, e.message), e.message)


# An uploaded ZIP may not expand to more than this many times its size (and this much at
# least): a ZIP bomb is refused before anything is inflated. Nested archives are not opened.
ZIP_RATIO = 100
ZIP_FREE_EXPANSION = 64 << 20
ZIP_MEMBER_LIMIT = 512 << 20


def _upload_zip(context: ServerContext, source: IO[bytes],
                origin: Origin) -> list[dict[str, Any]]:
    """Store every DICOM file of a ZIP archive (read from `source`, a seekable file); 400
    when none could be stored."""
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    try:
        archive = zipfile.ZipFile(source)
    except Exception as e:  # zipfile raises more than BadZipFile on hostile input
        raise HttpError(400, "Bad file format", f"not a readable ZIP archive: {e}") from None
    with archive:
        # not is_dir(): it fails on an empty name (found by fuzzing)
        members = [i for i in archive.infolist() if not i.filename.endswith("/")]
        expansion = sum(i.file_size for i in members)
        limit = max(ZIP_FREE_EXPANSION, ZIP_RATIO * size)
        big = next((i for i in members if i.file_size > ZIP_MEMBER_LIMIT), None)
        if expansion > limit or big is not None:
            raise HttpError(400, "Bad file format",
                            f"the ZIP archive would expand to {expansion} bytes "
                            f"({size} uploaded)" + (f", {big.filename!r} alone to "
                                                        f"{big.file_size}" if big else "")
                            + ": refused")
        out = []
        failures = []
        for info in members:
            try:
                data = archive.read(info)
            except Exception as e:  # BadZipFile, zlib.error, EOFError, encryption, ...
                failures.append(f"{info.filename}: cannot be read ({e})")
                continue
            if data[:4] == b"PK\x03\x04":
                failures.append(f"{info.filename}: nested ZIP archives are not opened")
                continue
            try:
                out.append(store_json(context.store(data, origin)))
            except StoreRefused as e:
                if e.reason == "Full":
                    raise store_error(e) from None
                failures.append(f"{info.filename}: {e.message}")
    for failure in failures:
        logger.error("not storing from an uploaded ZIP: %s", failure)
    if not out:
        shown = "; ".join(failures[:5]) + ("; ..." if len(failures) > 5 else "")
        raise HttpError(400, "Bad file format",
                        f"no DICOM instance stored from the ZIP archive: {shown or 'it is empty'}")
    return out


def resources_json(context: ServerContext, items: list[Resource]) -> list[dict[str, Any]]:
    return [browse.resource_json(context, r) for r in items]
