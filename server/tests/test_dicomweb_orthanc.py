"""QIDO-RS side by side: the same data in pipacs and in Debian's Orthanc with its DICOMweb plugin.

Known, legitimate differences (each is removed or normalised before comparing):

* Orthanc reads every answer's first file and adds Specific Character Set (0008,0005) and
  Timezone Offset From UTC (0008,0201). pipacs answers from its index alone (that is what
  makes it fast); both come with `includefield`, and JSON is UTF-8 anyway.
* RetrieveURL names each server's own address: only the path after the host is compared.
* Order of results: neither standard nor servers promise one, so answers are compared as
  sets keyed by the level's UID, and paging only by counts.
* Patient attributes: Orthanc takes them from each study's own files, pipacs from the
  patient (as its REST API does); the generated data gives one patient two PatientSex
  values, so Patient's Sex (0010,0040) is compared for presence only.
* /instances filtered on SeriesInstanceUID: Orthanc leaves out the series attributes
  (Modality, Series Description, Series Number) that PS3.18 returns for "all instances";
  pipacs keeps them.
* Case: Orthanc 1.10 matches PatientName case-insensitively even with QidoCaseSensitive
  true; pipacs honours the option. Queries below use the stored case.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from conftest import PipacsProcess, base_config, free_port

pytestmark = pytest.mark.orthanc

ORTHANC = Path("/usr/sbin/Orthanc")
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
FROM_FILES_IN_ORTHANC = {"00080005", "00080201"}
PRESENCE_ONLY = {"00100040"}
SERIES_ATTRIBUTES = frozenset({"00080060", "0008103E", "00200011"})


def fetch(url: str, body: bytes | None = None) -> Any:
    req = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory,
            small_data: list[Path]) -> Iterator[tuple[str, str]]:
    if not ORTHANC.exists() or not PLUGIN.exists():
        pytest.fail("Debian's orthanc and orthanc-dicomweb are needed (make setup)")
    folder = tmp_path_factory.mktemp("orthanc-dicomweb")
    port = free_port()
    config = {"Name": "Reference", "StorageDirectory": str(folder / "db"),
              "IndexDirectory": str(folder / "db"), "HttpPort": port, "DicomPort": free_port(),
              "Plugins": [str(PLUGIN)], "AuthenticationEnabled": False,
              "RemoteAccessAllowed": False, "DicomWeb": {"Enable": True}}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = folder / "orthanc.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(ORTHANC), str(folder / "orthanc.json")], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": "1"})
    orthanc = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            fetch(orthanc + "/system")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"Orthanc did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
    p = PipacsProcess(tmp_path_factory.mktemp("pipacs-dicomweb"),
                      base_config(Plugins=[str(PLUGIN)]))
    p.start()
    try:
        for path in small_data:
            for url in (p.url, orthanc):
                fetch(url + "/instances", path.read_bytes())
        yield p.url + "/dicom-web", orthanc + "/dicom-web"
    finally:
        p.stop()
        proc.terminate()
        proc.wait(10)


def normalised(answer: list[dict[str, Any]], drop: set[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for ds in answer:
        ds = {k: v for k, v in ds.items() if k not in drop}
        url = ds["00081190"]["Value"][0]
        ds["00081190"] = {"vr": "UR", "Value": [url[url.index("/dicom-web/"):]]}
        key = next(ds[t]["Value"][0] for t in ("00080018", "0020000E", "0020000D") if t in ds)
        out[key] = ds
    return out


def compare(servers: tuple[str, str], path: str, extra: frozenset[str] = frozenset()) -> int:
    ours, theirs = (fetch(base + path) for base in servers)
    a = normalised(ours, set())
    b = normalised(theirs, FROM_FILES_IN_ORTHANC)
    assert set(a) == set(b), path
    for key in b:
        assert set(a[key]) - extra == set(b[key]), (path, set(a[key]) ^ set(b[key]))
        for tag in set(b[key]) - PRESENCE_ONLY:
            assert a[key][tag] == b[key][tag], (path, tag, a[key][tag], b[key][tag])
    return len(a)


def test_same_qido_answers(servers: tuple[str, str], small_data: list[Path]) -> None:
    first = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    last = pydicom.dcmread(small_data[-1], stop_before_pixels=True)
    study, series = first.StudyInstanceUID, first.SeriesInstanceUID
    queries = {
        "/studies": 4,
        f"/studies?PatientID={first.PatientID}": 2,
        f"/studies?00100020={last.PatientID}": 2,
        f"/studies?PatientName={first.PatientName}": 2,
        "/studies?PatientName=BENCH*": 4,
        "/studies?ModalitiesInStudy=CT": 2,
        f"/studies?StudyDate={first.StudyDate}-": None,
        f"/studies?StudyInstanceUID={study},{last.StudyInstanceUID}": 2,
        "/studies?includefield=StudyDescription": 4,
        "/series": 8,
        "/series?Modality=MR": 4,
        f"/series?SeriesInstanceUID={series}": 1,
        f"/studies/{study}/series": 2,
        f"/studies/{study}/instances": 20,
        f"/studies/{study}/series/{series}/instances": 10,
        f"/instances?SeriesInstanceUID={series}": 10,  # see SERIES_ATTRIBUTES
        "/instances?InstanceNumber=3": 8,
        f"/studies/{study}/series?SeriesNumber={first.SeriesNumber}": 1,
    }
    for path, expected in queries.items():
        extra = SERIES_ATTRIBUTES if path.startswith("/instances?SeriesInstanceUID") \
            else frozenset()
        n = compare(servers, path, extra)
        assert expected is None or n == expected, (path, n)


def test_fields_from_files_come_with_includefield(servers: tuple[str, str]) -> None:
    ours, theirs = (fetch(base + "/studies?includefield=00080201") for base in servers)
    a = {s["0020000D"]["Value"][0]: s["00080201"] for s in ours}
    b = {s["0020000D"]["Value"][0]: s["00080201"] for s in theirs}
    assert a == b


def test_paging_counts(servers: tuple[str, str]) -> None:
    for path in ("/studies?limit=3", "/studies?limit=2&offset=3", "/series?offset=6",
                 "/instances?limit=5&offset=2"):
        ours, theirs = (fetch(base + path) for base in servers)
        assert len(ours) == len(theirs), path
