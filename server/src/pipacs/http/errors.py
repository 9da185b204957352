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


def error_body(status: int, message: str, request: Any, details: str = "") -> dict[str, Any]:
    body = {
        "HttpError": bottle.HTTP_CODES.get(status, "Error"),
        "HttpStatus": status,
        "Message": message,
        "Method": request.method,
        "OrthancError": message,
        "OrthancStatus": code_of(message, status),
        "Uri": request.path,
    }
    if details:
        body["Details"] = details
    return body
