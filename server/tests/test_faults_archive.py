"""ZIP archives and DICOMDIR media when a stored file is missing, unreadable or damaged, or
when the temporary space the archive needs is full: a clear error before the first byte
where possible; once streaming has started, a cut transfer, never a valid-looking ZIP that
lacks files. One log line names the instance.

Real pipacs processes over HTTP; the temporary space is a real small tmpfs (TMPDIR), filled
with a ballast file as in test_diskfull.py.
"""

from __future__ import annotations

import http.client
import io
import json
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest

from conftest import PipacsProcess, wait_until
from pipacs.ids import resource_ids
from test_diskfull import small_disk, store_status  # noqa: F401 (a fixture)


def fetch(p: PipacsProcess, method: str, path: str, body: Any = None
          ) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers, body, complete): complete is False when the transfer was cut."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(p.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            try:
                return r.status, dict(r.headers), r.read(), True
            except http.client.IncompleteRead as e:
                return r.status, dict(r.headers), e.partial, False
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read(), True


def settled(p: PipacsProcess) -> None:
    incoming = p.storage / ".incoming"
    wait_until(lambda: not any(incoming.iterdir()), "the stored files settle")


def stored_file(p: PipacsProcess, instance: str) -> Path:
    uuid = p.get(f"/instances/{instance}/attachments/dicom/uuid").decode().strip('"\n')
    path = p.storage / uuid[:2] / uuid[2:4] / uuid
    assert path.is_file(), path
    return path


def zip_order(p: PipacsProcess, path: str) -> list[str]:
    """The instance IDs in the order the archive at `path` holds them."""
    status, _, body, complete = fetch(p, "GET", path)
    assert status == 200 and complete
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        sets = [pydicom.dcmread(io.BytesIO(zf.read(n)), stop_before_pixels=True)
                for n in zf.namelist()]
    return [resource_ids(str(ds.PatientID), ds.StudyInstanceUID, ds.SeriesInstanceUID,
                         ds.SOPInstanceUID)[3] for ds in sets]


def error_lines(lines: list[str], instance: str) -> list[str]:
    return [line for line in lines if instance in line and line.startswith("E ")]


def new_log(p: PipacsProcess, since: int, naming: str) -> list[str]:
    """The log's lines since `since`, once an error line naming `naming` is there (it is
    written when the request ends, after the answer)."""
    return p.wait_log(lambda text: bool(error_lines(text.splitlines(), naming)),
                      since).splitlines()


def job_result(p: PipacsProcess, job_id: str) -> dict[str, Any]:
    wait_until(lambda: p.get(f"/jobs/{job_id}")["State"] in ("Success", "Failure"),
               f"job {job_id} ends")
    return p.get(f"/jobs/{job_id}")  # type: ignore[no-any-return]


def break_file(path: Path, fault: str) -> None:
    if fault == "missing":
        path.unlink()
    else:  # a directory where the file should be: open() fails (root reads any file)
        path.unlink()
        path.mkdir()


def damage_compressed(p: PipacsProcess, *instances: str) -> None:
    """Damage compressed stored files so that only reading them shows it (zlib's checksum
    fails; open() still works)."""
    for instance in instances:
        f = stored_file(p, instance)
        data = bytearray(f.read_bytes())
        data[12:40] = b"\x00" * 28
        f.write_bytes(bytes(data))


def not_a_zip(data: bytes) -> bool:
    try:
        zipfile.ZipFile(io.BytesIO(data)).testzip()
    except zipfile.BadZipFile:
        return True
    return False


@pytest.fixture
def server(make_pipacs: Any, small_data: list[Path]) -> tuple[PipacsProcess, dict[str, str]]:
    """A pipacs with one study (two series of 10); its IDs."""
    p = make_pipacs()
    assert store_status(p, *small_data[:20]) == [0] * 20
    settled(p)
    (patient,), (study,) = p.get("/patients"), p.get("/studies")
    return p, {"patient": patient, "study": study}


ROUTES = [
    ("GET", "/studies/{study}/archive", None),
    ("GET", "/patients/{patient}/media", None),
    ("POST", "/tools/create-archive", {"Resources": ["{study}"]}),
    ("POST", "/tools/create-media", {"Resources": ["{study}"], "Synchronous": True}),
]


@pytest.mark.parametrize("fault", ["missing", "unreadable"])
@pytest.mark.parametrize(("method", "route", "body"), ROUTES)
def test_bad_file_refused_before_streaming(server: Any, fault: str, method: str, route: str,
                                           body: Any) -> None:
    p, ids = server
    order = zip_order(p, f"/studies/{ids['study']}/archive")
    victim = order[len(order) // 2]
    break_file(stored_file(p, victim), fault)
    since = len(p.log())
    body = json.loads(json.dumps(body).replace("{study}", ids["study"]))
    status, _, raw, complete = fetch(p, method, route.format(**ids), body)
    assert status == (404 if fault == "missing" else 500) and complete, (status, raw[:200])
    answer = json.loads(raw)
    assert answer["Message"] == "Inexistent file" and answer["OrthancStatus"] == 13, answer
    assert victim in answer["Details"], answer
    lines = new_log(p, since, victim)
    assert len(error_lines(lines, victim)) == 1, lines
    assert "Traceback" not in p.log(), p.log()
    p.echo()


@pytest.mark.parametrize("media", [False, True])
def test_bad_file_fails_the_archive_job(server: Any, media: bool) -> None:
    p, ids = server
    victim = zip_order(p, f"/studies/{ids['study']}/archive")[-1]
    stored_file(p, victim).unlink()
    since = len(p.log())
    kind = "media" if media else "archive"
    status, _, raw, _ = fetch(p, "POST", f"/studies/{ids['study']}/{kind}",
                              {"Asynchronous": True})
    assert status == 200, raw
    job_id = json.loads(raw)["ID"]
    job = job_result(p, job_id)
    assert job["State"] == "Failure", job
    assert job["ErrorDescription"] == "Inexistent file" and victim in job["ErrorDetails"], job
    assert job["ErrorCode"] == 13, job
    assert fetch(p, "GET", f"/jobs/{job_id}/archive")[0] == 404
    assert len(error_lines(new_log(p, since, victim), victim)) == 1
    assert "Traceback" not in p.log(), p.log()


def test_file_damaged_after_streaming_started_cuts_the_transfer(
        make_pipacs: Any, small_data: list[Path]) -> None:
    """A compressed file whose damage shows only when it is read (its open() works): the
    first one is still answered with an error; a later one cuts the transfer."""
    p = make_pipacs(StorageCompression=True)
    assert store_status(p, *small_data[:10]) == [0] * 10
    settled(p)
    (study,) = p.get("/studies")
    path = f"/studies/{study}/archive"
    order = zip_order(p, path)
    damage_compressed(p, order[-1], order[0])

    headers, raw = error_first_then_cut(p, path, order, small_data)
    assert headers["Content-Type"] == "application/zip"
    assert len(raw) > 0 and not_a_zip(raw)
    p.echo()
    assert p.get("/system")["Name"] == "TestPi"


def error_first_then_cut(p: PipacsProcess, path: str, order: list[str],
                         small_data: list[Path]) -> tuple[dict[str, str], bytes]:
    """GET `path`, whose first and last files (`order`) are damaged: a 500 naming the first,
    logged once; with the first repaired, an answer that starts, then is cut at the last,
    logged once. Returns the cut answer's headers and bytes."""
    since = len(p.log())
    status, _, raw, complete = fetch(p, "GET", path)
    assert status == 500 and complete, (status, raw[:300])
    assert order[0] in json.loads(raw)["Details"]
    assert len(error_lines(new_log(p, since, order[0]), order[0])) == 1

    stored_file(p, order[0]).write_bytes(zlib_stored(small_data, order[0]))
    since = len(p.log())
    status, headers, raw, complete = fetch(p, "GET", path)
    assert status == 200, (status, raw[:300])
    assert not complete, "a transfer that lost a file must not end as if it were whole"
    lines = new_log(p, since, order[-1])
    assert len(error_lines(lines, order[-1])) == 1, lines
    assert "Traceback" not in p.log(), p.log()
    return headers, raw


def zlib_stored(small_data: list[Path], instance: str) -> bytes:
    """The bytes pipacs stores for the instance with StorageCompression."""
    import struct
    import zlib

    for f in small_data:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        if resource_ids(str(ds.PatientID), ds.StudyInstanceUID, ds.SeriesInstanceUID,
                        ds.SOPInstanceUID)[3] == instance:
            raw = f.read_bytes()
            return struct.pack("<Q", len(raw)) + zlib.compress(raw)
    raise AssertionError(f"no test file for {instance}")


def test_temporary_space_full(small_disk: Any, make_pipacs: Any,  # noqa: F811
                              small_data: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """DICOMDIR media and archive jobs are written to the temporary folder first: on a full
    one they answer 507 naming it; streamed archives need no temporary space."""
    disk = small_disk("tmp", "tmpfs", 8192)
    monkeypatch.setenv("TMPDIR", str(disk.root))
    p = make_pipacs()
    assert store_status(p, *small_data[:20]) == [0] * 20
    (study,) = p.get("/studies")
    # Python settles on its temporary folder at its first use (and skips a full one then).
    assert fetch(p, "GET", f"/studies/{study}/media")[0] == 200
    disk.fill()

    status, _, raw, _ = fetch(p, "GET", f"/studies/{study}/media")
    assert status == 507, raw[:300]
    answer = json.loads(raw)
    assert answer["Message"] == "The file storage is full", answer
    assert "no space left" in answer["Details"] and str(disk.root) in answer["Details"], answer

    for kind in ("archive", "media"):
        status, _, raw, _ = fetch(p, "POST", f"/studies/{study}/{kind}", {"Asynchronous": True})
        job = job_result(p, json.loads(raw)["ID"])
        assert job["State"] == "Failure" and job["ErrorCode"] == 19, job
        assert job["ErrorDescription"] == "The file storage is full", job
        assert str(disk.root) in job["ErrorDetails"], job

    status, _, raw, complete = fetch(p, "GET", f"/studies/{study}/archive")
    assert status == 200 and complete
    assert len(zipfile.ZipFile(io.BytesIO(raw)).namelist()) == 20
    assert not [f for f in disk.root.iterdir() if f.name != "ballast"], "temporary files left"
    assert "Traceback" not in p.log(), p.log()

    disk.free()
    status, _, raw, complete = fetch(p, "GET", f"/studies/{study}/media")
    assert status == 200 and complete
    assert "DICOMDIR" in zipfile.ZipFile(io.BytesIO(raw)).namelist()


@pytest.mark.parametrize("media", [False, True])
def test_job_archive_whose_file_has_gone(make_pipacs: Any, small_data: list[Path],
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         media: bool) -> None:
    """The ZIP an archive job wrote to the temporary folder is removed before it is fetched
    (a tmp cleaner, a reboot of /tmp): a 404 "Inexistent item" naming the job and one log
    line, not an unhandled exception."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    p = make_pipacs()
    assert store_status(p, *small_data[:5]) == [0] * 5
    (study,) = p.get("/studies")
    kind = "media" if media else "archive"
    status, _, raw, _ = fetch(p, "POST", f"/studies/{study}/{kind}", {"Asynchronous": True})
    job_id = json.loads(raw)["ID"]
    assert job_result(p, job_id)["State"] == "Success"
    (archive,) = tmp.iterdir()
    archive.unlink()

    since = len(p.log())
    status, _, raw, complete = fetch(p, "GET", f"/jobs/{job_id}/archive")
    assert status == 404 and complete, (status, raw[:300])
    answer = json.loads(raw)
    assert answer["Message"] == "Inexistent item" and answer["OrthancStatus"] == 7, answer
    assert job_id in answer["Details"], answer
    assert len(error_lines(new_log(p, since, job_id), job_id)) == 1, p.log()[since:]
    assert "Traceback" not in p.log(), p.log()
    p.echo()
