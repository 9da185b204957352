"""The plugins role ships exactly the worklist samples tests/make_worklist_samples.py makes."""

from pathlib import Path

import make_worklist_samples as samples
from pydicom import dcmread


def test_shipped_samples_are_up_to_date(tmp_path: Path) -> None:
    made = {p.name: p.read_bytes() for p in samples.write(tmp_path)}
    shipped = {p.name: p.read_bytes() for p in samples.DEFAULT_FOLDER.glob("*.wl")}
    assert shipped == made, "run: python tests/make_worklist_samples.py"


def test_samples_are_worklist_entries() -> None:
    for path in samples.DEFAULT_FOLDER.glob("*.wl"):
        ds = dcmread(path)
        assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.31"
        assert ds.PatientID.startswith("PIPACS-WL-")
        assert ds.ScheduledProcedureStepSequence[0].Modality in {"CT", "CR"}
