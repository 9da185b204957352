"""A client that reads an answer slowly gets all of it; an idle connection is still closed
after HttpRequestTimeout (http/channel.py keep_slow_answers)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def _big_instance(path: Path) -> bytes:
    """A 24 MB instance: more than loopback's socket buffers hold, so waitress keeps the rest."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality = "SLOW", "OT"
    ds.Rows = ds.Columns = 2048
    ds.NumberOfFrames = 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.random.default_rng(1).integers(0, 4096, 3 * 2048 * 2048,
                                                     dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def test_a_slow_reader_gets_the_whole_answer(make_pipacs: Any, tmp_path: Path) -> None:
    p = make_pipacs(HttpRequestTimeout=2)
    raw = _big_instance(tmp_path / "big.dcm")
    status, _, body = p.request("POST", "/instances", raw, timeout=120)
    assert status == 200, body
    iid = json.loads(body)["ID"]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", p.http_port))
    s.sendall(f"GET /instances/{iid}/file HTTP/1.1\r\nHost: pi\r\n\r\n".encode())
    time.sleep(6)  # the tablet's link is busy: nothing read for 3x HttpRequestTimeout
    s.settimeout(30)
    got = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        got += chunk
        head, _, rest = got.partition(b"\r\n\r\n")
        if rest and len(rest) >= len(raw):
            break
    s.close()
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert len(rest) == len(raw), f"cut after {len(rest)} of {len(raw)} bytes"


def test_an_idle_connection_is_still_closed(make_pipacs: Any) -> None:
    p = make_pipacs(HttpRequestTimeout=2)
    s = socket.create_connection(("127.0.0.1", p.http_port), timeout=20)
    s.sendall(b"GET /system HTTP/1.1\r\nHost: pi\r\n\r\n")
    time.sleep(0.5)
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    start = time.monotonic()
    assert s.recv(65536) == b""  # closed by the server, not by the client's timeout
    assert time.monotonic() - start < 10
    s.close()
