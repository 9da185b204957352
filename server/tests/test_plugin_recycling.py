"""Recycling end to end: MaximumPatientCount/MaximumStorageSize, Recycle or Reject, protection."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import datagen
from conftest import PipacsProcess, store_status


@pytest.fixture(scope="module")
def patients(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Four patients (S21P0001..4), each one study of 2 series x 3 instances."""
    files = datagen.make_small(
        tmp_path_factory.mktemp("recycle"), patients=4, seed=21, studies=1, series=2, instances=3
    )
    out: dict[str, list[Path]] = {}
    for f in files:
        out.setdefault(f.parts[-4], []).append(f)
    return out


def patient_ids(p: PipacsProcess) -> dict[str, str]:
    """PatientID -> pipacs ID of every stored patient."""
    return {x["MainDicomTags"]["PatientID"]: x["ID"] for x in p.get("/patients?expand")}


def test_patient_count_recycles_the_oldest_unprotected(
    make_pipacs: Any, patients: dict[str, list[Path]]
) -> None:
    p = make_pipacs(MaximumPatientCount=2, MaximumStorageMode="Recycle")
    p1, p2, p3, p4 = (patients[f"S21P000{n}"] for n in range(1, 5))
    assert store_status(p, *p1) == [0] * 6
    time.sleep(0.05)  # distinct update times
    assert store_status(p, *p2) == [0] * 6
    ids = patient_ids(p)
    # Protect the oldest: the next patient pushes out the second one instead.
    assert p.status("PUT", f"/patients/{ids['S21P0001']}/protected", b"1") == 200
    assert p.get(f"/patients/{ids['S21P0001']}/protected") == b"1"
    assert store_status(p, *p3) == [0] * 6
    assert sorted(patient_ids(p)) == ["S21P0001", "S21P0003"]
    assert len(p.get("/instances")) == 12

    # More of an existing patient never recycles anything.
    assert store_status(p, p3[0]) == [0]
    assert sorted(patient_ids(p)) == ["S21P0001", "S21P0003"]

    # Everyone else protected: a new patient is refused (0xA700 over DICOM, 507 over REST).
    ids = patient_ids(p)
    assert p.status("PUT", f"/patients/{ids['S21P0003']}/protected", b"1") == 200
    assert store_status(p, p4[0]) == [0xA700]
    assert p.status("POST", "/instances", p4[0].read_bytes()) == 507
    assert sorted(patient_ids(p)) == ["S21P0001", "S21P0003"]

    # Unprotect: the oldest unprotected goes, over REST as over DICOM.
    assert p.status("PUT", f"/patients/{ids['S21P0001']}/protected", b"0") == 200
    assert p.status("POST", "/instances", p4[0].read_bytes()) == 200
    assert sorted(patient_ids(p)) == ["S21P0003", "S21P0004"]
    assert "recycling patient" in p.log()


def test_reject_mode_refuses_new_patients(
    make_pipacs: Any, patients: dict[str, list[Path]]
) -> None:
    p = make_pipacs(MaximumPatientCount=1, MaximumStorageMode="Reject")
    p1, p2 = patients["S21P0001"], patients["S21P0002"]
    assert store_status(p, *p1) == [0] * 6
    assert store_status(p, *p2[:2]) == [0xA700, 0xA700]
    assert p.status("POST", "/instances", p2[2].read_bytes()) == 507
    assert sorted(patient_ids(p)) == ["S21P0001"]
    assert len(p.get("/instances")) == 6


def test_storage_size_recycles_to_make_room(make_pipacs: Any, tmp_path: Path) -> None:
    # 3 patients of about 0.5 MB each against a 1 MB limit.
    files = datagen.make_small(
        tmp_path / "big", patients=3, seed=22, studies=1, series=1, instances=12
    )
    by_patient: dict[str, list[Path]] = {}
    for f in files:
        by_patient.setdefault(f.parts[-4], []).append(f)
    p = make_pipacs(MaximumStorageSize=1, MaximumStorageMode="Recycle")
    for pid in sorted(by_patient):
        assert store_status(p, *by_patient[pid]) == [0] * 12
    stats = p.get("/statistics")
    assert int(stats["TotalDiskSize"]) <= 1024 * 1024
    assert "S22P0003" in patient_ids(p)
    assert "S22P0001" not in patient_ids(p)
    assert len(p.get(f"/patients/{patient_ids(p)['S22P0003']}/instances")) == 12
