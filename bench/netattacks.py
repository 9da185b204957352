"""Connection-level attacks for attacks.py (issue 13, items 3 to 6): each function makes one
round of its attack against a running server and returns a short text of what happened.

The attacker's connections come from 127.0.0.9 where the server's per-address caps matter,
so that attacks.py's probes (from 127.0.0.1) stand for the other modalities and browsers.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
import urllib.error
import urllib.request
from typing import Any

ATTACKER = "127.0.0.9"  # a loopback address of its own
LOOPBACK = "127.0.0.1"
BLOCK = b"\0" * (1 << 20)


def _connect(port: int, source: str = ATTACKER, timeout: float = 2) -> socket.socket | None:
    try:
        return socket.create_connection((LOOPBACK, port), timeout=timeout,
                                        source_address=(source, 0))
    except OSError:
        return None


def _stream_until_answer(sock: socket.socket, limit: int, timeout: float) -> tuple[int, bytes]:
    """Send zeros (up to `limit` bytes) until the server answers or closes: (bytes sent,
    what it answered)."""
    sent = 0
    deadline = time.monotonic() + timeout
    sock.setblocking(False)
    answer = b""
    while time.monotonic() < deadline:
        readable, writable, _ = select.select([sock], [sock] if sent < limit else [], [], 0.2)
        if readable:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
            continue
        if writable:
            try:
                sent += sock.send(BLOCK[: min(len(BLOCK), limit - sent)])
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                break
    return sent, answer


def _announce(port: int, head: bytes, length: int, timeout: float) -> tuple[int, bytes, float]:
    """Send `head` (announcing `length` bytes), then zeros until the server answers or
    closes: (bytes sent, the answer, seconds)."""
    sock = _connect(port, LOOPBACK)
    if sock is None:
        return 0, b"(connection refused)", 0.0
    t0 = time.monotonic()
    with sock:
        sock.sendall(head)
        sent, answer = _stream_until_answer(sock, length, timeout)
    return sent, answer, time.monotonic() - t0


def big_association_request(dicom_port: int, timeout: float) -> str:
    """An A-ASSOCIATE-RQ announcing 4 GiB - 1, then zeros as fast as the server takes them."""
    sent, answer, took = _announce(dicom_port, struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF),
                                   0xFFFFFFFF, timeout)
    what = "A-ABORT" if answer[:1] == b"\x07" else f"{len(answer)} bytes" if answer else "close"
    return f"{what} after {sent / 1e6:.0f} MB, {took:.2f} s"


def big_pdata(dicom_port: int, aet: str, timeout: float) -> str:
    """A P-DATA-TF announcing 1 GiB on an established association."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="ATTACKER")
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, dicom_port, ae_title=aet)
    if not assoc.is_established:
        return "association refused"
    sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    if sock is None:
        return "no socket"
    t0 = time.monotonic()
    sock.sendall(struct.pack(">BBLLB", 0x04, 0, 1 << 30, (1 << 30) - 4, 1))
    sent = 0
    deadline = time.monotonic() + timeout
    while assoc.is_established and time.monotonic() < deadline and sent < 1 << 30:
        try:
            sock.settimeout(0.2)
            sent += sock.send(BLOCK)
        except TimeoutError:
            continue
        except OSError:
            break
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    state = "aborted" if assoc.is_aborted else "still open" if assoc.is_established else "ended"
    assoc.abort()
    return f"{state} after {sent / 1e6:.0f} MB, {time.monotonic() - t0:.2f} s"


def held_connections(port: int, count: int, first: bytes, timeout: float,
                     trickle: bool = False) -> str:
    """`count` connections that send `first` (and, with `trickle`, a byte a second): how many
    the server closed at once, and when it had closed them all."""
    socks = [s for s in (_connect(port) for _ in range(count)) if s is not None]
    t0 = time.monotonic()
    closed: list[float] = []
    live = []
    for s in socks:
        try:
            s.sendall(first)
            s.setblocking(False)
            live.append(s)
        except OSError:
            closed.append(0.0)
    last_trickle = t0
    try:
        while live and time.monotonic() - t0 < timeout:
            readable, _, _ = select.select(live, [], [], 0.2)
            for s in readable:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    closed.append(time.monotonic() - t0)
                    live.remove(s)
                    s.close()
            if trickle and time.monotonic() - last_trickle >= 1:
                last_trickle = time.monotonic()
                for s in live:
                    with contextlib.suppress(OSError):
                        s.send(b"x")
    finally:
        for s in live:
            s.close()
    at_once = sum(1 for c in closed if c < 0.5)
    text = f"{len(socks)} opened, {at_once} closed at once"
    if live:
        return text + f", {len(live)} still open after {timeout:.0f} s"
    return text + f", the last after {max(closed, default=0):.1f} s"


def big_body(http_port: int, timeout: float) -> str:
    """POST /instances announcing 4 GiB, then zeros until the server answers."""
    sent, answer, took = _announce(
        http_port, b"POST /instances HTTP/1.1\r\nHost: x\r\nContent-Length: 4294967296\r\n\r\n",
        1 << 32, timeout)
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace") if answer else "no answer"
    return f"{status} after {sent / 1e6:.0f} MB, {took:.2f} s"


def http_get(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return f"{r.status} {len(r.read())} bytes"
    except urllib.error.HTTPError as e:
        return f"{e.code} {e.read(80).decode(errors='replace')}"


def stored_uids(srv: Any) -> tuple[str, str, str]:
    """The study, series and SOP instance UIDs of the one instance stored."""
    (instance,) = srv.get("/instances")
    tags = srv.get(f"/instances/{instance}/simplified-tags")
    return tags["StudyInstanceUID"], tags["SeriesInstanceUID"], tags["SOPInstanceUID"]
