"""Hostile DICOM clients (issue 13, items 3 and 4), against a real pipacs.

- A PDU is checked from its 6-byte header, before its body is read: an A-ASSOCIATE-RQ
  announcing 128 MB (pipacs used to buffer whatever came, up to 4 GiB) and a P-DATA-TF over
  the negotiated maximum abort the association at once, logged with the peer's address.
- Association slots: 33 idle connections from one address took all 32 slots for 30 s. Now
  one address holds at most DicomAssociationsPerAddress connections, a modality from another
  address gets through meanwhile, and a connection that sends no whole A-ASSOCIATE-RQ
  within DicomAssociationRequestTimeout (a byte now and then included) is closed.

The servers run with an address-space limit (as in test_hostile_clients.py).
"""

from __future__ import annotations

import resource
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from conftest import PipacsProcess

MEMORY_LIMIT = 3 << 30


def rss_mb(p: PipacsProcess, field: str = "VmRSS") -> float:
    """The server's resident memory (VmHWM: its peak so far), in MB."""
    assert p.proc is not None
    for line in Path(f"/proc/{p.proc.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


@pytest.fixture
def limited(make_pipacs: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Starts pipacs (with these settings) under an address-space limit."""
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")

    def start(**cfg: Any) -> PipacsProcess:
        p: PipacsProcess = make_pipacs(start=False, **cfg)
        p.start(wait=False)
        assert p.proc is not None
        resource.prlimit(p.proc.pid, resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        deadline = time.monotonic() + 60
        while True:  # HTTP starts after DICOM; no DICOM probe holding a slot
            try:
                socket.create_connection(("127.0.0.1", p.http_port), timeout=1).close()
                return p
            except OSError:
                assert time.monotonic() < deadline and p.proc.poll() is None, p.log()
                time.sleep(0.1)

    return start


def echo(p: PipacsProcess, source: str = "127.0.0.1") -> bool:
    """A C-ECHO from `source` (a loopback address): True on success."""
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 5
    assoc = ae.associate("127.0.0.1", p.dicom_port, ae_title=p.aet, bind_address=(source, 0))
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0
    finally:
        assoc.release()


def answer_of(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends before closing (or until `timeout`)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def send_quietly(sock: socket.socket, data: bytes) -> int:
    """Send what the server takes; it may have closed (that is what we test), and a client
    that saw its abort may have closed the socket already (pynetdicom's does)."""
    sent = 0
    try:
        sock.settimeout(2)
        while sent < len(data):
            sent += sock.send(data[sent:sent + (1 << 20)])
    except OSError:
        pass
    return sent


def test_a_huge_association_request_is_aborted_unread(limited: Any) -> None:
    p = limited()
    before = rss_mb(p)
    with socket.create_connection(("127.0.0.1", p.dicom_port)) as sock:
        t0 = time.monotonic()
        sock.sendall(struct.pack(">BBL", 0x01, 0, 128 << 20))
        sent = send_quietly(sock, b"\0" * (32 << 20))
        answer = answer_of(sock, 10)
        elapsed = time.monotonic() - t0
    assert answer[:1] == b"\x07", (answer[:20], sent)  # A-ABORT
    assert elapsed < 8
    assert rss_mb(p) - before < 30, (before, rss_mb(p))
    assert "127.0.0.1 announced a PDU of type 0x01" in p.log()
    assert echo(p)


@pytest.mark.parametrize("fast_paths", [True, False])
def test_a_pdata_over_the_negotiated_maximum_aborts(limited: Any, fast_paths: bool) -> None:
    p = limited(MaximumPduLength=16384, FastPaths=fast_paths)
    before = rss_mb(p)
    ae = AE(ae_title="BIGPDU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", p.dicom_port, ae_title=p.aet)
    assert assoc.is_established
    sock = assoc.dul.socket.socket
    assert sock is not None
    sock.sendall(struct.pack(">BBLLB", 0x04, 0, 64 << 20, (64 << 20) - 4, 1))
    send_quietly(sock, b"\0" * (16 << 20))
    deadline = time.monotonic() + 8
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
    assert rss_mb(p) - before < 30
    assert "announced a PDU of type 0x04 and 67108864 bytes (at most 17408)" in p.log()
    assert echo(p)


def test_idle_connections_hold_no_slot_for_long(limited: Any) -> None:
    p = limited(DicomAssociationRequestTimeout=2)
    idle = [socket.create_connection(("127.0.0.1", p.dicom_port)) for _ in range(33)]
    trickle = socket.create_connection(("127.0.0.1", p.dicom_port))
    try:
        trickle.sendall(struct.pack(">BBL", 0x01, 0, 1000))
        time.sleep(0.3)
        assert echo(p, "127.0.0.2")  # another address: the old code refused it
        for _ in range(6):  # a byte now and then: closed at the deadline all the same
            time.sleep(0.5)
            send_quietly(trickle, b"\0")
        assert answer_of(trickle, 2) == b""  # closed
        assert echo(p)  # the idle ones are gone: the same address again
    finally:
        for sock in [*idle, trickle]:
            sock.close()
    assert "DICOM connection from 127.0.0.1 closed: it already holds 16" in p.log()
