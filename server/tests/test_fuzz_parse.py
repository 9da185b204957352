"""Fuzzing the parsing entry points: the parser itself (a result or a DicomParseError, nothing
else), and the HTTP uploads (POST /instances, ZIP members, STOW-RS): a 2xx or a 4xx, never a 500."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PipacsProcess, base_config
from pipacs.dicomfile import DicomParseError, meta_summary, parse, split_meta
from pipacs.plugins.dicomweb_multipart import MultipartError, split_parts

SEED_FILES: list[bytes] = []


@pytest.fixture(scope="module", autouse=True)
def seeds(small_data: list[Path]) -> None:
    SEED_FILES[:] = [small_data[0].read_bytes(), small_data[-1].read_bytes()]


def check(raw: bytes) -> None:
    try:
        parse(raw)
    except DicomParseError as e:
        assert str(e)  # a message naming the problem


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_files(data: st.DataObject) -> None:
    raw = bytearray(SEED_FILES[data.draw(st.integers(0, 1))])
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        if kind == "flip":
            raw[pos] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del raw[pos:]
            if not raw:
                break
        elif kind == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        else:  # a huge declared length somewhere
            raw[pos : pos + 4] = b"\xff\xff\xff\x7f"
    check(bytes(raw))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes(raw: bytes) -> None:
    check(raw)
    check(b"\0" * 128 + b"DICM" + raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_quick_meta_reader_agrees_with_pydicom(data: st.DataObject) -> None:
    """The hand-made file meta reader of the store path: on a mutated file meta it either
    steps aside (None: pydicom decides) or reads what pydicom reads."""
    raw = bytearray(SEED_FILES[data.draw(st.integers(0, 1))])
    for _ in range(data.draw(st.integers(0, 4))):
        pos = data.draw(st.integers(128, 340))
        raw[pos] = data.draw(st.integers(0, 255))
    quick = meta_summary(bytes(raw))
    if quick is None:
        return
    try:
        meta, offset = split_meta(bytes(raw))
    except DicomParseError:
        return  # pydicom gives up where the quick reader did not: parse raises anyway below
    assert meta is not None
    assert quick[2] == offset
    # A mangled UID is refused either way (unknown transfer syntax); valid ones must agree.
    for value, keyword in ((quick[0], "TransferSyntaxUID"), (quick[1], "MediaStorageSOPClassUID")):
        theirs = str(meta.get(keyword, "") or "").strip("\x00 ")
        if theirs and pydicom.uid.UID(theirs).is_valid:
            assert value == theirs


@pytest.mark.parametrize("cut", [0, 1, 131, 132, 140, 200, 400, 1000])
def test_truncated_files(cut: int) -> None:
    check(SEED_FILES[0][:cut])


def test_regression_bad_vr_in_file_meta() -> None:
    """Found by fuzzing: pydicom raised NotImplementedError lazily on a bad meta VR."""
    raw = bytearray(SEED_FILES[0])
    at = raw.index(b"\x02\x00\x10\x00UI")  # (0002,0010) Transfer Syntax UID
    raw[at + 4 : at + 6] = b"\x55\x00"
    with pytest.raises(DicomParseError, match="file meta"):
        parse(bytes(raw))


def test_regression_boundary_beyond_latin1() -> None:
    """Found by fuzzing: a boundary that is not Latin-1 raised UnicodeEncodeError."""
    with pytest.raises(MultipartError, match="Latin-1"):
        split_parts(b"--x\r\n\r\n\r\n--x--", "\u0100")


def test_regression_null_in_character_set() -> None:
    """Found by fuzzing: a NUL inside SpecificCharacterSet made the decoder raise ValueError."""
    raw = bytearray(SEED_FILES[0])
    at = raw.index(b"ISO_IR 100")
    raw[at + 1] = 0
    parsed = parse(bytes(raw))  # read as Latin-1, with a warning
    assert parsed.tags[0]["PatientID"]


# ---------------------------------------------------------------- the HTTP upload entry points

FUZZ_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipacsProcess]:
    p = PipacsProcess(tmp_path_factory.mktemp("fuzzhttp"), base_config(DicomWeb={"Enable": True}))
    p.start()
    yield p
    assert "Traceback" not in p.log(), p.log()
    p.stop()


def mutate(data: st.DataObject, raw: bytes, rounds: int = 6) -> bytes:
    out = bytearray(raw)
    for _ in range(data.draw(st.integers(1, rounds))):
        if not out:
            break
        pos = data.draw(st.integers(0, len(out) - 1))
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "length", "delete"]))
        if kind == "flip":
            out[pos] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del out[pos:]
        elif kind == "insert":
            out[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del out[pos : pos + data.draw(st.integers(1, 64))]
        else:
            out[pos : pos + 4] = data.draw(st.sampled_from(
                [b"\xff\xff\xff\xff", b"\xf0\xff\xff\xff", b"\xff\xff\xff\x7f", b"\0\0\0\0"]))
    return bytes(out)


def post(p: PipacsProcess, path: str, body: bytes, headers: dict[str, str] | None = None
         ) -> tuple[int, bytes]:
    status, _, data = p.request("POST", path, body, headers, timeout=60)
    return status, data


def check_answer(status: int, body: bytes, allowed: set[int]) -> None:
    assert status in allowed, (status, body[:500])
    if status >= 400 and status != 409:  # Orthanc's JSON error body (STOW's 409: DICOM JSON)
        answer = json.loads(body)
        assert answer["HttpStatus"] == status and answer["Message"], answer


@FUZZ_SETTINGS
@given(data=st.data())
def test_http_post_instances(server: PipacsProcess, data: st.DataObject) -> None:
    raw = mutate(data, SEED_FILES[data.draw(st.integers(0, 1))])
    status, body = post(server, "/instances", raw)
    check_answer(status, body, {200, 400})


@FUZZ_SETTINGS
@given(data=st.data())
def test_http_zip_members(server: PipacsProcess, data: st.DataObject) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n in range(data.draw(st.integers(1, 3))):
            z.writestr(f"{n}.dcm", mutate(data, SEED_FILES[n % 2]))
    archive = buf.getvalue()
    if data.draw(st.booleans()):  # damage the archive itself too
        archive = archive[:4] + mutate(data, archive[4:], rounds=3)
    status, body = post(server, "/instances", archive)
    check_answer(status, body, {200, 400})


@FUZZ_SETTINGS
@given(data=st.data())
def test_http_stow_multipart(server: PipacsProcess, data: st.DataObject) -> None:
    boundary = data.draw(st.sampled_from(["fuzzBoundary", "x", "a" * 70]))
    parts = [mutate(data, SEED_FILES[n % 2]) for n in range(data.draw(st.integers(1, 2)))]
    message = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                       + p + b"\r\n" for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    if data.draw(st.booleans()):  # damage the multipart framing as well
        message = mutate(data, message, rounds=3)
    header = f'multipart/related; type="application/dicom"; boundary={boundary}'
    if data.draw(st.integers(0, 4)) == 0:
        header = data.draw(st.sampled_from([
            "multipart/related", "multipart/related; boundary=", 'multipart/related; type="',
            "application/dicom", f"multipart/related; boundary={boundary}; type=text/plain"]))
    status, body = post(server, "/dicom-web/studies", message, {"Content-Type": header})
    check_answer(status, body, {200, 202, 400, 409, 415})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.text(max_size=20))
def test_multipart_splitter(body: bytes, boundary: str) -> None:
    """The STOW-RS body splitter: parts, or MultipartError, nothing else."""
    try:
        parts = split_parts(body, boundary)
    except MultipartError as e:
        assert str(e)
        return
    for part in parts:
        assert 0 <= part.start <= part.end <= len(body)
