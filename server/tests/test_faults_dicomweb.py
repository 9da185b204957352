"""DICOMweb answers when a stored file is missing, unreadable or damaged: as for ZIP archives
(test_faults_archive.py), a clear error naming the instance before the first byte where
possible; once a multipart answer has started, a cut transfer, never a well-formed multipart
body that lacks an instance. One log line names the instance.

Real pipacs processes over HTTP.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pydicom
import pytest

from conftest import PipacsProcess
from test_diskfull import store_status
from test_faults_archive import (
    break_file,
    damage_compressed,
    error_first_then_cut,
    error_lines,
    fetch,
    new_log,
    settled,
    stored_file,
)


def uids_of(p: PipacsProcess, instance: str) -> tuple[str, str, str]:
    tags = p.get(f"/instances/{instance}/tags?simplify")
    return tags["StudyInstanceUID"], tags["SeriesInstanceUID"], tags["SOPInstanceUID"]


def parts_of(body: bytes, headers: dict[str, str]) -> list[bytes]:
    boundary = headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    delim = b"--" + boundary.encode()
    assert body.endswith(delim + b"--\r\n"), "the multipart body is not closed"
    return body.split(delim)[1:-1]


@pytest.fixture
def server(make_pipacs: Any, small_data: list[Path]) -> tuple[PipacsProcess, list[str]]:
    """A pipacs with one study (two series of 10); its instances in storage order."""
    p = make_pipacs(DicomWeb={"Enable": True})
    assert store_status(p, *small_data[:20]) == [0] * 20
    settled(p)
    (study,) = p.get("/studies")
    return p, p.get(f"/studies/{study}/instances?expand=false")


def routes(study: str, series: str, sop: str) -> dict[str, str]:
    inst = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"
    return {"study": f"/dicom-web/studies/{study}",
            "series": f"/dicom-web/studies/{study}/series/{series}",
            "instance": inst,
            "frames": f"{inst}/frames/1",
            "rendered": f"{inst}/rendered",
            "wado-uri": f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}"
                        f"&objectUID={sop}&contentType=application/dicom"}


@pytest.mark.parametrize("fault", ["missing", "unreadable"])
@pytest.mark.parametrize("route", ["study", "series", "instance", "frames", "rendered",
                                   "wado-uri"])
def test_bad_file_refused_before_streaming(server: Any, fault: str, route: str) -> None:
    p, instances = server
    ids = [i["ID"] if isinstance(i, dict) else i for i in instances]
    victim = ids[len(ids) // 2 + 2]  # in the second series, not its first instance
    study, series, sop = uids_of(p, victim)
    break_file(stored_file(p, victim), fault)
    since = len(p.log())
    status, _, raw, complete = fetch(p, "GET", routes(study, series, sop)[route])
    assert status == (404 if fault == "missing" else 500) and complete, (status, raw[:300])
    answer = json.loads(raw)
    assert answer["Message"] == "Inexistent file" and answer["OrthancStatus"] == 13, answer
    assert victim in answer["Details"] and sop in answer["Details"], answer
    lines = new_log(p, since, victim)
    assert len(error_lines(lines, victim)) == 1, lines
    assert "Traceback" not in p.log(), p.log()
    p.echo()


def test_file_damaged_after_streaming_started_cuts_the_transfer(
        make_pipacs: Any, small_data: list[Path]) -> None:
    """A compressed file whose damage shows only when it is read (its open() works): the
    first one is still answered with an error; a later one cuts the multipart transfer."""
    p = make_pipacs(DicomWeb={"Enable": True}, StorageCompression=True)
    assert store_status(p, *small_data[:10]) == [0] * 10
    settled(p)
    (study_id,) = p.get("/studies")
    order = p.get(f"/studies/{study_id}/instances?expand=false")
    order = [i["ID"] if isinstance(i, dict) else i for i in order]
    study = uids_of(p, order[0])[0]
    path = f"/dicom-web/studies/{study}"
    status, headers, raw, complete = fetch(p, "GET", path)
    assert status == 200 and complete and len(parts_of(raw, headers)) == 10
    damage_compressed(p, order[-1], order[0])

    headers, raw = error_first_then_cut(p, path, order, small_data)
    assert headers["Content-Type"].startswith("multipart/related")
    assert len(raw) > 0 and not raw.endswith(b"--\r\n")
    p.echo()


def test_whole_answer_still_streams(server: Any) -> None:
    """The checks change nothing when every file is there: each instance in one part."""
    p, instances = server
    ids = [i["ID"] if isinstance(i, dict) else i for i in instances]
    study = uids_of(p, ids[0])[0]
    status, headers, raw, complete = fetch(p, "GET", f"/dicom-web/studies/{study}")
    assert status == 200 and complete
    parts = parts_of(raw, headers)
    assert len(parts) == 20
    sops = {pydicom.dcmread(io.BytesIO(part.split(b"\r\n\r\n", 1)[1][:-2]),
                            stop_before_pixels=True).SOPInstanceUID for part in parts}
    assert len(sops) == 20
