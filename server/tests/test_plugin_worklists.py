"""Worklists plugin: dcmtk's findscu -W against .wl files made by dump2dcm, and the REST API."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from itertools import count
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from conftest import PipacsProcess, dcmtk

FINDSCU = shutil.which("findscu", path="/usr/bin") or "findscu"  # not pynetdicom's, in a venv
_runs = count()


def worklist_dump(pid: str, name: str, steps: list[tuple[str, str, str, str]]) -> str:
    """dump2dcm input for one worklist; steps are (modality, station AET, date, time)."""
    lines = [
        "(0008,0005) CS [ISO_IR 100]",
        f"(0008,0050) SH [ACC{pid}]",
        f"(0010,0010) PN [{name}]",
        f"(0010,0020) LO [{pid}]",
        f"(0020,000d) UI [1.2.826.0.1.3680043.9.7777.{pid[-3:]}]",
        "(0040,0100) SQ (Sequence with undefined length)",
    ]
    for n, (modality, station, date, time) in enumerate(steps, 1):
        lines += [
            "(fffe,e000) - (Item with undefined length)",
            f"(0008,0060) CS [{modality}]",
            f"(0040,0001) AE [{station}]",
            f"(0040,0002) DA [{date}]",
            f"(0040,0003) TM [{time}]",
            f"(0040,0007) LO [{modality} exam {n}]",
            f"(0040,0009) SH [SPS{pid}{n}]",
            "(fffe,e00d) - (ItemDelimitationItem)",
        ]
    lines.append("(fffe,e0dd) - (SequenceDelimitationItem)")
    return "\n".join(lines) + "\n"


def make_wl(folder: Path, stem: str, pid: str, name: str, steps: list[Any]) -> Path:
    dump = folder.parent / f"{stem}.dump"
    dump.write_text(worklist_dump(pid, name, steps))
    target = folder / f"{stem}.wl"
    staged = folder.parent / f"{stem}.wl.tmp"
    dcmtk("dump2dcm", str(dump), str(staged))
    staged.replace(target)  # appears whole, as a member of staff copying it in would
    return target


WORKLISTS = {
    "wl1": (
        "PID001",
        "DOE^JOHN",
        [("CT", "CT_ROOM1", "20240115", "0900"), ("MR", "MR_ROOM", "20240220", "1400")],
    ),
    "wl2": ("PID002", "ROE^JANE", [("MR", "MR_ROOM", "20240116", "1030")]),
    "wl3": ("PID003", "POE^ANN", [("CT", "CT_ROOM2", "20240301", "0815")]),
}


def find(p: PipacsProcess, tmp: Path, *keys: str, aet: str = "FINDSCU") -> list[Dataset]:
    """Run findscu -W with these keys (PatientID is always asked); the answers, by PatientID."""
    out = tmp / f"rsp{next(_runs)}"
    out.mkdir()
    args = [FINDSCU, "-W", "-aet", aet, "-aec", p.aet, "-X", "-od", str(out), "-k", "PatientID"]
    for k in keys:
        args += ["-k", k]
    dcmtk(*args, "127.0.0.1", str(p.dicom_port))
    answers = [pydicom.dcmread(f) for f in sorted(out.glob("rsp*.dcm"))]
    return sorted(answers, key=lambda ds: str(ds.PatientID))


def pids(answers: list[Dataset]) -> list[str]:
    return [str(ds.PatientID) for ds in answers]


SPS = "ScheduledProcedureStepSequence[0]"


@pytest.fixture
def wl_server(make_pipacs: Any, tmp_path: Path) -> tuple[PipacsProcess, Path]:
    p = make_pipacs(start=False, Worklists={"Enable": True, "Database": "wl"})
    folder = p.folder / "wl"
    folder.mkdir()
    for stem, (pid, name, steps) in WORKLISTS.items():
        make_wl(folder, stem, pid, name, steps)
    (folder / "broken.wl").write_bytes(b"not a DICOM file at all")
    (folder / "notes.txt").write_text("ignored: not a .wl file")
    p.start()
    return p, folder


def test_worklist_matching_with_findscu(wl_server: Any, tmp_path: Path) -> None:
    p, folder = wl_server

    # Universal: every readable worklist; the broken file is skipped.
    assert pids(find(p, tmp_path)) == ["PID001", "PID002", "PID003"]

    # Sequence matching on Modality: only the matching items come back.
    ct = find(
        p,
        tmp_path,
        f"{SPS}.Modality=CT",
        f"{SPS}.ScheduledStationAETitle",
        f"{SPS}.ScheduledProcedureStepStartDate",
    )
    assert pids(ct) == ["PID001", "PID003"]
    steps = ct[0].ScheduledProcedureStepSequence
    assert [
        (s.Modality, s.ScheduledStationAETitle, s.ScheduledProcedureStepStartDate) for s in steps
    ] == [("CT", "CT_ROOM1", "20240115")]

    # Station AE title, and keys from two items never combine across items.
    assert pids(find(p, tmp_path, f"{SPS}.ScheduledStationAETitle=CT_ROOM1")) == ["PID001"]
    assert (
        pids(find(p, tmp_path, f"{SPS}.ScheduledStationAETitle=MR_ROOM", f"{SPS}.Modality=CT"))
        == []
    )

    # Date ranges: closed, open-ended, with the modality in the same item.
    jan = f"{SPS}.ScheduledProcedureStepStartDate=20240101-20240131"
    assert pids(find(p, tmp_path, jan)) == ["PID001", "PID002"]
    assert pids(find(p, tmp_path, jan, f"{SPS}.Modality=MR")) == ["PID002"]
    later = find(p, tmp_path, f"{SPS}.ScheduledProcedureStepStartDate=20240201-", f"{SPS}.Modality")
    assert pids(later) == ["PID001", "PID003"]
    assert [s.Modality for s in later[0].ScheduledProcedureStepSequence] == ["MR"]
    assert pids(find(p, tmp_path, f"{SPS}.ScheduledProcedureStepStartDate=-20240115")) == ["PID001"]
    assert pids(find(p, tmp_path, f"{SPS}.ScheduledProcedureStepStartTime=0800-1000")) == [
        "PID001",
        "PID003",
    ]

    # Top-level keys: wildcards (names case-insensitive, as Orthanc by default), single values.
    names = find(p, tmp_path, "PatientName=doe*", "AccessionNumber")
    assert pids(names) == ["PID001"]
    assert str(names[0].PatientName) == "DOE^JOHN"
    assert names[0].AccessionNumber == "ACCPID001"
    assert pids(find(p, tmp_path, "PatientID=PID00?")) == ["PID001", "PID002", "PID003"]
    assert pids(find(p, tmp_path, "PatientID=PID002")) == ["PID002"]

    # A worklist dropped in while the server runs is found by the next query.
    make_wl(folder, "wl4", "PID004", "NEW^ARRIVAL", [("CT", "CT_ROOM1", "20240115", "1100")])
    assert pids(find(p, tmp_path, f"{SPS}.ScheduledStationAETitle=CT_ROOM1")) == [
        "PID001",
        "PID004",
    ]
    (folder / "wl4.wl").unlink()
    assert pids(find(p, tmp_path, f"{SPS}.ScheduledStationAETitle=CT_ROOM1")) == ["PID001"]
    assert "Traceback" not in p.log()


def test_filter_issuer_aet_and_limit_answers(make_pipacs: Any, tmp_path: Path) -> None:
    p = make_pipacs(
        start=False,
        Worklists={"Enable": True, "Database": "wl", "FilterIssuerAet": True, "LimitAnswers": 1},
    )
    folder = p.folder / "wl"
    folder.mkdir()
    for stem, (pid, name, steps) in WORKLISTS.items():
        make_wl(folder, stem, pid, name, steps)
    make_wl(folder, "wl4", "PID004", "NEW^ARRIVAL", [("CT", "CT_ROOM1", "20240115", "1100")])
    p.start()
    # The calling AE title stands for ScheduledStationAETitle when the query leaves it out.
    assert pids(find(p, tmp_path, aet="CT_ROOM2")) == ["PID003"]
    assert pids(find(p, tmp_path, aet="UNKNOWN")) == []
    assert pids(find(p, tmp_path, f"{SPS}.Modality=MR", aet="MR_ROOM")) == ["PID001"]
    # CT_ROOM1 has two worklists; LimitAnswers keeps one.
    assert len(find(p, tmp_path, aet="CT_ROOM1")) == 1
    assert "LimitAnswers" in p.log()


def request(p: PipacsProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(p.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_worklists_rest(make_pipacs: Any, tmp_path: Path) -> None:
    # The folder does not exist yet: a warning, and the first create makes it.
    p = make_pipacs(Worklists={"Enable": True, "Database": "authored"})
    assert "does not exist" in p.log()
    assert request(p, "GET", "/worklists") == (200, [])

    tags = {
        "PatientID": "REST01",
        "PatientName": "TEACHER^MADE",
        "AccessionNumber": "A-REST-1",
        "ScheduledProcedureStepSequence": [
            {
                "Modality": "US",
                "ScheduledStationAETitle": "US_ROOM",
                "ScheduledProcedureStepStartDate": "20250102",
                "ScheduledProcedureStepDescription": "Abdomen",
            },
        ],
    }
    status, created = request(p, "POST", "/worklists/create", {"Tags": tags})
    assert status == 200
    wid = created["ID"]
    assert created["Path"] == f"/worklists/{wid}"
    assert (p.folder / "authored" / f"{wid}.wl").is_file()

    status, one = request(p, "GET", f"/worklists/{wid}")
    assert status == 200
    assert one["Tags"]["PatientName"] == "TEACHER^MADE"
    assert one["Tags"]["ScheduledProcedureStepSequence"][0]["Modality"] == "US"
    assert [w["ID"] for w in request(p, "GET", "/worklists")[1]] == [wid]

    found = find(p, tmp_path, f"{SPS}.Modality=US", f"{SPS}.ScheduledProcedureStepDescription")
    assert pids(found) == ["REST01"]
    assert found[0].ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription == "Abdomen"

    tags["ScheduledProcedureStepSequence"][0]["Modality"] = "MR"
    assert request(p, "PUT", f"/worklists/{wid}", {"Tags": tags})[0] == 200
    assert pids(find(p, tmp_path, f"{SPS}.Modality=US")) == []
    assert pids(find(p, tmp_path, f"{SPS}.Modality=MR")) == ["REST01"]

    # Bad input is a 400 naming the key; unknown or malformed IDs are 404.
    status, body = request(p, "POST", "/worklists/create", {"Tags": {"NotAKeyword": "x"}})
    assert status == 400 and b"NotAKeyword" in body
    status, body = request(
        p, "POST", "/worklists/create", {"Tags": {"ScheduledProcedureStepSequence": "CT"}}
    )
    assert status == 400
    assert request(p, "GET", "/worklists/nope")[0] == 404
    assert request(p, "DELETE", "/worklists/..%2Fconfiguration")[0] == 404
    assert (p.folder / "configuration.json").is_file()

    assert request(p, "DELETE", f"/worklists/{wid}") == (200, {})
    assert request(p, "GET", f"/worklists/{wid}")[0] == 404
    assert pids(find(p, tmp_path)) == []


def test_worklist_query_without_the_plugin(pipacs: PipacsProcess, tmp_path: Path) -> None:
    assert find(pipacs, tmp_path) == []
    assert "the worklists plugin is off" in pipacs.log()
