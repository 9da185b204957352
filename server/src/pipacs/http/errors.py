"""HTTP errors: HttpError and how it is answered (Orthanc's JSON shape); a leaf module."""

from __future__ import annotations

import logging
from typing import Any

import bottle

from ..errorcodes import STORAGE_FULL, code_of


class HttpError(Exception):
    """An error answered to the client with Orthanc's JSON shape."""

    def __init__(self, status: int, message: str, details: str = ""):
        self.status = status
        self.message = message
        self.details = details
        super().__init__(message)


class StreamAborted(Exception):
    """A streamed answer that failed after its first byte: its status is sent and cannot
    change, so the connection is cut (waitress then sends no final chunk) and the client
    sees a truncated transfer. The route has logged why; waitress logs no traceback."""


class _QuietAbort(logging.Filter):
    """Drops waitress' "Exception while serving" traceback for a StreamAborted."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamAborted))


def quiet_aborts() -> None:
    waitress_log = logging.getLogger("waitress")
    if not any(isinstance(f, _QuietAbort) for f in waitress_log.filters):
        waitress_log.addFilter(_QuietAbort())


def storage_full(details: str) -> HttpError:
    """507, Orthanc's answer when a disk is full; `details` names the disk."""
    return HttpError(507, STORAGE_FULL, details)


# An error answer quotes at most this much of what the client sent (a path, a value):
# a 16 MB body echoed in an error message made 96 MB of JSON.
QUOTE_LIMIT = 100
# Message and Details of an error answer are cut to this many characters, whatever put the
# client's input into them.
TEXT_LIMIT = 1000


def quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` as an error message may quote it: at most `limit` characters, then how many
    more there were."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more)"


def error_body(status: int, message: str, request: Any, details: str = "") -> dict[str, Any]:
    message = quote(message, TEXT_LIMIT)
    body = {
        "HttpError": bottle.HTTP_CODES.get(status, "Error"),
        "HttpStatus": status,
        "Message": message,
        "Method": request.method,
        "OrthancError": message,
        "OrthancStatus": code_of(message, status),
        "Uri": quote(request.path, TEXT_LIMIT),
    }
    if details:
        body["Details"] = quote(details, TEXT_LIMIT)
    return body
