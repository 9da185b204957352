"""multipart/related for DICOMweb: media type headers, reading request parts, streaming answers."""

from __future__ import annotations

import mmap
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


class MultipartError(ValueError):
    """A request body or header that is not the multipart message it claims to be."""


def parse_media_type(header: str) -> tuple[str, dict[str, str]]:
    """("multipart/related", {"type": "application/dicom", "boundary": ...}) from a header."""
    media, *rest = header.split(";")
    params: dict[str, str] = {}
    for item in _split(";".join(rest), ";"):
        name, sep, value = item.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params[name.strip().lower()] = value
    return media.strip().lower(), params


def _split(text: str, sep: str) -> list[str]:
    """Split on `sep` outside quoted strings; drop empty pieces."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p for p in (x.strip() for x in out) if p]


@dataclass
class Accepted:
    """One entry of an Accept header."""

    media: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def inner(self) -> str:
        """The media type of the parts (the `type` parameter of multipart/related)."""
        return self.params.get("type", "").lower()


def parse_accept(header: str) -> list[Accepted]:
    """Entries of an Accept header in the client's order of preference (q=0 dropped)."""
    entries = []
    for i, part in enumerate(_split(header or "", ",")):
        media, params = parse_media_type(part)
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            entries.append((-q, i, Accepted(media, params)))
    return [e[2] for e in sorted(entries, key=lambda e: (e[0], e[1]))]


@dataclass
class Part:
    """A part's headers and where its body lies in the message (read it with `body_of`)."""

    headers: dict[str, str]
    start: int
    end: int

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def split_parts(data: bytes | mmap.mmap, boundary: str) -> list[Part]:
    """The parts of a multipart body (bytes, or a mapped file), located but not copied;
    raises MultipartError when the body is not a complete multipart message."""
    if not boundary or len(boundary) > 200:
        raise MultipartError("the multipart boundary is missing or longer than 200 characters")
    try:
        delim = b"--" + boundary.encode("latin-1")
    except UnicodeEncodeError:
        raise MultipartError("the multipart boundary is not Latin-1 text") from None
    first = data.find(delim)
    if first < 0 or (first > 0 and data[first - 2 : first] != b"\r\n"):
        raise MultipartError("the body does not start with the multipart boundary")
    parts: list[Part] = []
    sep = b"\r\n" + delim
    pos = first + len(delim)
    while True:
        tail = data[pos : pos + 2]
        if tail == b"--":
            return parts
        if tail != b"\r\n":
            raise MultipartError("a multipart boundary is not followed by CRLF")
        # A part without headers has its empty line right after the boundary's CRLF.
        empty = data[pos : pos + 4] == b"\r\n\r\n"
        head_end = pos if empty else data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            raise MultipartError("a part's headers do not end with an empty line")
        headers = _headers(data[pos + 2 : head_end])
        start = head_end + 4
        end = data.find(sep, start)
        if end < 0:
            raise MultipartError("the body ends without the closing multipart boundary")
        parts.append(Part(headers, start, end))
        pos = end + len(sep)


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise MultipartError(f"malformed part header {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def new_boundary() -> str:
    return uuid.uuid4().hex


def content_type(inner: str, boundary: str, extra: str = "") -> str:
    return f'multipart/related; type="{inner}"; boundary={boundary}{extra}'


def stream(parts: Iterable[tuple[str, bytes, dict[str, str]]], boundary: str) -> Iterator[bytes]:
    """The body of a multipart/related answer, one part at a time."""
    delim = b"--" + boundary.encode("ascii")
    for ctype, body, extra in parts:
        head = f"\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        for k, v in extra.items():
            head += f"{k}: {v}\r\n"
        yield delim + head.encode("latin-1") + b"\r\n"
        yield body
        yield b"\r\n"
    yield delim + b"--\r\n"
