"""Hostile HTTP clients (issue 13, item 5), against a real pipacs.

- 205 half-sent requests held every one of waitress' 200 connections (a byte every 29 s
  keeps one): now one address holds at most HttpConnectionsPerAddress connections, and a
  request whose headers are not whole HttpHeaderTimeout seconds after its first byte is
  dropped. Another address is answered meanwhile.
- A body over HttpMaximumBodySize is refused from its Content-Length, before it is sent
  (413 in Orthanc's JSON shape); a chunked one as soon as its chunks add up to more.
- Error answers quote little of the input: a 1 MB body or path never comes back whole.
- The TLS front has the same caps: 300 sockets are not 300 threads.

The servers run with an address-space limit (as in test_hostile_clients.py).
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
import zipfile
from pathlib import Path
from typing import Any

import test_hostile_dicom
from conftest import PipacsProcess, http_request
from test_hostile_dicom import answer_of, rss_mb
from test_rest_tls import self_signed

limited = test_hostile_dicom.limited  # the fixture


def open_idle(port: int, n: int, first_bytes: bytes = b"GET /sys") -> list[socket.socket]:
    socks = []
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(first_bytes)
            socks.append(s)
        except OSError:
            break
    return socks


def get_from(port: int, source: str, path: str = "/system", timeout: float = 3,
             tls: bool = False) -> bytes:
    """A GET from a loopback address of our choice: the answer's first bytes."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                   source_address=(source, 0))
    sock: Any = raw
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(raw)
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return bytes(sock.recv(200))


def closed_within(sock: socket.socket, seconds: float, trickle: bool) -> bool:
    """Whether the server closes `sock` within `seconds` (sending a byte every 0.5 s)."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if trickle:
                sock.send(b"t")
            if sock.recv(100) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_half_sent_requests_do_not_starve_the_server(limited: Any) -> None:
    p: PipacsProcess = limited(HttpHeaderTimeout=2)
    idle = open_idle(p.http_port, 205)
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        assert get_from(p.http_port, "127.0.0.2").startswith(b"HTTP/1.1 200"), p.log()[-2000:]
        assert time.monotonic() - t0 < 2
        held = [s for s in idle if not closed_within(s, 0.01, trickle=False)]
        assert len(held) <= 32
        trickler = socket.create_connection(("127.0.0.1", p.http_port), source_address=(
            "127.0.0.3", 0))
        trickler.sendall(b"GET /system HTTP/1.1\r\n")
        assert closed_within(trickler, 6, trickle=True)  # the old code: until 29 s of silence
        trickler.close()
    finally:
        for s in idle:
            s.close()
    log = p.log()
    assert "HTTP connection from 127.0.0.1 closed: it already holds 32" in log
    assert "HTTP connection from 127.0.0.3 closed: no whole request headers in 2 s" in log


def answer(sock: socket.socket, timeout: float = 5) -> tuple[int, dict[str, Any]]:
    data = answer_of(sock, timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    return int(head.split()[1]), json.loads(body)


def test_bodies_over_the_limit_are_refused_before_they_are_read(limited: Any) -> None:
    p: PipacsProcess = limited(HttpMaximumBodySize=1)
    before = rss_mb(p)
    with socket.create_connection(("127.0.0.1", p.http_port)) as s:
        s.sendall(b"POST /instances HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
        s.sendall(b"\0" * 65536)
        status, body = answer(s)
    assert status == 413 and body["HttpStatus"] == 413, body
    assert body["Method"] == "POST" and body["Uri"] == "/instances", body
    with socket.create_connection(("127.0.0.1", p.http_port)) as s:
        s.sendall(b"PUT /patients/x/metadata/1024 HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"\0" * 65536
        try:
            for _ in range(40):  # 2.5 MB
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # refused before the end
        status, body = answer(s)
    assert status == 413 and body["HttpStatus"] == 413, body
    assert rss_mb(p) - before < 30
    assert http_request(p.url + "/system")[0] == 200


ROUTES = [("POST", "/tools/lookup"), ("POST", "/instances"), ("POST", "/tools/find"),
          ("POST", "/tools/create-dicom"), ("POST", "/tools/execute-script"),
          ("PUT", "/patients/x/metadata/1024"), ("POST", "/dicom-web/studies"),
          ("POST", "/modalities/x/echo"), ("POST", "/tools/reconstruct")]


def test_errors_quote_little_of_the_input(pipacs: PipacsProcess) -> None:
    """(Each of these answered briefly already; the path below did not.)"""
    big = b"A" * (1 << 20)
    for method, route in ROUTES:
        status, _, body = pipacs.request(method, route, big,
                                         headers={"Content-Type": "application/json"})
        assert len(body) < 4000, (route, status, body[:300])


def test_errors_quote_little_of_the_path(pipacs: PipacsProcess) -> None:
    """A 60,000-character path came back whole in the 404's Uri."""
    status, _, body = pipacs.request("GET", "/patients/" + "B" * 60000)
    assert status == 404 and len(body) < 4000, body[:300]


def test_the_tls_front_caps_connections(limited: Any, tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    p: PipacsProcess = limited(SslEnabled=True, SslCertificate=str(cert),
                               HttpHeaderTimeout=2)
    threads_before = len(list(Path(f"/proc/{p.proc.pid}/task").iterdir()))  # type: ignore
    idle = open_idle(p.http_port, 300, b"")
    try:
        time.sleep(1)
        threads = len(list(Path(f"/proc/{p.proc.pid}/task").iterdir()))  # type: ignore
        assert threads - threads_before <= 40, (threads_before, threads)
        assert get_from(p.http_port, "127.0.0.2", tls=True).startswith(b"HTTP/1.1 200")
    finally:
        for s in idle:
            s.close()
    assert "TLS connection from 127.0.0.1 closed" in p.log()


def test_a_zip_upload_is_read_a_member_at_a_time(pipacs: PipacsProcess, tmp_path: Path,
                                                small_data: list[Path]) -> None:
    """POST /instances read a whole ZIP into memory; now it stays in bottle's temporary
    file and each member is read in turn (here 40 members of 4 MB, one DICOM file)."""
    path = tmp_path / "upload.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.write(small_data[0], "one.dcm")
        for n in range(40):
            z.writestr(f"junk{n}.bin", bytes([n]) * (4 << 20))
    http_request(pipacs.url + "/system")
    before = rss_mb(pipacs, "VmHWM")
    status, _, body = http_request(pipacs.url + "/instances", "POST", path.read_bytes(),
                                   timeout=120)
    assert status == 200 and len(json.loads(body)) == 1, body[:300]
    assert rss_mb(pipacs, "VmHWM") - before < 80, (before, rss_mb(pipacs, "VmHWM"))


def test_a_large_body_without_credentials_is_refused_before_it_is_read(
        make_pipacs: Any) -> None:
    """waitress read a whole body before the application could answer 401 (1 GiB was
    buffered); a body over 64 KB is now checked from the headers."""
    p: PipacsProcess = make_pipacs(AuthenticationEnabled=True, RegisteredUsers={"bob": "pw"})
    with socket.create_connection(("127.0.0.1", p.http_port)) as s:
        s.sendall(b"POST /instances HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
        data = answer_of(s, 5)
    assert data.startswith(b"HTTP/1.1 401 "), data[:200]
    assert b'www-authenticate: basic realm="testpi"' in data.lower(), data[:300]
    auth = base64.b64encode(b"bob:pw").decode()
    status, _, _ = http_request(p.url + "/tools/lookup", "POST", b"x" * 100_000,
                                headers={"Authorization": f"Basic {auth}"})
    assert status == 200  # with credentials, the body is read as before
