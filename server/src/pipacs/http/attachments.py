"""Attachment operations beyond reading: verify-md5, compress/uncompress, PUT and DELETE."""

from __future__ import annotations

import hashlib

import bottle

from ..context import ServerContext
from ..ids import INSTANCE
from ..storage import COMPRESSION_NONE, Attachment
from .common import LEVEL_ROUTE, PLURALS, resource
from .errors import HttpError
from .responses import json_response
from .tools_extra import unsupported

# The DICOM file's attachment, by name and by Orthanc's number.
DICOM_NAMES = ("dicom", "1")
USER_RANGE = range(1024, 65536)


def find_attachment(context: ServerContext, plural: str, pid: str, name: str,
                    acting: bool = False) -> Attachment:
    """The attachment `name` of a resource (pipacs has one: an instance's DICOM file).
    `acting` (verify-md5): a DICOM file asked of a patient, study or series is a bad
    request, as in Orthanc; reading or compressing one is a 404."""
    res = resource(context, PLURALS[plural], pid)
    if acting and res.level != INSTANCE and name in DICOM_NAMES:
        raise HttpError(400, "Bad request", "only instances have a DICOM file")
    att = context.index.attachment(res.id) if res.level == INSTANCE else None
    if name not in DICOM_NAMES or att is None:
        raise HttpError(404, "Inexistent item", f"no attachment {name!r}")
    return att


def etag(att: Attachment) -> str:
    """Orthanc's ETag of an attachment: its revision (always 0 here) and its MD5."""
    return f'"0-{att.md5}"' if att.md5 else ""


def user_attachment(context: ServerContext, name: str) -> bool:
    """A name Orthanc takes for a user attachment (a number 1024-65535 or UserContentType)."""
    if name.isdigit():
        return int(name) in USER_RANGE
    return name in context.settings.user_content_type


def install(app: bottle.Bottle, context: ServerContext) -> None:

    @app.post(f"/{LEVEL_ROUTE}/<pid>/attachments/<name>/verify-md5")
    def verify_md5(plural: str, pid: str, name: str) -> str:
        att = find_attachment(context, plural, pid, name, acting=True)
        if not att.md5:
            raise HttpError(400, "Bad request", "no MD5 was stored for this attachment "
                            "(StoreMD5ForAttachments was false)")
        try:
            data = context.storage.read(att)
        except FileNotFoundError as e:
            raise HttpError(404, "Inexistent file", str(e)) from None
        if hashlib.md5(data).hexdigest() != att.md5:
            raise HttpError(500, "Corrupted file (e.g. inconsistent MD5 hash)",
                            f"the stored file of attachment {name} does not match its MD5")
        return json_response({})

    @app.post(f"/{LEVEL_ROUTE}/<pid>/attachments/<name>/<op:re:compress|uncompress>")
    def change_compression(plural: str, pid: str, name: str, op: str) -> str:
        att = find_attachment(context, plural, pid, name)
        if (att.compression != COMPRESSION_NONE) == (op == "compress"):
            return json_response({})  # already so: Orthanc does nothing either
        raise unsupported(f"{op} of one attachment", "the whole storage area follows "
                          "StorageCompression; files stored before a change keep theirs")

    @app.put(f"/{LEVEL_ROUTE}/<pid>/attachments/<name>")
    @app.delete(f"/{LEVEL_ROUTE}/<pid>/attachments/<name>")
    def write_attachment(plural: str, pid: str, name: str) -> str:
        resource(context, PLURALS[plural], pid)
        if name in DICOM_NAMES:
            raise HttpError(403, "Forbidden", "the DICOM file cannot be replaced or removed "
                            "as an attachment (delete the instance)")
        if not user_attachment(context, name):
            raise HttpError(404, "Inexistent item", f"no attachment type {name!r}")
        raise unsupported("user-defined attachments", "pipacs stores DICOM files only")
