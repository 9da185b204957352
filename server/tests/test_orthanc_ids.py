"""Public IDs: the same files get the same IDs on Debian's Orthanc and on pipacs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest

from conftest import DCMTK_ENV, dcmtk, free_port

ORTHANC = "/usr/sbin/Orthanc"


@pytest.fixture
def orthanc(tmp_path: Path):  # type: ignore[no-untyped-def]
    if not os.path.exists(ORTHANC):
        pytest.fail("Debian's orthanc package is not installed: run `make setup`")
    folder = tmp_path / "orthanc"
    folder.mkdir()
    http, dicom = free_port(), free_port()
    cfg = {"Name": "Reference", "StorageDirectory": str(folder / "db"), "HttpPort": http,
           "DicomPort": dicom, "DicomAet": "ORTHANC", "Plugins": [],
           "RemoteAccessAllowed": False, "AuthenticationEnabled": False}
    (folder / "orthanc.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], env=DCMTK_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/system", timeout=0.5).read()
            break
        except OSError:
            time.sleep(0.05)
    yield url, dicom
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(folder, ignore_errors=True)


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_ids_match_orthanc(pipacs, orthanc, small_data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url, port = orthanc
    # Include awkward identifiers: padding, an empty PatientID, non-ASCII names.
    files = list(small_data[:3])
    odd = pydicom.dcmread(small_data[45])
    odd.PatientID = ""
    odd.PatientName = "Müller^Jürgen"
    odd.SpecificCharacterSet = "ISO_IR 192"
    odd.save_as(tmp_path / "odd.dcm")
    files.append(tmp_path / "odd.dcm")
    dcmtk("storescu", "-aec", "ORTHANC", "127.0.0.1", str(port), *map(str, files))
    pipacs.store(*files)
    theirs = {level: set(get(f"{url}/{level}"))  # type: ignore[arg-type]
              for level in ("patients", "studies", "series", "instances")}
    ours: dict[str, set[str]] = {level: set() for level in theirs}
    for change in pipacs.get("/changes?limit=1000")["Changes"]:
        ours[change["Path"].split("/")[1]].add(change["ID"])
    assert ours == theirs
    assert len(theirs["instances"]) == 4
