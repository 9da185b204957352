"""Write the plugins role's sample worklist entries (roles/plugins/files/worklists/*.wl).

    python tests/make_worklist_samples.py [FOLDER]

Deterministic (fixed UIDs and dates), so tests/test_worklist_samples.py can check that the
shipped files are exactly what this script makes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = ROOT / "roles" / "plugins" / "files" / "worklists"
# An example UID root (2.25 = UUID-derived) reserved for these samples.
UID_ROOT = "2.25.27182818284590452353602874713526624977"

SAMPLES = [
    # file, patient name, id, birth date, sex, accession, modality, procedure, date, time
    ("ct-chest.wl", "Student^Alice", "PIPACS-WL-001", "19800214", "F", "ACC0001", "CT",
     "CT chest without contrast", "20250101", "090000"),
    ("cr-hand.wl", "Student^Bob", "PIPACS-WL-002", "19920730", "M", "ACC0002", "CR",
     "Left hand, two views", "20250101", "103000"),
]


def entry(index: int, name: str, pid: str, birth: str, sex: str, accession: str,
          modality: str, procedure: str, date: str, time: str) -> Dataset:
    meta = FileMetaDataset()
    meta.update({
        "MediaStorageSOPClassUID": "1.2.840.10008.5.1.4.31",  # Modality Worklist FIND
        "MediaStorageSOPInstanceUID": f"{UID_ROOT}.{index}.1",
        "TransferSyntaxUID": ExplicitVRLittleEndian,
        "ImplementationClassUID": f"{UID_ROOT}.0",
    })
    step = Dataset()
    step.update({
        "Modality": modality,
        "ScheduledStationAETitle": "PIPACS",
        "ScheduledProcedureStepStartDate": date,
        "ScheduledProcedureStepStartTime": time,
        "ScheduledPerformingPhysicianName": "Teacher^Classroom",
        "ScheduledProcedureStepDescription": procedure,
        "ScheduledProcedureStepID": f"SPS{index:04d}",
    })
    ds = Dataset()
    ds.file_meta = meta
    ds.update({
        "SpecificCharacterSet": "ISO_IR 100",
        "PatientName": name,
        "PatientID": pid,
        "PatientBirthDate": birth,
        "PatientSex": sex,
        "AccessionNumber": accession,
        "RequestedProcedureID": f"RP{index:04d}",
        "RequestedProcedureDescription": procedure,
        "StudyInstanceUID": f"{UID_ROOT}.{index}.2",
        "ScheduledProcedureStepSequence": Sequence([step]),
    })
    return ds


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (filename, *fields) in enumerate(SAMPLES, start=1):
        path = folder / filename
        entry(index, *fields).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FOLDER):
        print(p)
