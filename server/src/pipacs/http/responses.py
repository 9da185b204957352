"""HTTP answers: JSON and text bodies, gzip for every compressible answer; a leaf module."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import bottle

# JSON answers are compact: Python's json has a C encoder only for compact output, and
# indenting was 40 % of GET /changes?last and 44 % of /studies?expand. Clients parse JSON;
# only error bodies keep Orthanc's indentation, for the person reading curl's output.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def json_response(data: Any) -> str:
    bottle.response.content_type = "application/json"
    return _encode(data)


def text_response(text: str) -> str:
    bottle.response.content_type = "text/plain"
    return text


# Answers shorter than this are sent as they are: gzip would not save a packet.
GZIP_MINIMUM = 1024
# Text and JSON compress well and cost little; raw frames (16-bit CT: a third to a half
# saved) are larger and many, so they get the fastest level, which a Pi keeps up with.
TEXT_LEVEL, BINARY_LEVEL = 5, 1
# Chunks read from a file answer while compressing it.
CHUNK = 64 * 1024

_TEXT_TYPES = {"application/json", "application/dicom+json", "application/javascript",
               "application/xml", "application/dicom+xml", "image/svg+xml"}


def gzip_level(content_type: str) -> int:
    """The gzip level for an answer of this Content-Type, 0 when it is not worth compressing:
    JSON, DICOM JSON, text; multipart/related of raw frames or bulk data (application/octet-
    stream parts, uncompressed pixels). Never JPEG, PNG, ZIP, nor DICOM files (often already
    JPEG inside)."""
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media.startswith("text/") or media in _TEXT_TYPES:
        return TEXT_LEVEL
    if media == "multipart/related" and 'type="application/octet-stream"' in params.lower():
        return BINARY_LEVEL
    return 0


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding value takes gzip ("gzip;q=0" refuses it)."""
    for item in header.split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().lower()
            return not (q.startswith("q=") and q[2:].strip().rstrip("0").rstrip(".") in ("", "0"))
    return False


def _deflated(chunks: Iterable[Any], level: int) -> Iterator[bytes]:
    """gzip of a streamed answer, one compressed piece per chunk read: memory stays at
    zlib's window, whatever the answer's size."""
    packer = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: the gzip container
    try:
        for chunk in chunks:
            data = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
            out = packer.compress(data)
            if out:
                yield out
        yield packer.flush()
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # the source's own clean-up (a client gone mid-answer included)


def _file_chunks(f: Any) -> Iterator[bytes]:
    try:
        while chunk := f.read(CHUNK):
            yield chunk
    finally:
        f.close()


def _compress(body: Any, level: int) -> Any:
    """The body gzipped: at once when it is in memory, streamed when it is a file or an
    iterator; None when it is too short to be worth it (or not a body we know)."""
    if isinstance(body, str | bytes | bytearray):
        if len(body) < GZIP_MINIMUM:
            return None
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        return gzip.compress(data, compresslevel=level)
    if hasattr(body, "read"):
        return _deflated(_file_chunks(body), level)
    if isinstance(body, Iterator):
        return _deflated(body, level)
    return None


def maybe_gzip(result: Any) -> Any:
    """gzip an answer when the client accepts it and its type compresses (gzip_level), with
    Vary: Accept-Encoding on every answer that could have been compressed, so that a cache
    between the Pi and a tablet keeps both forms apart."""
    response = result if isinstance(result, bottle.HTTPResponse) else bottle.response
    if response.status_code != 200 or "Content-Encoding" in response.headers:
        return result  # a 206 range, a 304, an error; or compressed already (the viewer)
    level = gzip_level(response.headers.get("Content-Type", "") or "")
    if not level:
        return result
    response.add_header("Vary", "Accept-Encoding")
    request = bottle.request
    if not accepts_gzip(request.headers.get("Accept-Encoding", "")) or "Range" in request.headers:
        return result
    body = result.body if response is result else result
    packed = _compress(body, level)
    if packed is None:
        return result
    response.set_header("Content-Encoding", "gzip")
    for header in ("Content-Length", "Accept-Ranges"):  # of the uncompressed bytes
        if header in response.headers:
            del response.headers[header]
    if response is result:
        result.body = packed
        return result
    return packed
