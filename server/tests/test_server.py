"""How server.py's waitress channel sends answers: the header with a small body in one send,
bytes straight to the socket, files by sendfile() and, when the socket is full, the rest
through waitress' own buffers, in order, on keep-alive connections; and what a running server
writes when asked for its threads' stacks."""

from __future__ import annotations

import http.client
import io
import signal
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def big_instance(megabytes: int) -> bytes:
    """A valid secondary-capture instance of about `megabytes` MB (noise: no compression)."""
    side = int((megabytes * 1024 * 1024 / 2) ** 0.5)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName, ds.Modality = "BIG", "Big^File", "OT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.random.default_rng(5).integers(0, 65535, (side, side),
                                                     dtype=np.uint16).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def upload(p: Any, data: bytes) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", p.http_port, timeout=60)
    conn.request("POST", "/instances", body=data)
    answer = conn.getresponse()
    body = answer.read()
    assert answer.status == 200, body
    import json

    return str(json.loads(body)["ID"])


def slow_get(p: Any, path: str) -> bytes:
    """GET over a raw socket that waits before reading: the server's socket fills up (the
    answer is larger than the loopback buffers) and it has to queue the rest."""
    with socket.create_connection(("127.0.0.1", p.http_port), timeout=60) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        time.sleep(1)
        chunks = []
        while data := s.recv(1 << 20):
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    assert length == len(body)
    return body


@pytest.mark.parametrize("compression", [False, True])
def test_large_file_to_a_slow_client(make_pipacs: Any, compression: bool) -> None:
    p = make_pipacs(StorageCompression=compression)
    data = big_instance(24)
    pid = upload(p, data)
    assert slow_get(p, f"/instances/{pid}/file") == data


def test_keep_alive_answers_stay_in_order(make_pipacs: Any, small_data: list[Path]) -> None:
    """Small and large files, JSON, HEAD and errors, one after the other on one connection."""
    p = make_pipacs()
    big = big_instance(3)
    big_id, small_id = upload(p, big), upload(p, small_data[0].read_bytes())
    small = small_data[0].read_bytes()
    conn = http.client.HTTPConnection("127.0.0.1", p.http_port, timeout=60)
    for _ in range(3):
        for method, path, status, expected in [
            ("GET", f"/instances/{big_id}/file", 200, big),
            ("GET", f"/instances/{small_id}/file", 200, small),
            ("HEAD", f"/instances/{big_id}/file", 200, b""),
            ("GET", "/changes?last", 200, None),
            ("GET", "/instances/nope/file", 404, None),
            ("GET", f"/instances/{small_id}/file", 200, small),
        ]:
            conn.request(method, path)
            answer = conn.getresponse()
            body = answer.read()
            assert answer.status == status, (method, path, body[:200])
            if expected is not None:
                assert body == expected, (method, path, len(body))
            if method == "HEAD":
                assert int(answer.getheader("Content-Length", "0")) == len(big)
    conn.close()


def test_keep_alive_false_closes_after_each_answer(make_pipacs: Any) -> None:
    p = make_pipacs(KeepAlive=False)
    conn = http.client.HTTPConnection("127.0.0.1", p.http_port, timeout=30)
    conn.request("GET", "/changes?last")
    answer = conn.getresponse()
    assert answer.status == 200 and answer.getheader("Connection") == "close"
    answer.read()


def test_sigusr1_writes_every_threads_stack_and_serving_goes_on(make_pipacs: Any) -> None:
    p = make_pipacs()
    assert p.proc is not None
    p.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while "Current thread" not in p.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = p.log()
    assert "Current thread" in log, log
    assert "waitress" in log  # the HTTP server's threads are among them
    assert p.get("/statistics")["CountInstances"] == 0
    p.echo()
