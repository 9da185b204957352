"""Orthanc's error codes: the one table every REST error and failed job takes its number from."""

from __future__ import annotations

from typing import NamedTuple


class OrthancError(NamedTuple):
    name: str  # Orthanc's ErrorCode_ name
    code: int  # its number (OrthancStatus of an error answer, ErrorCode of a failed job)
    message: str  # the message pipacs answers with it
    status: int  # the HTTP status Orthanc answers with it


INTERNAL_ERROR = "Internal error"
BAD_REQUEST = "Bad request"
INEXISTENT_FILE = "Inexistent file"
NETWORK_PROTOCOL = "Error in the network protocol"
STORAGE_FULL = "The file storage is full"

ERRORS = (
    OrthancError("InternalError", -1, INTERNAL_ERROR, 500),
    OrthancError("NotImplemented", 2, "Not implemented", 501),
    OrthancError("ParameterOutOfRange", 3, "Parameter out of range", 400),
    OrthancError("BadSequenceOfCalls", 6, "Bad sequence of calls", 400),
    OrthancError("InexistentItem", 7, "Inexistent item", 404),
    OrthancError("BadRequest", 8, BAD_REQUEST, 400),
    OrthancError("BadRequest", 8, "Cannot modify a system metadata", 400),
    OrthancError("NetworkProtocol", 9, NETWORK_PROTOCOL, 500),
    OrthancError("InexistentFile", 13, INEXISTENT_FILE, 404),
    OrthancError("BadFileFormat", 15, "Bad file format", 400),
    OrthancError("UnknownResource", 17, "Unknown resource", 404),
    OrthancError("FullStorage", 19, STORAGE_FULL, 507),
    OrthancError("IncompatibleImageFormat", 23, "Incompatible image format", 400),
    OrthancError("UnknownDicomTag", 27, "Unknown DICOM tag", 404),
    OrthancError("UnknownModality", 32, "Unknown modality", 404),
)
_BY_MESSAGE = {e.message: e.code for e in ERRORS}
# The code of an error whose message is not in the table, by its HTTP status (else -1).
_BY_STATUS = {400: 8, 401: 8, 403: 8, 404: 17, 415: 8, 507: 19}


def code_of(message: str, status: int | None = None) -> int:
    """Orthanc's number for an error: by its message, else by its HTTP status, else -1."""
    code = _BY_MESSAGE.get(message)
    if code is not None and code != -1:
        return code
    return _BY_STATUS.get(status, -1) if status is not None else -1
