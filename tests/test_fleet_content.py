"""The teaching-library job's pure parts: the controller's scanner and packer, and the Pi's
compare/send logic against an in-memory pipacs (roles/fleet/library/fleet_content*.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fleet_modules import LIBRARY, ROLE, load

ROOT = Path(__file__).resolve().parents[1]

pydicom = pytest.importorskip("pydicom")
dicomfile = pytest.importorskip("pipacs.dicomfile")
ids = pytest.importorskip("pipacs.ids")
scanner = load("fleet_content_library")
content = load("fleet_content")

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

ROOT_UID = "2.25.1234567890123456789"


def instance(path: Path, patient: str, study: int, series: int, number: int, ts: Any = ExplicitVRLittleEndian,
             charset: str | None = None, big_private: int = 0) -> Path:
    """A small CT instance written as a Part 10 file (with a sequence before the UIDs)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = f"{ROOT_UID}.{study}.{series}.{number}"
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", "1.2.3.4"
    ds.ReferencedStudySequence = Sequence([ref])
    if big_private:
        ds.add_new(0x00090010, "LO", "PIPACS TEST")
        ds.add_new(0x00091001, "OB", b"\x01" * big_private)
    ds.PatientName, ds.PatientID = "Teach^Case", patient
    ds.StudyInstanceUID = f"{ROOT_UID}.{study}"
    ds.SeriesInstanceUID = f"{ROOT_UID}.{study}.{series}"
    ds.StudyDescription, ds.StudyDate, ds.Modality = f"Case {study}", "20240102", "CT"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(range(32))
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "library"
    instance(lib / "case1" / "a" / "IM0001", "P-1", 1, 1, 1)
    instance(lib / "case1" / "a" / "IM0002", "P-1", 1, 1, 2, ImplicitVRLittleEndian)
    instance(lib / "case1" / "b.dcm", "P-1", 1, 2, 1, ExplicitVRBigEndian)
    instance(lib / "deep" / "er" / "x", "Ünï-2", 2, 1, 1, DeflatedExplicitVRLittleEndian, charset="ISO_IR 192")
    instance(lib / "case3.dcm", "P-3 ", 3, 1, 1, big_private=300 * 1024)  # header beyond 256 KB
    (lib / "README.txt").write_text("not DICOM")
    (lib / ".hidden").write_text("left out")
    (lib / "case1" / "copy-of-IM0001").write_bytes((lib / "case1" / "a" / "IM0001").read_bytes())
    truncated = (lib / "case1" / "a" / "IM0002").read_bytes()[:200]
    (lib / "broken.dcm").write_bytes(truncated)
    return lib


def test_scan_finds_studies_and_counts_what_it_leaves_out(library: Path) -> None:
    manifest, files, totals, skipped = scanner.scan(str(library))
    assert [len(s["instances"]) for s in manifest] == [3, 1, 1]
    assert totals == {"studies": 3, "patients": 3, "instances": 5, "bytes": sum(s["bytes"] for s in manifest),
                      "files_scanned": 8, "skipped": 2, "duplicates": 1}
    assert {s["path"] for s in skipped} == {"README.txt", "broken.dcm"}
    assert sorted(files) == sorted(s["id"] for s in manifest)
    by_uid = {s["uid"]: s for s in manifest}
    assert by_uid[f"{ROOT_UID}.2"]["patient_id"] == "Ünï-2"
    assert by_uid[f"{ROOT_UID}.3"]["patient_id"] == "P-3"
    assert by_uid[f"{ROOT_UID}.1"]["description"] == "Case 1"


def test_ids_are_pipacs_ids_for_the_same_files(library: Path) -> None:
    manifest, files, _, _ = scanner.scan(str(library))
    studies = {s["id"]: s for s in manifest}
    checked = 0
    for study_id, entries in files.items():
        for instance_id, rel in entries:
            parsed = dicomfile.parse((library / rel).read_bytes())
            patient, study, _series, inst = parsed.ids
            assert (patient, study, inst) == (studies[study_id]["patient"], study_id, instance_id), rel
            checked += 1
    assert checked == 5


def test_the_scanner_computes_ids_with_pipacs_own_code() -> None:
    # One ID function for the server and the library: no second copy that could drift.
    assert scanner.resource_ids is ids.resource_ids
    assert not hasattr(scanner, "hash_id")


def ansible_module(python: str, library: Path) -> dict[str, Any]:
    """Run the scanner as Ansible runs it on the controller (AnsiballZ), with this Python.

    Outside the repository, so its ansible.cfg (timer callback, inventory) stays out of the way.
    """
    env = dict(os.environ, ANSIBLE_LIBRARY=str(LIBRARY), ANSIBLE_MODULE_UTILS=str(ROLE / "module_utils"),
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_CONFIG", None)
    run = subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-m", "fleet_content_library",
         "-a", f"path={library}", "-e", f"ansible_python_interpreter={python}"],
        cwd=library.parent, env=env, capture_output=True, text=True, timeout=120, check=False)  # no ansible.cfg
    result = json.loads(run.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert isinstance(result, dict), run.stdout + run.stderr
    return result


def test_the_module_runs_with_the_controller_venv_python(library: Path) -> None:
    result = ansible_module(sys.executable, library)
    assert not result.get("failed"), result
    assert result["totals"]["studies"] == 3 and result["totals"]["instances"] == 5


def test_a_python_without_pydicom_or_pipacs_fails_saying_so(library: Path) -> None:
    python = "/usr/bin/python3"
    if not Path(python).exists():
        pytest.skip("no system Python to run the module with")
    probe = subprocess.run([python, "-c", "import pydicom"], capture_output=True, check=False)
    if probe.returncode == 0:
        pytest.skip(f"{python} has pydicom: cannot show the failure")
    result = ansible_module(python, library)
    assert result.get("failed"), result
    assert "pydicom" in result["msg"] and "fleet_controller_python" in result["msg"], result["msg"]


def test_pack_writes_one_tar_per_study_named_by_instance(library: Path, tmp_path: Path) -> None:
    manifest, files, _, _ = scanner.scan(str(library))
    study = manifest[0]["id"]
    packed = scanner.pack(str(library), files, [study], str(tmp_path / "tars"))
    with tarfile.open(packed[study]) as tar:
        names = sorted(m.name for m in tar.getmembers())
        assert names == sorted(i for i, _ in files[study])
        for instance_id, rel in files[study]:
            assert tar.extractfile(instance_id).read() == (library / rel).read_bytes()


class FakePacs:
    """pipacs' REST answers the module uses, in memory; instances identified by pipacs' parser."""

    def __init__(self) -> None:
        self.instances: dict[str, dict[str, str]] = {}  # instance ID -> its study, patient, StudyUID
        self.protected_patients: set[str] = set()
        self.posts = 0
        self.deleted: list[str] = []

    def store(self, raw: bytes) -> str:
        parsed = dicomfile.parse(raw)  # as pipacs identifies what it receives
        patient, study, _series, inst = parsed.ids
        self.instances[inst] = {"study": study, "patient": patient, "uid": parsed.uids[1]}
        return inst

    def instances_of(self, study_uid: str) -> set[str]:
        return {i for i, v in self.instances.items() if v["uid"] == study_uid}

    def protected(self, patient: str) -> bool | None:
        if not any(v["patient"] == patient for v in self.instances.values()):
            return None
        return patient in self.protected_patients

    def call(self, method: str, path: str, body: bytes | None = None, ok_missing: bool = False,
             content_type: str = "") -> Any:
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["instances"]:
            self.posts += 1
            if b"REFUSE-ME" in (body or b""):
                raise content.PacsError("POST /instances answered 400: Bad file format", 400)
            return {"ID": self.store(body or b""), "Status": "Success"}
        if method == "PUT" and parts[0] == "patients":
            (self.protected_patients.add if body == b"1" else self.protected_patients.discard)(parts[1])
            return ""
        if parts[0] == "studies":
            held = [i for i, v in self.instances.items() if v["study"] == parts[1]]
            if method == "DELETE":
                for i in held:
                    del self.instances[i]
                self.deleted.append(parts[1])
            return {"ID": parts[1]} if held else None
        raise AssertionError(f"unexpected call {method} {path}")


def staged(library: Path, tmp_path: Path, status: dict[str, Any]) -> str:
    _, files, _, _ = scanner.scan(str(library))
    folder = tmp_path / "staging"
    scanner.pack(str(library), files, sorted(status["send"]), str(folder))
    return str(folder)


def test_sync_sends_what_is_missing_then_nothing(library: Path, tmp_path: Path) -> None:
    manifest = scanner.scan(str(library))[0]
    pacs = FakePacs()
    record_path = str(tmp_path / "fleet-content.json")
    # The Pi already holds one instance of study 1 (sent by a modality, say).
    pacs.store((library / "case1" / "a" / "IM0001").read_bytes())
    status = content.compare(pacs, manifest, content.load_record(record_path), True)
    assert status["counts"]["studies_to_send"] == 3
    assert status["counts"]["instances_to_send"] == 4
    assert status["counts"]["patients_to_protect"] == 3
    record = content.load_record(record_path)
    done, warnings, dirty = content.sync(pacs, manifest, record, status, staged(library, tmp_path, status),
                                         False, record_path)
    assert warnings == [] and dirty
    assert done == {"studies_sent": 3, "instances_sent": 4, "bytes_sent": status["counts"]["bytes_to_send"],
                    "patients_protected": 3, "studies_removed": 0, "instances_refused": 0}
    assert pacs.posts == 4
    saved = json.loads(Path(record_path).read_text())
    assert sorted(saved["studies"]) == sorted(s["id"] for s in manifest)
    again = content.compare(pacs, manifest, content.load_record(record_path), True)
    assert again["send"] == {} and again["protect"] == []
    assert again["counts"]["studies_present"] == 3


def test_withdrawal_removes_only_studies_the_library_sent(library: Path, tmp_path: Path) -> None:
    manifest = scanner.scan(str(library))[0]
    pacs = FakePacs()
    record_path = str(tmp_path / "fleet-content.json")
    # Study 3 was on the Pi before the library: never the library's to remove.
    pacs.store((library / "case3.dcm").read_bytes())
    status = content.compare(pacs, manifest, content.load_record(record_path), True)
    content.sync(pacs, manifest, content.load_record(record_path), status, staged(library, tmp_path, status),
                 False, record_path)
    smaller = [s for s in manifest if s["uid"] == f"{ROOT_UID}.1"]
    status = content.compare(pacs, smaller, content.load_record(record_path), True)
    assert [w["uid"] for w in status["withdrawn"]] == [f"{ROOT_UID}.2"]
    assert status["counts"]["withdrawn_present"] == 1
    # Not asked: nothing removed, the record keeps them.
    done, _, dirty = content.sync(pacs, smaller, content.load_record(record_path), status, None, False, record_path)
    assert done["studies_removed"] == 0 and not dirty and pacs.deleted == []
    done, _, _ = content.sync(pacs, smaller, content.load_record(record_path), status, None, True, record_path)
    assert done["studies_removed"] == 1
    removed = next(s for s in manifest if s["uid"] == f"{ROOT_UID}.2")
    assert pacs.deleted == [removed["id"]]
    assert pacs.instances_of(f"{ROOT_UID}.3"), "a study the library did not send was removed"
    saved = json.loads(Path(record_path).read_text())
    assert removed["id"] not in saved["studies"]


def test_space_check_counts_staging_and_storage_on_one_disk(tmp_path: Path) -> None:
    ok = content.space_check(str(tmp_path / "staging"), str(tmp_path / "storage"), 1024, 0)
    assert ok["ok"]
    huge = content.space_check(str(tmp_path / "staging"), str(tmp_path / "storage"), 1 << 60, 0)
    assert not huge["ok"] and "MB free" in huge["message"]
    assert content.space_check(str(tmp_path), str(tmp_path), 0, 10 ** 9)["ok"], "nothing to send needs no room"


def test_a_file_pipacs_refuses_is_a_warning_not_a_stop(library: Path, tmp_path: Path) -> None:
    instance(library / "refused.dcm", "REFUSE-ME", 4, 1, 1)
    manifest = scanner.scan(str(library))[0]
    pacs = FakePacs()
    record_path = str(tmp_path / "fleet-content.json")
    status = content.compare(pacs, manifest, content.load_record(record_path), True)
    done, warnings, _ = content.sync(pacs, manifest, content.load_record(record_path), status,
                                     staged(library, tmp_path, status), False, record_path)
    assert done["instances_refused"] == 1 and done["instances_sent"] == 5 and done["studies_sent"] == 3
    assert len(warnings) == 1 and "refused" in warnings[0]
