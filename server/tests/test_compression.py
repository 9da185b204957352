"""Bytes on the air (issue 15): every compressible answer is gzipped when the client accepts
it, with Vary: Accept-Encoding, and decodes to the same content; JPEG, PNG and DICOM files go
as they are. Checked with real clients (requests, dicomweb-client) on a CT series, counting
the bytes that crossed the socket (requests' raw stream, not decoded)."""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient

import datagen
from conftest import PipacsProcess, base_config

SLICES = 12


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PipacsProcess, str, str]]:
    """A pipacs with one 512x512 CT series, a served folder with a 300 KB JSON file."""
    folder = tmp_path_factory.mktemp("ct")
    files = datagen.make_large(folder / "data", count=SLICES, studies=1)
    (folder / "web").mkdir()
    (folder / "web" / "atlas.json").write_text(json.dumps(
        [{"slice": i, "label": f"structure {i % 40}"} for i in range(8000)]))
    p = PipacsProcess(folder, base_config(DicomWeb={"Enable": True}, ServeFolders={"/web": "web"},
                                          Plugins=["libServeFolders.so"]))
    p.start()
    for f in files:
        assert requests.post(p.url + "/instances", data=f.read_bytes(), timeout=30).ok
    study = requests.get(p.url + "/studies?expand", timeout=30).json()[0]
    series = requests.get(p.url + f"/studies/{study['ID']}/series", timeout=30).json()[0]
    tags = study["MainDicomTags"], series["MainDicomTags"]
    yield p, tags[0]["StudyInstanceUID"], tags[1]["SeriesInstanceUID"]
    p.stop()


def wire(url: str, gzip_ok: bool, **headers: str) -> tuple[requests.Response, bytes]:
    """The answer and the bytes of its body as sent (still compressed)."""
    headers["Accept-Encoding"] = "gzip" if gzip_ok else "identity"
    r = requests.get(url, headers=headers, stream=True, timeout=60)
    return r, r.raw.read(decode_content=False)


def frame_of(multipart: bytes) -> bytes:
    """The body of a one-part multipart answer (boundaries differ from answer to answer)."""
    return multipart.partition(b"\r\n\r\n")[2].rpartition(b"\r\n--")[0]


def test_series_metadata_is_gzipped_and_decodes_equal(ct: tuple[PipacsProcess, str, str]) -> None:
    p, study, series = ct
    url = f"{p.url}/dicom-web/studies/{study}/series/{series}/metadata"
    plain, plain_bytes = wire(url, False)
    packed, packed_bytes = wire(url, True)
    assert plain.headers.get("Content-Encoding") is None
    assert packed.headers["Content-Encoding"] == "gzip"
    for r in (plain, packed):
        assert "Accept-Encoding" in r.headers.get("Vary", ""), r.headers
    assert json.loads(gzip.decompress(packed_bytes)) == json.loads(plain_bytes)
    assert len(packed_bytes) * 5 < len(plain_bytes)
    # dicomweb-client (requests underneath, gzip accepted by default) gets the same datasets.
    client = DICOMwebClient(p.url + "/dicom-web")
    assert client.retrieve_series_metadata(study, series) == json.loads(plain_bytes)
    print(f"\nCT series metadata ({SLICES} slices): {len(plain_bytes)} bytes, "
          f"{len(packed_bytes)} gzipped", file=sys.stderr)


def test_qido_and_rest_json_are_gzipped(ct: tuple[PipacsProcess, str, str]) -> None:
    p, study, _ = ct
    for path in (f"/dicom-web/studies/{study}/instances", "/instances?expand"):
        _, plain_bytes = wire(p.url + path, False)
        packed, packed_bytes = wire(p.url + path, True)
        assert packed.headers["Content-Encoding"] == "gzip", path
        assert json.loads(gzip.decompress(packed_bytes)) == json.loads(plain_bytes)


def test_raw_frames_are_gzipped_streams_of_served_files_too(
        ct: tuple[PipacsProcess, str, str]) -> None:
    p, study, series = ct
    client = DICOMwebClient(p.url + "/dicom-web")
    sop = client.search_for_instances(study, series)[0]["00080018"]["Value"][0]
    url = f"{p.url}/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/1"
    accept = {"Accept": 'multipart/related; type="application/octet-stream"'}
    _, plain_bytes = wire(url, False, **accept)
    packed, packed_bytes = wire(url, True, **accept)
    assert packed.headers["Content-Encoding"] == "gzip"
    assert frame_of(gzip.decompress(packed_bytes)) == frame_of(plain_bytes)
    assert len(packed_bytes) < 0.8 * len(plain_bytes)
    print(f"\nCT frame: {len(plain_bytes)} bytes, {len(packed_bytes)} gzipped", file=sys.stderr)
    frame = client.retrieve_instance_frames(study, series, sop, [1])[0]
    assert len(frame) == 512 * 512 * 2 and frame == frame_of(plain_bytes)
    # A served file is read and compressed chunk by chunk: no Content-Length of either size.
    _, plain_bytes = wire(p.url + "/web/atlas.json", False)
    packed, packed_bytes = wire(p.url + "/web/atlas.json", True)
    assert packed.headers["Content-Encoding"] == "gzip" and "Content-Length" not in packed.headers
    assert gzip.decompress(packed_bytes) == plain_bytes
    assert len(packed_bytes) * 5 < len(plain_bytes)


def test_images_and_dicom_files_go_as_they_are(ct: tuple[PipacsProcess, str, str]) -> None:
    p, study, series = ct
    base = f"{p.url}/dicom-web/studies/{study}/series/{series}"
    for url, accept in [(f"{base}/rendered", "image/jpeg"), (f"{base}/thumbnail", "image/png"),
                        (base, 'multipart/related; type="application/dicom"')]:
        r, _ = wire(url, True, Accept=accept)
        assert r.status_code == 200 and r.headers.get("Content-Encoding") is None, url
        assert "Accept-Encoding" not in r.headers.get("Vary", ""), url
    # gzip;q=0 is a refusal; short answers are not worth it.
    r, _ = wire(p.url + "/instances?expand", False, **{"Accept-Encoding": "gzip;q=0"})
    assert r.headers.get("Content-Encoding") is None
    r, _ = wire(p.url + "/tools/now", True)
    assert r.headers.get("Content-Encoding") is None


def test_the_switch_turns_it_off(make_pipacs: object, tmp_path: Path) -> None:
    p = make_pipacs(HttpCompressionEnabled=False)  # type: ignore[operator]
    r, body = wire(p.url + "/system", True)  # gzipped when on (over 1 KB of JSON)
    assert r.status_code == 200 and r.headers.get("Content-Encoding") is None
    assert json.loads(body)["Name"] == "TestPi"
