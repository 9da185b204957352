"""The HTTP worker threads serve clients in turn (http/fairqueue.py): a tablet opening the viewer
is not queued behind everything another tablet asked for."""

from __future__ import annotations

import json
import selectors
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datagen  # bench/ is on sys.path (conftest)
from pipacs.http.fairqueue import FairQueue


def _task(address: str, n: int) -> Any:
    return SimpleNamespace(addr=(address, 40000 + n), n=n)


def test_queue_serves_addresses_in_turn() -> None:
    q = FairQueue()
    for n in range(4):
        q.append(_task("10.0.0.1", n))
    q.append(_task("10.0.0.2", 10))
    q.append(_task("10.0.0.3", 20))
    q.append(_task("10.0.0.2", 11))
    assert len(q) == 7 and q
    order = [(t.addr[0][-1], t.n) for t in (q.popleft() for _ in range(7))]
    assert order == [("1", 0), ("2", 10), ("3", 20), ("1", 1), ("2", 11), ("1", 2), ("1", 3)]
    assert not q and len(q) == 0
    q.append(SimpleNamespace())  # no address (not a socket channel): one client of its own
    assert q.popleft() is not None


def _get(path: str, source: str, port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: pi\r\nConnection: close\r\n\r\n".encode())
    s.setblocking(False)
    return s


def test_a_newcomer_waits_for_one_request_of_a_busy_client(make_pipacs: Any,
                                                            tmp_path: Path) -> None:
    """One worker thread; client A queues 24 image renderings, then client B (another address)
    asks for /system: B is answered after at most two of A's (first come first served, it
    waited for every one of them)."""
    p = make_pipacs(HttpThreadsCount=1)
    [image] = datagen.make_large(tmp_path / "data", count=1, studies=1)
    status, _, body = p.request("POST", "/instances", image.read_bytes())
    assert status == 200, body
    iid = json.loads(body)["ID"]
    sel = selectors.DefaultSelector()
    a = [_get(f"/instances/{iid}/rendered?quality=100&n={n}", "127.0.0.1", p.http_port)
         for n in range(24)]
    for s in a:
        sel.register(s, selectors.EVENT_READ)
    b: socket.socket | None = None
    sent_b = 0.0
    arrived: list[tuple[str, float]] = []  # first bytes of each answer, in order
    deadline = time.monotonic() + 60
    while len(arrived) < 25 and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if s.recv(65536):
                arrived.append(("B" if s is b else "A", time.monotonic()))
                sel.unregister(s)
        if b is None and arrived:  # A's first answer: the others are queued behind it
            b = _get("/system", "127.0.0.2", p.http_port)
            sent_b = time.monotonic()
            sel.register(b, selectors.EVENT_READ)
    for s in [*a, *([b] if b else [])]:
        s.close()
    assert len(arrived) == 25, arrived
    b_at = next(t for who, t in arrived if who == "B")
    pending = sum(1 for who, t in arrived if who == "A" and t >= sent_b)
    ahead = sum(1 for who, t in arrived if who == "A" and sent_b <= t < b_at)
    assert pending >= 6, f"only {pending} of A's requests were still queued: nothing tested"
    assert ahead <= 2, (f"B waited for {ahead} of A's {pending} queued requests",
                        [(who, round(t - sent_b, 3)) for who, t in arrived])
