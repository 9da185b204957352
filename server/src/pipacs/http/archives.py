"""Archive routes: ZIP and DICOMDIR media of resources, streamed or made by a job.

What fails before an answer's first byte is an error answer; what fails after it cuts the
transfer (see start_stream): the client sees it end early, never a ZIP that looks whole.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import bottle

from .. import transcode
from ..archive import (
    MediaFolder,
    UnreadableFile,
    archive_entries,
    archive_job,
    check_files,
    instances_of,
    stream_zip,
)
from ..context import ServerContext
from ..errorcodes import INEXISTENT_FILE
from ..index import Resource
from .common import LEVEL_ROUTE, PLURALS, body_json, flag, resource, resources_of_body
from .errors import HttpError, StreamAborted
from .jobs import run

logger = logging.getLogger(__name__)


def unreadable_error(e: UnreadableFile) -> HttpError:
    """The answer for a file an archive or a DICOMweb answer cannot read."""
    return HttpError(e.status, INEXISTENT_FILE, e.details)


def _guarded(chunks: Iterator[bytes], what: str) -> Iterator[bytes]:
    """The chunks of an answer, with what a failure means: before the first chunk is
    handed out (see _started) an error answer; after it, the transfer is cut."""
    started = False
    try:
        for chunk in chunks:
            yield chunk
            started = True
    except GeneratorExit:  # the client has gone
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # a DICOMDIR's temporary folder goes now
        raise
    except (UnreadableFile, OSError) as e:
        details = e.details if isinstance(e, UnreadableFile) else str(e)
        if not started:
            if isinstance(e, UnreadableFile):
                logger.error("%s: %s: refused", what, details)
                raise unreadable_error(e) from None
            raise  # create_app's error mapping answers it (507 for a full disk)
        logger.error("%s: %s: the transfer is cut short", what, details)
        raise StreamAborted(details) from None


def start_stream(chunks: Iterator[bytes], what: str) -> Iterator[bytes]:
    """A streamed answer, its first chunk made now: what fails before it is an error answer
    (UnreadableFile: 404 or 500 "Inexistent file"; a full disk: 507); what fails after it cuts the
    transfer (StreamAborted). `what` names the request in the one log line."""
    guarded = _guarded(chunks, what)
    first = next(guarded, b"")
    return _started(first, guarded)


def _started(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    """The answer's chunks: `first`, made before the answer started, then the rest."""
    try:
        yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()  # the client has gone before the rest was asked for


def transcode_arg(value: Any) -> str:
    """The syntax of ?transcode= or "Transcode" ("" for none); 400 when pipacs cannot
    write it."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise HttpError(400, "Bad request", "Transcode must be a transfer syntax UID")
    why = transcode.cannot_write(value, allow_lossy=True)
    if why:
        raise HttpError(400, "Bad request", why)
    return value


def install(app: bottle.Bottle, context: ServerContext) -> None:

    def send(items: list[Resource], media: bool, filename: str,
             syntax: str = "") -> Iterator[bytes]:
        """Stream the ZIP. Every file is checked first, and the first chunk is made here,
        so that what fails before the first byte is an error answer with its status."""
        what = f"archive {bottle.request.method} {bottle.request.path}"
        instances = instances_of(context, items)
        try:
            check_files(context, instances)
            if media:
                chunks = MediaFolder(context, instances, syntax=syntax).stream()
            else:
                chunks = stream_zip(archive_entries(context, instances, syntax))
        except UnreadableFile as e:
            logger.error("%s: %s: refused", what, e.details)
            raise unreadable_error(e) from None
        answer = start_stream(chunks, what)
        bottle.response.content_type = "application/zip"
        bottle.response.set_header("Content-Disposition", f'attachment; filename="{filename}"')
        return answer

    def answer(items: list[Resource], media: bool, body: dict[str, Any], filename: str) -> Any:
        asynchronous = flag(body, "Asynchronous", False) or not flag(body, "Synchronous", True)
        syntax = transcode_arg(body.get("Transcode"))
        if asynchronous:
            return run(context, body, archive_job(context, items, media, syntax),
                       synchronous_default=False)
        return send(items, media, filename, syntax)

    @app.get(f"/{LEVEL_ROUTE}/<pid>/<kind:re:archive|media>")
    def get_archive(plural: str, pid: str, kind: str) -> Any:
        res = resource(context, PLURALS[plural], pid)
        syntax = transcode_arg(bottle.request.query.get("transcode"))
        return send([res], kind == "media", f"{pid}.zip", syntax)

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

