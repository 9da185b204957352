"""Transcoding for DICOM peers, as Orthanc 1.7+ does: dcmtk's storescp accepting only some
syntaxes as the C-STORE / C-MOVE destination, getscu as the C-GET requester; what they
receive is compared with the stored pixels and with what Debian's Orthanc 1.10.1 sends for
the same request."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom import uid

from conftest import DCMTK_ENV, PipacsProcess, base_config, dcmtk, free_port, need
from test_codecs import _make
from test_rest_orthanc import orthanc  # noqa: F401 (a fixture)
from test_rest_resources import request


class Scp:
    """dcmtk's storescp accepting what its options say (+xi: implicit VR LE only...)."""

    def __init__(self, folder: Path, *options: str, aet: str = "STORESCP"):
        self.aet, self.port, self.folder = aet, free_port(), folder
        folder.mkdir()
        self.proc = subprocess.Popen(
            [need("storescp"), "-aet", aet, *options, "-od", str(folder), str(self.port)],
            env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)

    def received(self, count: int = 1, timeout: float = 10) -> list[pydicom.Dataset]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = sorted(p for p in self.folder.iterdir() if p.is_file())
            if len(files) >= count:
                time.sleep(0.1)  # storescp writes, then renames
                return [pydicom.dcmread(p) for p in sorted(self.folder.iterdir())]
            time.sleep(0.05)
        return []

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@pytest.fixture
def scps(tmp_path: Path) -> Iterator[Any]:
    started: list[Scp] = []

    def factory(*options: str) -> Scp:
        s = Scp(tmp_path / f"scp{len(started)}", *options)
        started.append(s)
        return s

    yield factory
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def jpegls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JPEG-LS lossless instance (made with dcmtk from our own image)."""
    return _make(tmp_path_factory.mktemp("transcode"), "jpeg-ls", "mono16", ("dcmcjpls", "+el"))


def _pipacs(tmp_path: Path, scp: Scp, **overrides: Any) -> PipacsProcess:
    modality = {"AET": scp.aet, "Host": "127.0.0.1", "Port": scp.port,
                **overrides.pop("modality", {})}
    folder = tmp_path / "pipacs"
    folder.mkdir()
    p = PipacsProcess(folder, base_config(DicomModalities={"scp": modality}, **overrides))
    p.start()
    return p


def _post(url: str, path: Path) -> str:
    status, _, body = request(url + "/instances", "POST", path.read_bytes())
    assert status == 200, body
    return str(json.loads(body)["ID"])


def _same_pixels(got: pydicom.Dataset, path: Path) -> bool:
    return bool(np.array_equal(got.pixel_array, pydicom.dcmread(path).pixel_array))


def _orthanc_modality(url: str, scp: Scp | None, name: str = "scp", aet: str = "") -> None:
    """A modality added to Orthanc at run time (dcmtk's movescu and getscu, which Orthanc
    1.10.1 refuses unless they are known, or a storescp)."""
    port = scp.port if scp else 104
    status, _, body = request(f"{url}/modalities/{name}", "PUT", json.dumps(
        {"AET": scp.aet if scp else aet, "Host": "127.0.0.1", "Port": port}))
    assert status == 200, body


def _move(port: int, aec: str, dest: str, ds: pydicom.Dataset) -> str:
    proc = dcmtk("movescu", "-S", "-aec", aec, "-aem", dest, "-k", "QueryRetrieveLevel=SERIES",
                 "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                 "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}", "127.0.0.1", str(port),
                 check=False)
    return proc.stdout + proc.stderr


def test_store_scu_sends_a_syntax_the_peer_accepts(tmp_path: Path, scps: Any, jpegls: Path,
                                                    orthanc: Any) -> None:  # noqa: F811
    """A JPEG-LS instance to a storescp that accepts implicit VR little endian only: both
    pipacs and Orthanc send it decompressed, the same pixels."""
    ours, theirs = scps("+xi"), scps("+xi")
    p = _pipacs(tmp_path, ours)
    try:
        iid = _post(p.url, jpegls)
        status, _, body = request(f"{p.url}/modalities/scp/store", "POST", json.dumps([iid]))
        assert status == 200, body
        _post(orthanc.url, jpegls)
        _orthanc_modality(orthanc.url, theirs)
        status, _, body = request(f"{orthanc.url}/modalities/scp/store", "POST", json.dumps([iid]))
        assert status == 200, body
        (got,), (reference,) = ours.received(), theirs.received()
        assert got.file_meta.TransferSyntaxUID == uid.ImplicitVRLittleEndian
        assert reference.file_meta.TransferSyntaxUID == uid.ImplicitVRLittleEndian
        assert _same_pixels(got, jpegls)
        assert np.array_equal(got.pixel_array, reference.pixel_array)
        assert got.SOPInstanceUID == reference.SOPInstanceUID
    finally:
        p.stop()


def test_move_transcodes_and_allow_transcoding_false_refuses(
        tmp_path: Path, scps: Any, jpegls: Path, orthanc: Any) -> None:  # noqa: F811
    """C-MOVE to a storescp that accepts explicit/implicit VR only (+xe): the sub-operation
    is decompressed (as Orthanc's); with the modality's AllowTranscoding false the C-MOVE
    fails with UnableToProcess, as Orthanc's."""
    ours, theirs = scps("+xe"), scps("+xe")
    p = _pipacs(tmp_path, ours)
    ds = pydicom.dcmread(jpegls, stop_before_pixels=True)
    try:
        _post(p.url, jpegls)
        out = _move(p.dicom_port, p.aet, ours.aet, ds)
        received = ours.received()
        assert len(received) == 1, out + p.log()
        got = received[0]
        assert got.file_meta.TransferSyntaxUID in (uid.ExplicitVRLittleEndian,
                                                   uid.ImplicitVRLittleEndian), out
        assert _same_pixels(got, jpegls)
        _post(orthanc.url, jpegls)
        _orthanc_modality(orthanc.url, theirs)
        _orthanc_modality(orthanc.url, None, "movescu", "MOVESCU")
        orthanc_port = json.loads(request(orthanc.url + "/system")[2])["DicomPort"]
        _move(orthanc_port, "ORTHANC", theirs.aet, ds)
        (reference,) = theirs.received()
        assert got.file_meta.TransferSyntaxUID == reference.file_meta.TransferSyntaxUID
        assert np.array_equal(got.pixel_array, reference.pixel_array)
    finally:
        p.stop()
    refusing = scps("+xe")
    folder = tmp_path / "pipacs"
    p = PipacsProcess(tmp_path / "pipacs", base_config(DicomModalities={"scp": {
        "AET": refusing.aet, "Host": "127.0.0.1", "Port": refusing.port,
        "AllowTranscoding": False}}))
    p.config["DicomPort"], p.config["HttpPort"] = free_port(), free_port()
    assert folder.exists()
    p.start()
    try:
        out = _move(p.dicom_port, p.aet, refusing.aet, ds)
        assert "Failed: UnableToProcess" in out, out
        assert refusing.received(timeout=1) == []
        assert "transcoding is off" in p.log()
    finally:
        p.stop()
    status, _, body = request(f"{orthanc.url}/modalities/scp", "PUT", json.dumps(
        {"AET": refusing.aet, "Host": "127.0.0.1", "Port": refusing.port,
         "AllowTranscoding": False}))
    assert status == 200, body
    orthanc_port = json.loads(request(orthanc.url + "/system")[2])["DicomPort"]
    out = _move(orthanc_port, "ORTHANC", refusing.aet, ds)
    assert "Failed: UnableToProcess" in out, out
    assert refusing.received(timeout=1) == []


def test_get_offering_explicit_vr_only(tmp_path: Path, jpegls: Path, orthanc: Any) -> None:  # noqa: F811
    """getscu offering explicit VR little endian only (+xe... -xf) for a JPEG-LS instance:
    it receives the instance decompressed, as from Orthanc."""
    folder = tmp_path / "pipacs"
    folder.mkdir()
    p = PipacsProcess(folder, base_config())
    p.start()
    ds = pydicom.dcmread(jpegls, stop_before_pixels=True)
    got: dict[str, list[pydicom.Dataset]] = {}
    try:
        _post(p.url, jpegls)
        _post(orthanc.url, jpegls)
        _orthanc_modality(orthanc.url, None, "getscu", "GETSCU")
        orthanc_port = json.loads(request(orthanc.url + "/system")[2])["DicomPort"]
        for name, aec, port in (("pipacs", p.aet, p.dicom_port),
                                ("orthanc", "ORTHANC", orthanc_port)):
            out = tmp_path / f"got-{name}"
            out.mkdir()
            dcmtk("getscu", "-S", "+xe", "-aec", aec, "-od", str(out), "-k",
                  "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                  "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}", "127.0.0.1", str(port),
                  check=False)
            got[name] = [pydicom.dcmread(f) for f in sorted(out.iterdir())]
    finally:
        p.stop()
    assert len(got["pipacs"]) == len(got["orthanc"]) == 1, got
    ours, theirs = got["pipacs"][0], got["orthanc"][0]
    assert not ours.file_meta.TransferSyntaxUID.is_compressed
    assert ours.file_meta.TransferSyntaxUID == theirs.file_meta.TransferSyntaxUID
    assert _same_pixels(ours, jpegls)
    assert np.array_equal(ours.pixel_array, theirs.pixel_array)


def test_preferred_syntax_compresses(tmp_path: Path, scps: Any, jpegls: Path) -> None:
    """DicomScuPreferredTransferSyntax RLE and a storescp preferring RLE (+xr): pipacs
    proposes it and sends the JPEG-LS instance as RLE, the same pixels."""
    scp = scps("+xr")
    p = _pipacs(tmp_path, scp, DicomScuPreferredTransferSyntax=str(uid.RLELossless))
    try:
        iid = _post(p.url, jpegls)
        status, _, body = request(f"{p.url}/modalities/scp/store", "POST", json.dumps([iid]))
        assert status == 200, body
        (got,) = scp.received()
        assert got.file_meta.TransferSyntaxUID == uid.RLELossless
        assert _same_pixels(got, jpegls)
    finally:
        p.stop()


@pytest.fixture(scope="module")
def servers(orthanc: Any, tmp_path_factory: pytest.TempPathFactory,  # noqa: F811
            jpegls: Path) -> Iterator[tuple[str, str, Path, Path]]:
    """pipacs and Orthanc holding the same explicit VR and JPEG-LS instances."""
    folder = tmp_path_factory.mktemp("pipacs-transcode")
    explicit = _make(folder, "explicit", "mono16", ("dcmconv", "+te"))
    p = PipacsProcess(folder, base_config())
    p.start()
    for path in (explicit, jpegls):
        for url in (p.url, orthanc.url):
            _post(url, path)
    yield p.url, orthanc.url, explicit, jpegls
    p.stop()


def _answer_syntax(body: bytes) -> tuple[str, np.ndarray]:
    ds = pydicom.dcmread(io.BytesIO(body))
    return str(ds.file_meta.TransferSyntaxUID), ds.pixel_array


# What Debian's Orthanc 1.10.1 (DCMTK, no GDCM plugin) cannot write ("Cannot transcode to
# transfer syntax"), and pipacs can.
ORTHANC_CANNOT_WRITE = {str(uid.JPEG2000Lossless), str(uid.RLELossless)}


@pytest.mark.parametrize("target", [uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian,
                                    uid.RLELossless, uid.JPEGLSLossless, uid.JPEG2000Lossless])
def test_modify_transcode(servers: tuple[str, str, Path, Path], target: str) -> None:
    """POST /instances/{id}/modify {"Transcode": ...}: the answer is in that syntax with the
    same pixels, as Orthanc's, for an uncompressed and a JPEG-LS instance."""
    ours, theirs, *paths = servers
    for path in paths:
        iid = _post(ours, path)
        body = json.dumps({"Transcode": str(target)})
        p_status, _, p_body = request(f"{ours}/instances/{iid}/modify", "POST", body)
        o_status, _, o_body = request(f"{theirs}/instances/{iid}/modify", "POST", body)
        assert p_status == 200, p_body
        syntax, pixels = _answer_syntax(p_body)
        assert syntax == target
        assert np.array_equal(pixels, pydicom.dcmread(path).pixel_array)
        if str(target) in ORTHANC_CANNOT_WRITE:
            assert o_status != 200
            continue
        assert o_status == 200, o_body
        o_syntax, o_pixels = _answer_syntax(o_body)
        assert (o_syntax, o_pixels.tolist()) == (syntax, pixels.tolist())


def test_modify_transcode_refuses_what_it_cannot_write(
        servers: tuple[str, str, Path, Path]) -> None:
    ours, _, explicit, _ = servers
    iid = _post(ours, explicit)
    for bad in ("1.2.3", "1.2.840.10008.1.2.4.100", 12):
        status, _, body = request(f"{ours}/instances/{iid}/modify", "POST",
                                  json.dumps({"Transcode": bad}))
        assert status == 400, body


def test_study_modify_and_archive_transcode(servers: tuple[str, str, Path, Path]) -> None:
    """/studies/{id}/modify with "Transcode" stores RLE instances; /studies/{id}/archive
    ?transcode= answers every file in that syntax (JPEG-LS, as Orthanc)."""
    ours, theirs, explicit, _ = servers
    study = json.loads(request(f"{ours}/instances/{_post(ours, explicit)}/study")[2])["ID"]
    status, _, body = request(f"{ours}/studies/{study}/modify", "POST", json.dumps(
        {"Transcode": str(uid.RLELossless), "Replace": {"StudyDescription": "rle"}}))
    assert status == 200, body
    new_study = json.loads(body)["ID"]
    for instance in json.loads(request(f"{ours}/studies/{new_study}/instances")[2]):
        raw = request(f"{ours}/instances/{instance['ID']}/file")[2]
        assert _answer_syntax(raw)[0] == uid.RLELossless
    answers = {}
    for url in (ours, theirs):
        status, _, body = request(f"{url}/studies/{study}/archive?transcode={uid.JPEGLSLossless}")
        assert status == 200, body
        with zipfile.ZipFile(io.BytesIO(body)) as z:
            answers[url] = sorted((_answer_syntax(z.read(n))[0], _answer_syntax(z.read(n))[1]
                                   .tobytes()) for n in z.namelist() if n.endswith(".dcm"))
    assert answers[ours] and answers[ours] == answers[theirs]
    assert all(syntax == uid.JPEGLSLossless for syntax, _ in answers[ours])
    assert request(f"{ours}/studies/{study}/archive?transcode=1.2.3")[0] == 400


def _orthanc_with(folder: Path, **config: Any) -> tuple[subprocess.Popen[bytes], str, int]:
    """Debian's Orthanc with some settings of ours: (process, URL, DICOM port)."""
    http, dicom = free_port(), free_port()
    (folder / "o.json").write_text(json.dumps({
        "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": http, "DicomPort": dicom, "Plugins": [], "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, **config}))
    proc = subprocess.Popen(["/usr/sbin/Orthanc", str(folder / "o.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, deadline = f"http://127.0.0.1:{http}", time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if request(url + "/system")[0] == 200:
                return proc, url, dicom
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("Orthanc did not start")


def test_ingest_transcoding(tmp_path: Path, jpegls: Path) -> None:
    """IngestTranscoding JPEG-LS: an explicit VR instance, received over REST and over
    DICOM, is stored as JPEG-LS with the same pixels (and the same ID), as by Orthanc. A
    JPEG-LS instance with IngestTranscoding explicit VR is stored decompressed."""
    explicit = _make(tmp_path, "explicit", "mono16", ("dcmconv", "+te"))
    other = _make(tmp_path, "other", "mono16", ("dcmconv", "+te"))
    settings = {"IngestTranscoding": str(uid.JPEGLSLossless)}
    proc, orthanc_url, orthanc_dicom = _orthanc_with(tmp_path, **settings)
    folder = tmp_path / "pipacs"
    folder.mkdir()
    p = PipacsProcess(folder, base_config(**settings))
    p.start()
    try:
        for url in (p.url, orthanc_url):
            iid = _post(url, explicit)
            syntax, pixels = _answer_syntax(request(f"{url}/instances/{iid}/file")[2])
            assert (syntax, url) == (uid.JPEGLSLossless, url)
            assert np.array_equal(pixels, pydicom.dcmread(explicit).pixel_array)
        p.store(other)
        dcmtk("storescu", "-aec", "ORTHANC", "127.0.0.1", str(orthanc_dicom), str(other))
        for url in (p.url, orthanc_url):
            iid = json.loads(request(f"{url}/tools/lookup", "POST",
                                     str(pydicom.dcmread(other).SOPInstanceUID))[2])[0]["ID"]
            syntax = _answer_syntax(request(f"{url}/instances/{iid}/file")[2])[0]
            assert (syntax, url) == (uid.JPEGLSLossless, url)
    finally:
        p.stop()
        proc.terminate()
        proc.wait(10)
    back = tmp_path / "back"
    back.mkdir()
    p = PipacsProcess(back, base_config(IngestTranscoding=str(uid.ExplicitVRLittleEndian)))
    p.start()
    try:
        iid = _post(p.url, jpegls)
        syntax, pixels = _answer_syntax(request(f"{p.url}/instances/{iid}/file")[2])
        assert syntax == uid.ExplicitVRLittleEndian
        assert np.array_equal(pixels, pydicom.dcmread(jpegls).pixel_array)
    finally:
        p.stop()


def test_ingest_transcoding_of_uncompressed_false(tmp_path: Path, jpegls: Path) -> None:
    """IngestTranscodingOfUncompressed false: an explicit VR instance is stored as received,
    a JPEG-LS one is still transcoded (to RLE here)."""
    explicit = _make(tmp_path, "explicit", "mono16", ("dcmconv", "+te"))
    folder = tmp_path / "pipacs"
    folder.mkdir()
    p = PipacsProcess(folder, base_config(IngestTranscoding=str(uid.RLELossless),
                                          IngestTranscodingOfUncompressed=False))
    p.start()
    try:
        for path, want in ((explicit, uid.ExplicitVRLittleEndian), (jpegls, uid.RLELossless)):
            iid = _post(p.url, path)
            assert _answer_syntax(request(f"{p.url}/instances/{iid}/file")[2])[0] == want
    finally:
        p.stop()


def _parts(headers: Any, body: bytes) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart answer."""
    boundary = headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"').encode()
    out = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        ctype = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-type"))
        out.append((ctype, data[:-2]))
    return out


def test_wado_rs_transfer_syntax(tmp_path: Path, jpegls: Path) -> None:
    """WADO-RS with Accept: ...; transfer-syntax=1.2.840.10008.1.2.1 for a JPEG-LS instance:
    explicit VR with the same pixels, as from Orthanc's DICOMweb plugin; transfer-syntax=*
    and the stored syntax: the stored file."""
    plugin = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
    proc, orthanc_url, _ = _orthanc_with(tmp_path, Plugins=[plugin], DicomWeb={"Enable": True})
    folder = tmp_path / "pipacs"
    folder.mkdir()
    p = PipacsProcess(folder, base_config(DicomWeb={"Enable": True}))
    p.start()
    ds = pydicom.dcmread(jpegls)
    path = (f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")
    answers = {}
    try:
        for url in (p.url, orthanc_url):
            _post(url, jpegls)
            for syntax in (uid.ExplicitVRLittleEndian, "*", uid.JPEGLSLossless):
                status, headers, body = request(url + path, headers={
                    "Accept": f'multipart/related; type="application/dicom"; '
                              f'transfer-syntax={syntax}'})
                assert status == 200, (url, syntax, body)
                ((ctype, data),) = _parts(headers, body)
                got = pydicom.dcmread(io.BytesIO(data))
                answers[url, str(syntax)] = (str(got.file_meta.TransferSyntaxUID),
                                             got.pixel_array.tobytes())
                if url == p.url:  # Orthanc's parts say application/dicom only
                    assert ctype.endswith(f"transfer-syntax={got.file_meta.TransferSyntaxUID}")
        stored = request(f"{p.url}/instances/{_post(p.url, jpegls)}/file")[2]
    finally:
        p.stop()
        proc.terminate()
        proc.wait(10)
    for syntax in (uid.ExplicitVRLittleEndian, "*", uid.JPEGLSLossless):
        assert answers[p.url, str(syntax)] == answers[orthanc_url, str(syntax)], syntax
    assert answers[p.url, str(uid.ExplicitVRLittleEndian)][0] == uid.ExplicitVRLittleEndian
    assert answers[p.url, "*"][0] == uid.JPEGLSLossless
    assert answers[p.url, "*"][1] == pydicom.dcmread(io.BytesIO(stored)).pixel_array.tobytes()


def test_modify_transcode_to_jpeg_baseline(servers: tuple[str, str, Path, Path],
                                           tmp_path: Path) -> None:
    """Lossy: an 8-bit image to JPEG baseline through /modify, on both servers: the same
    syntax and the same rule for the SOPInstanceUID."""
    ours, theirs, _, _ = servers
    path = _make(tmp_path, "mono8", "mono8", ("dcmconv", "+te"))
    source = pydicom.dcmread(path)
    answers = {}
    for url in (ours, theirs):
        iid = _post(url, path)
        status, _, body = request(f"{url}/instances/{iid}/modify", "POST",
                                  json.dumps({"Transcode": str(uid.JPEGBaseline8Bit)}))
        assert status == 200, (url, body)
        answers[url] = pydicom.dcmread(io.BytesIO(body))
    for url, got in answers.items():
        assert got.file_meta.TransferSyntaxUID == uid.JPEGBaseline8Bit, url
    # pipacs' pixels stay within a few levels (Orthanc's DCMTK encoder shifts this image's
    # grey levels by ~14 on average: not compared)
    diff = np.abs(answers[ours].pixel_array.astype(int) - source.pixel_array.astype(int))
    assert diff.mean() < 2 and diff.max() < 8, (diff.mean(), diff.max())
    changed = {url: got.SOPInstanceUID != source.SOPInstanceUID for url, got in answers.items()}
    assert changed[ours] == changed[theirs], changed


def test_peer_store_transcode(tmp_path: Path, jpegls: Path) -> None:
    """POST /peers/{id}/store {"Transcode": implicit VR}: the peer receives the JPEG-LS
    instance decompressed, from pipacs as from Orthanc."""
    receivers = []
    for name in ("from-pipacs", "from-orthanc"):
        (tmp_path / name).mkdir()
        receivers.append(PipacsProcess(tmp_path / name, base_config()))
        receivers[-1].start()
    folder = tmp_path / "sender"
    folder.mkdir()
    p = PipacsProcess(folder, base_config(OrthancPeers={"peer": [receivers[0].url]}))
    p.start()
    proc, orthanc_url, _ = _orthanc_with(tmp_path, OrthancPeers={"peer": [receivers[1].url]})
    body = {"Transcode": str(uid.ImplicitVRLittleEndian), "Synchronous": True}
    try:
        for url, receiver in ((p.url, receivers[0]), (orthanc_url, receivers[1])):
            iid = _post(url, jpegls)
            status, _, answer = request(f"{url}/peers/peer/store", "POST",
                                        json.dumps({**body, "Resources": [iid]}))
            assert status == 200, answer
            syntax, pixels = _answer_syntax(request(f"{receiver.url}/instances/{iid}/file")[2])
            assert syntax == uid.ImplicitVRLittleEndian, url
            assert np.array_equal(pixels, pydicom.dcmread(jpegls).pixel_array)
        status, _, _ = request(f"{p.url}/peers/peer/store", "POST",
                               json.dumps({**body, "Resources": [iid], "Transcode": "1.2.3"}))
        assert status == 400
    finally:
        for server in (p, *receivers):
            server.stop()
        proc.terminate()
        proc.wait(10)
