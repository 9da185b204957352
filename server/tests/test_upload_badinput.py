"""Malformed uploads over POST /instances, ZIP archives and STOW-RS: a clear 4xx each, the
server stays up, its memory stays bounded, and nothing already stored changes."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PipacsProcess, base_config
from pipacs.dicomfile import part10_header

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG_ENDIAN = "1.2.840.10008.1.2.2"


# ---------------------------------------------------------------- a server for the module


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, small_data: list[Path]
           ) -> Iterator[PipacsProcess]:
    """One pipacs with DICOMweb, holding one good instance stored before any bad input."""
    folder = tmp_path_factory.mktemp("badinput")
    p = PipacsProcess(folder, base_config(DicomWeb={"Enable": True}))
    p.start()
    status, body = post(p, "/instances", small_data[0].read_bytes())
    assert status == 200, body
    p.good_id = body["ID"]  # type: ignore[attr-defined]
    yield p
    p.stop()


@pytest.fixture(autouse=True)
def nothing_lost(server: PipacsProcess, small_data: list[Path]) -> Iterator[None]:
    """After every test: still up, no traceback, the good instance there and identical."""
    count = server.get("/statistics")["CountInstances"]
    yield
    assert server.proc is not None and server.proc.poll() is None, server.log()
    assert server.get(f"/instances/{server.good_id}/file") == small_data[0].read_bytes()  # type: ignore[attr-defined]
    assert server.get("/statistics")["CountInstances"] == count
    assert "Traceback" not in server.log(), server.log()


def post(p: PipacsProcess, path: str, body: bytes, headers: dict[str, str] | None = None
         ) -> tuple[int, Any]:
    status, _, raw = p.request("POST", path, body, headers, timeout=60)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def assert_refused(status: int, body: Any, code: int = 400, words: str = "") -> None:
    """A 4xx with Orthanc's JSON error body (HttpDescribeErrors) that says what is wrong."""
    assert status == code, (status, body)
    assert isinstance(body, dict), body
    assert body["HttpStatus"] == code and body["Message"], body
    assert {"Method", "Uri", "OrthancError", "OrthancStatus"} <= set(body), body
    if words:
        assert words.lower() in (body.get("Details", "") + body["Message"]).lower(), body


def rss_kb(p: PipacsProcess, field: str = "VmRSS") -> int:
    assert p.proc is not None
    for line in Path(f"/proc/{p.proc.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{p.proc.pid}/status")


# ---------------------------------------------------------------- hand-made DICOM


def element(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """One explicit VR little endian element; `length` overrides the declared length."""
    n = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, n) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, n) + value


def uid(text: str) -> bytes:
    raw = text.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def tiny(n: int = 1, tail: bytes = b"", ts: str = EXPLICIT_LE) -> bytes:
    """A small valid instance (well under 1 KB) with `tail` appended to its dataset."""
    sop = f"2.25.4242{n}"
    data = b"".join((
        element(0x00080016, b"UI", uid(CT)),
        element(0x00080018, b"UI", uid(sop)),
        element(0x00080060, b"CS", b"CT"),
        element(0x00100010, b"PN", b"BAD^INPUT "),
        element(0x00100020, b"LO", b"BADINPUT"),
        element(0x0020000D, b"UI", uid("2.25.777")),
        element(0x0020000E, b"UI", uid("2.25.778")),
    ))
    return part10_header(CT, sop, ts) + data + tail


def bad_dicom(good: bytes) -> dict[str, bytes]:
    """Malformed DICOM streams, by name: each must be refused with a 400."""
    huge_tail = element(0x7FE00010, b"OB", b"\0" * 64, length=0xFFFFFFF0)  # 4 GB in 1 KB
    return {
        "empty": b"",
        "seven bytes": b"DICM\0\0\0",
        "preamble only": good[:132],
        "cut in the file meta": good[:150],
        "cut in the dataset": good[:900],
        "cut in the pixel data": good[:-1000],
        "not DICOM": b"hello, this is not a DICOM file\n" * 40,
        "JSON": json.dumps({"PatientID": "x"}).encode(),
        "4 GB element in 1 KB": tiny(2, huge_tail),
        "4 GB element before the UIDs": part10_header(CT, "2.25.1", EXPLICIT_LE)
        + element(0x00080005, b"UT", b"x" * 32, length=0xFFFFFFF0),
        "undefined length OB, no delimiter": tiny(3, element(0x7FE00010, b"OB", b"\1" * 40,
                                                             length=0xFFFFFFFF)),
        "element longer than the file": tiny(4, struct.pack("<HH2sH", 0x0040, 0x0010, b"LO",
                                                            0x7FFF) + b"x" * 10),
        "element length too short": tiny(11).replace(b"PN\x0a\x00BAD", b"PN\x02\x00BAD"),
        "unknown transfer syntax": tiny(5, ts="1.2.3.4.5.6"),
        "garbage transfer syntax": tiny(6, ts="not a UID at all!!"),
        "long transfer syntax": tiny(7, ts="1." * 60 + "1"),
        "deflated that is not": tiny(8, ts=DEFLATED),
        "big endian that is not": tiny(9, ts=BIG_ENDIAN),
        "huge meta group length": good[:132] + struct.pack("<HH2sHI", 2, 0, b"UL", 4, 0xFFFFFFF0)
        + good[144:400],
    }


def deflate_bomb() -> bytes:
    """A deflated dataset (under 1 MB) that expands to 512 MB."""
    header = part10_header(CT, "2.25.31337", DEFLATED)
    body = tiny(10)[len(part10_header(CT, "2.25.424210", EXPLICIT_LE)):]
    pixels = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 512 << 20)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunks = [comp.compress(body + pixels)]
    zeros = bytes(1 << 20)
    for _ in range(512):
        chunks.append(comp.compress(zeros))
    chunks.append(comp.flush())
    return header + b"".join(chunks)


# ---------------------------------------------------------------- POST /instances


def test_malformed_dicom_is_refused(server: PipacsProcess, small_data: list[Path]) -> None:
    for name, data in bad_dicom(small_data[1].read_bytes()).items():
        status, body = post(server, "/instances", data)
        assert status == 400, (name, body)
        assert_refused(status, body, 400, "")
        assert body["Message"] == "Bad file format" and body.get("Details"), (name, body)


def test_deflate_bomb_is_refused_without_inflating_it(server: PipacsProcess) -> None:
    before = rss_kb(server)
    status, body = post(server, "/instances", deflate_bomb())
    assert_refused(status, body, 400, "expand")
    assert rss_kb(server, "VmHWM") - before < 200 * 1024


# ---------------------------------------------------------------- ZIP archives


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def zip_bomb(size_mb: int = 1024) -> bytes:
    """One member declared and really expanding to `size_mb` MB of zeros (about 1 MB)."""
    buf = io.BytesIO()
    info = zipfile.ZipInfo("bomb.dcm")
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buf, "w") as z, z.open(info, "w", force_zip64=True) as f:
        zeros = bytes(1 << 20)
        for _ in range(size_mb):
            f.write(zeros)
    return buf.getvalue()


def test_bad_zip_archives(server: PipacsProcess, small_data: list[Path], tmp_path: Path) -> None:
    good = small_data[2].read_bytes()
    bad = bad_dicom(small_data[1].read_bytes())
    archive = zipped({"a.dcm": good})
    cd = archive.rindex(b"PK\x01\x02")  # the central directory
    cases = {
        "truncated": archive[: len(archive) // 2],
        "corrupt central directory": archive[:cd] + b"PK\x01\x02" + b"\xff" * 40
        + archive[cd + 44:],
        "cut before the end record": archive[:-10],
        "only malformed members": zipped(bad),
        "nested ZIP": zipped({"inner.zip": zipped({"a.dcm": good})}),
        "bomb": zip_bomb(),
        "empty": zipped({}),
        "lying size (bad CRC)": _lying_zip(good),
        "unsupported compression": _patched_method(zipped({"a.dcm": b"x" * 500}), 99),
        "encrypted flag": _encrypted(zipped({"a.dcm": good})),
        "a member without a name": _nameless(zipped({"a": b"not DICOM" * 20})),
    }
    before = rss_kb(server)
    for name, data in cases.items():
        if not data.startswith(b"PK\x03\x04"):
            data = b"PK\x03\x04" + data[4:]
        status, body = post(server, "/instances", data)
        assert_refused(status, body, 400)
        assert body["Message"] == "Bad file format", (name, body)
    assert rss_kb(server, "VmHWM") - before < 300 * 1024
    assert not list(server.storage.glob("**/*.dcm"))

    # Path tricks in member names are only names: the member is stored like any other,
    # nothing is written where the name points.
    evil = tmp_path / "evil.dcm"
    status, body = post(server, "/instances", zipped({
        f"../../../../../../{evil}": good, str(evil): good, "/etc/x/../../y.dcm": good,
        "ok.dcm": small_data[3].read_bytes()}))
    assert status == 200 and len(body) == 4, body
    assert not evil.exists()
    for pid in {item["ID"] for item in body}:
        assert server.request("DELETE", f"/instances/{pid}")[0] == 200


def _lying_zip(good: bytes) -> bytes:
    """A member whose declared size and CRC do not match what it inflates to."""
    data = bytearray(zipped({"a.dcm": good}))
    data[14:18] = b"\0\0\0\0"  # CRC-32 in the local header
    cd = data.rindex(b"PK\x01\x02")
    data[cd + 16: cd + 20] = b"\0\0\0\0"  # and in the central directory
    return bytes(data)


def _patched_method(archive: bytes, method: int) -> bytes:
    data = bytearray(archive)
    data[8:10] = struct.pack("<H", method)
    cd = data.rindex(b"PK\x01\x02")
    data[cd + 10: cd + 12] = struct.pack("<H", method)
    return bytes(data)


def _nameless(archive: bytes) -> bytes:
    """The one-letter member name turned into one byte of extra field: an empty name (found
    by fuzzing: zipfile's is_dir() raised IndexError)."""
    data = bytearray(archive)
    cd = data.rindex(b"PK\x01\x02")
    for at in (26, cd + 28):  # name length, then extra field length
        data[at: at + 4] = struct.pack("<HH", 0, 1)
    return bytes(data)


def _encrypted(archive: bytes) -> bytes:
    data = bytearray(archive)
    data[6] |= 1
    cd = data.rindex(b"PK\x01\x02")
    data[cd + 8] |= 1
    return bytes(data)


def test_zip_with_some_bad_members_stores_the_good_ones(server: PipacsProcess,
                                                       small_data: list[Path]) -> None:
    bad = bad_dicom(small_data[1].read_bytes())
    status, body = post(server, "/instances", zipped({
        "good.dcm": small_data[4].read_bytes(), "cut.dcm": bad["cut in the dataset"],
        "huge.dcm": bad["4 GB element in 1 KB"], "inner.zip": zipped({"x": b"y"})}))
    assert status == 200 and [b["Status"] for b in body] == ["Success"], body
    assert server.request("DELETE", f"/instances/{body[0]['ID']}")[0] == 200


# ---------------------------------------------------------------- STOW-RS


def multipart(parts: list[bytes], boundary: str = "BaDbOuNdArY", ctype: bool = True
              ) -> tuple[bytes, str]:
    head = b"\r\nContent-Type: application/dicom\r\n\r\n" if ctype else b"\r\n\r\n"
    body = b"".join(b"--" + boundary.encode() + head + p + b"\r\n" for p in parts)
    return body + b"--" + boundary.encode() + b"--\r\n", \
        f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(p: PipacsProcess, body: bytes, ctype: str | None) -> tuple[int, Any]:
    return post(p, "/dicom-web/studies", body, {"Content-Type": ctype} if ctype else {})


def test_bad_stow_bodies(server: PipacsProcess, small_data: list[Path]) -> None:
    good = small_data[5].read_bytes()
    body, ctype = multipart([good])
    long_boundary = "b" * 300
    cases: list[tuple[str, bytes, str | None, int]] = [
        ("no closing boundary", body[:-19], ctype, 400),
        ("cut in a part", body[: len(body) // 2], ctype, 400),
        ("boundary of another message", body, ctype.replace("BaDbOuNdArY", "other"), 400),
        ("no boundary parameter", body, 'multipart/related; type="application/dicom"', 400),
        ("empty boundary", body, 'multipart/related; type="application/dicom"; boundary=',
         400),
        ("boundary too long", multipart([good], long_boundary)[0],
         multipart([good], long_boundary)[1], 400),
        ("no CRLF after a boundary", body.replace(b"BaDbOuNdArY\r\n", b"BaDbOuNdArYxx", 1),
         ctype, 400),
        ("headers never end", b"--BaDbOuNdArY\r\nContent-Type: application/dicom\r\n"
         + good[:300], ctype, 400),
        ("a header without a colon", body.replace(b"Content-Type: application/dicom",
                                                  b"Content-Type application/dicom", 1),
         ctype, 400),
        ("no part", b"--BaDbOuNdArY--\r\n", ctype, 400),
        ("empty body", b"", ctype, 400),
        ("no Content-Type", body, None, 415),
        ("not multipart", good, "application/dicom", 415),
        ("other part type", body, ctype.replace("application/dicom", "application/json"),
         415),
        ("garbage Content-Type", body, ";;;==\"", 415),
    ]
    for name, data, header, code in cases:
        status, answer = stow(server, data, header)
        assert status == code, (name, status, answer)
        assert_refused(status, answer, code)
    # Well-formed messages whose parts are malformed DICOM: 409 with a failure per part.
    bad = bad_dicom(small_data[1].read_bytes())
    data, header = multipart(list(bad.values()))
    status, answer = stow(server, data, header)
    assert status == 409, answer
    failed = answer["00081198"]["Value"]
    assert len(failed) == len(bad)
    assert {f["00081197"]["Value"][0] for f in failed} == {0xC000}
    # A part of another type, and a part without a Content-Type holding garbage.
    data, header = multipart([b"plain text"], ctype=True)
    data = data.replace(b"application/dicom", b"text/plain")
    assert stow(server, data, header)[0] == 409
    data, header = multipart([b"garbage " * 30], ctype=False)
    assert stow(server, data, header)[0] == 409


# ---------------------------------------------------------------- memory over a batch


def test_memory_stays_bounded(server: PipacsProcess, small_data: list[Path]) -> None:
    """Hostile uploads, many times over: the resident memory does not keep growing."""
    bad = list(bad_dicom(small_data[1].read_bytes()).values())
    zips = [zipped({f"{i}.dcm": b for i, b in enumerate(bad)}), zip_bomb(256)]
    stows = [multipart(bad), (b"--x\r\n" + b"A" * 100_000, "multipart/related; boundary=x")]

    def batch() -> None:
        for data in bad:
            assert post(server, "/instances", data)[0] == 400
        for data in zips:
            assert post(server, "/instances", data)[0] == 400
        for data, header in stows:
            assert stow(server, data, header)[0] in (400, 409)

    batch()  # warm up: caches, imports, the allocator's arenas
    before = rss_kb(server)
    for _ in range(5):
        batch()
    after = rss_kb(server)
    assert after - before < 64 * 1024, f"RSS grew from {before} KB to {after} KB"
    assert rss_kb(server, "VmHWM") < before + 400 * 1024


# ---------------------------------------------------------------- C-STORE


def test_malformed_datasets_over_c_store(server: PipacsProcess, small_data: list[Path]) -> None:
    """The same malformed datasets, their bytes sent as they are (pipacs' own raw sender):
    0xC000 "cannot understand" each, on one association that stays usable for a good
    instance afterwards."""
    from pynetdicom import AE

    from pipacs import fastpaths
    from pipacs.dicom.rawsend import RawDataset

    # in this test process: send RawDataset bytes without re-encoding them
    assert "rawsend" in fastpaths.install().installed
    bad = bad_dicom(small_data[1].read_bytes())
    names = ["cut in the dataset", "cut in the pixel data", "4 GB element in 1 KB",
             "undefined length OB, no delimiter", "element longer than the file",
             "element length too short"]
    ae = AE(ae_title="BADSCU")
    ae.add_requested_context(CT, [EXPLICIT_LE])
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
    assert assoc.is_established
    try:
        for name in names:
            raw = bad[name]
            status = assoc.send_c_store(RawDataset(raw, CT, f"2.25.{len(name)}", EXPLICIT_LE))
            assert status and status.Status == 0xC000, (name, status)
        good = RawDataset(tiny(12), CT, "2.25.424212", EXPLICIT_LE)
        assert assoc.send_c_store(good).Status == 0
    finally:
        assoc.release()
    status, found = post(server, "/tools/lookup", b"2.25.424212")
    assert status == 200 and len(found) == 1, found
    assert server.request("DELETE", f"/instances/{found[0]['ID']}")[0] == 200
