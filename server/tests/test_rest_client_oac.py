"""The common flows with orthanc-api-client (the Orthanc team's Python client) against pipacs.

Each test starts its own pipacs and drives it only through the client's own API, as an
application written for Orthanc would: upload, list, find, download, archive, metadata,
changes, modification, delete, and DICOM echo/store to dcmtk's storescp configured as a
``DicomModalities`` entry. Routes the client reaches that Orthanc 1.10 has no answer for
either (labels, ``ResponseContent`` in /tools/find) are left out.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest
from orthanc_api_client import (
    BadFileFormat,
    HttpError,
    InstancesSet,
    JobStatus,
    JobType,
    OrthancApiClient,
    ResourceNotFound,
)
from orthanc_api_client.change import ChangeType, ResourceType

from pipacs.ids import resource_ids
from test_rest_resources import uids


def client(p: Any) -> OrthancApiClient:
    return OrthancApiClient(p.url)


def ids_of(path: Path) -> tuple[str, str, str, str]:
    """(patient, study, series, instance) public IDs of one file."""
    return resource_ids(*uids(path))


@pytest.fixture
def oac(pipacs: Any) -> OrthancApiClient:
    o = client(pipacs)
    assert o.wait_started(timeout=10)
    return o


def test_upload_file_bytes_folder_and_zip(oac: OrthancApiClient, small_data: list[Path],
                                          tmp_path: Path) -> None:
    first = small_data[0]
    assert oac.upload_file(first) == [ids_of(first)[3]]
    assert oac.upload(first.read_bytes()) == [ids_of(first)[3]]  # AlreadyStored: same ID
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    for i, path in enumerate(small_data[1:10]):
        (folder / ("sub" if i % 2 else "") / f"{i}.dcm").write_bytes(path.read_bytes())
    (folder / "notes.txt").write_text("not DICOM")
    (folder / ".hidden.dcm").write_bytes(b"skipped")
    uploaded = oac.upload_folder(str(folder), skip_extensions=[".txt"])
    assert sorted(uploaded) == sorted(ids_of(p)[3] for p in small_data[1:10])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, path in enumerate(small_data[10:20]):
            zf.writestr(f"z/{i}.dcm", path.read_bytes())
    assert sorted(oac.upload(buf.getvalue())) == sorted(ids_of(p)[3] for p in small_data[10:20])
    with pytest.raises(BadFileFormat):
        oac.upload(b"not a DICOM file")
    assert oac.upload(b"not a DICOM file", ignore_errors=True) == []
    stats = oac.get_statistics()
    assert stats.instances_count == 20 and stats.series_count == 2
    assert stats.studies_count == 1 and stats.patients_count == 1
    assert stats.total_disk_size == sum(p.stat().st_size for p in small_data[:20])


def test_lists_and_resource_objects(oac: OrthancApiClient, small_data: list[Path]) -> None:
    for path in small_data[:40]:  # one patient: 2 studies x 2 series x 10 instances
        oac.upload_file(path)
    patient_id, study_id, series_id, instance_id = ids_of(small_data[0])
    assert oac.patients.get_all_ids() == [patient_id]
    assert len(oac.studies.get_all_ids()) == 2
    assert len(oac.series.get_all_ids()) == 4
    assert len(oac.instances.get_all_ids()) == 40

    patient = oac.patients.get(patient_id)
    ds = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    assert patient.dicom_id == ds.PatientID
    assert patient.main_dicom_tags.get("PatientName") == str(ds.PatientName)
    assert len(patient.info.studies_ids) == 2
    assert patient.statistics.instances_count == 40 and patient.statistics.studies_count == 2
    assert oac.patients.get_modalities(patient_id) == {"CT", "MR"}
    assert len(oac.patients.get_instances_ids(patient_id)) == 40

    study = oac.studies.get(study_id)
    assert study.dicom_id == ds.StudyInstanceUID
    assert study.info.patient_orthanc_id == patient_id
    assert study.patient_main_dicom_tags.get("PatientID") == ds.PatientID
    assert study.statistics.series_count == 2 and study.statistics.instances_count == 20
    assert study.last_update is not None
    assert isinstance(study.is_stable, bool)
    assert [s.orthanc_id for s in study.series] == oac.studies.get_series_ids(study_id)
    assert oac.studies.get_parent_patient_id(study_id) == patient_id

    series = oac.series.get(series_id)
    assert series.dicom_id == ds.SeriesInstanceUID
    assert series.main_dicom_tags.get("Modality") == ds.Modality
    assert series.study.orthanc_id == study_id
    assert series.statistics.instances_count == 10
    assert int(series.statistics.disk_size) > 0
    assert len(series.instances) == 10
    assert oac.series.get_parent_patient_id(series_id) == patient_id

    instance = oac.instances.get(instance_id)
    assert instance.dicom_id == ds.SOPInstanceUID
    assert instance.series.orthanc_id == series_id
    assert instance.tags.get("PatientID") == ds.PatientID
    assert instance.tags.get("0020,000d") == ds.StudyInstanceUID
    assert oac.instances.get_parent_series_id(instance_id) == series_id
    assert oac.instances.get_parent_study_id(instance_id) == study_id
    assert oac.instances.get_parent_patient_id(instance_id) == patient_id
    assert oac.studies.get_tags(study_id).get("StudyInstanceUID") == ds.StudyInstanceUID
    assert oac.instances.exists(instance_id) and not oac.instances.exists("no-such-id")


def test_find_and_lookup(oac: OrthancApiClient, small_data: list[Path]) -> None:
    for path in small_data:  # 2 patients
        oac.upload_file(path)
    ds = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    patient_id, study_id, series_id, instance_id = ids_of(small_data[0])
    name = str(ds.PatientName)

    studies = oac.studies.find(query={"PatientName": name})
    assert len(studies) == 2 and {s.info.patient_orthanc_id for s in studies} == {patient_id}
    assert study_id in {s.orthanc_id for s in studies}
    assert oac.studies.find(query={"PatientName": name.lower()}) == []  # case sensitive
    assert len(oac.studies.find(query={"PatientName": name.lower()}, case_sensitive=False)) == 2
    assert len(oac.studies.find(query={"PatientName": name[:3] + "*"})) >= 2
    assert len(oac.studies.find(query={})) == 4
    assert len(oac.studies.find(query={}, limit=3)) == 3
    patients = oac.patients.find(query={"PatientID": str(ds.PatientID)})
    assert [p.orthanc_id for p in patients] == [patient_id]
    assert patients[0].main_dicom_tags.get("PatientName") == name

    assert oac.patients.lookup(str(ds.PatientID)) == patient_id
    assert oac.studies.lookup(str(ds.StudyInstanceUID)) == study_id
    assert oac.series.lookup(str(ds.SeriesInstanceUID)) == series_id
    assert oac.instances.lookup(str(ds.SOPInstanceUID)) == instance_id
    assert oac.studies.lookup("1.2.3.4.5.6.7.8.9") is None
    assert oac.lookup(str(ds.StudyInstanceUID)) == [study_id]


def test_download_archive_and_media(oac: OrthancApiClient, small_data: list[Path],
                                    tmp_path: Path) -> None:
    for path in small_data[:20]:
        oac.upload_file(path)
    patient_id, study_id, series_id, instance_id = ids_of(small_data[0])
    assert oac.instances.get_file(instance_id) == small_data[0].read_bytes()
    downloaded = oac.series.download_instances(series_id, str(tmp_path))
    assert len(downloaded) == 10
    by_id = {ids_of(p)[3]: p for p in small_data[:20]}
    for d in downloaded:
        assert Path(d.path).read_bytes() == by_id[d.instance_id].read_bytes()

    archive = tmp_path / "study.zip"
    oac.studies.download_archive(study_id, str(archive))
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        assert len(names) == 20
        assert {zf.read(n) for n in names} == {p.read_bytes() for p in small_data[:20]}
    media = tmp_path / "patient-media.zip"
    oac.patients.download_media(patient_id, str(media))
    with zipfile.ZipFile(media) as zf:
        assert "DICOMDIR" in zf.namelist()
        files = [n for n in zf.namelist() if not n.endswith("/") and n != "DICOMDIR"]
        assert len(files) == 20  # the layout differs from Orthanc's IMAGES/IM<n>

    chosen = InstancesSet.from_series(oac, series_id=series_id)
    assert len(chosen.instances_ids) == 10
    chosen.download_archive(str(tmp_path / "set.zip"))  # POST /tools/create-archive
    with zipfile.ZipFile(tmp_path / "set.zip") as zf:
        assert len([n for n in zf.namelist() if not n.endswith("/")]) == 10


def test_metadata_and_changes(make_pipacs: Any, small_data: list[Path]) -> None:
    p = make_pipacs(UserMetadata={"Note": 1030})
    oac = client(p)
    oac.upload_file(small_data[0])
    _patient_id, study_id, _series_id, instance_id = ids_of(small_data[0])
    metadata = oac.instances.get_metadata(instance_id)
    assert metadata["Origin"] == "RestApi"
    assert metadata["TransferSyntax"] == str(
        pydicom.dcmread(small_data[0], stop_before_pixels=True).file_meta.TransferSyntaxUID)
    assert oac.instances.get(instance_id).get_metadata("SopClassUid") == metadata["SopClassUid"]
    assert oac.instances.get_string_metadata(instance_id, "Origin") == "RestApi"
    assert not oac.studies.has_metadata(study_id, "Note")
    oac.studies.set_string_metadata(study_id, "Note", "checked by hand")
    assert oac.studies.get_string_metadata(study_id, "Note") == "checked by hand"
    assert oac.studies.get_string_metadata(study_id, "NoSuchName", default_value="x") == "x"
    with pytest.raises(HttpError):
        oac.instances.set_string_metadata(instance_id, "ReceptionDate", "rewritten")

    changes, last, done = oac.get_changes()
    assert done is True and last == changes[-1].sequence_id
    kinds = {(c.change_type, c.resource_type) for c in changes}
    assert {(ChangeType.NEW_INSTANCE, ResourceType.INSTANCE),
            (ChangeType.NEW_SERIES, ResourceType.SERIES),
            (ChangeType.NEW_STUDY, ResourceType.STUDY),
            (ChangeType.NEW_PATIENT, ResourceType.PATIENT)} <= kinds
    first, last_of_page, done = oac.get_changes(limit=2)
    assert len(first) == 2 and done is False
    rest, _, done = oac.get_changes(since=last_of_page)
    assert [c.sequence_id for c in first + rest] == [c.sequence_id for c in changes]


def test_modify_anonymize_and_jobs(oac: OrthancApiClient, small_data: list[Path]) -> None:
    for path in small_data[:10]:
        oac.upload_file(path)
    _patient_id, study_id, series_id, instance_id = ids_of(small_data[0])
    modified = oac.series.modify(series_id, replace_tags={"SeriesDescription": "renamed"},
                                 delete_original=False)
    assert modified != series_id
    assert oac.series.get(modified).main_dicom_tags.get("SeriesDescription") == "renamed"
    assert oac.series.exists(series_id)
    new_file = oac.instances.modify(instance_id, replace_tags={"InstitutionName": "Here"})
    ds = pydicom.dcmread(io.BytesIO(new_file))
    assert ds.InstitutionName == "Here" and ds.SOPInstanceUID != uids(small_data[0])[3]
    anonymized = oac.studies.anonymize(study_id, delete_original=True)
    assert anonymized != study_id and not oac.studies.exists(study_id)
    assert oac.studies.get(anonymized).statistics.instances_count == 20
    jobs = oac.jobs.get_all_ids()
    assert jobs and all(isinstance(j, str) for j in jobs)


def test_delete(oac: OrthancApiClient, small_data: list[Path]) -> None:
    for path in small_data:
        oac.upload_file(path)
    patient_id, study_id, series_id, instance_id = ids_of(small_data[0])
    oac.instances.delete(instance_id)
    assert not oac.instances.exists(instance_id)
    with pytest.raises(ResourceNotFound):
        oac.instances.delete(instance_id)
    oac.instances.delete(instance_id, ignore_errors=True)
    oac.series.delete(orthanc_ids=[series_id])
    assert oac.studies.get(study_id).statistics.instances_count == 10
    oac.studies.delete(study_id)
    assert oac.patients.get(patient_id).statistics.studies_count == 1
    assert oac.get_statistics().instances_count == 60
    oac.delete_all_content()
    assert oac.get_statistics().instances_count == 0
    assert oac.patients.get_all_ids() == []


def test_modality_echo_and_store(make_pipacs: Any, storescp: Any,
                                 small_data: list[Path]) -> None:
    p = make_pipacs(DicomModalities={"scp": [storescp.aet, "127.0.0.1", storescp.port]})
    oac = client(p)
    for path in small_data[:20]:
        oac.upload_file(path)
    _patient_id, study_id, series_id, instance_id = ids_of(small_data[0])
    assert oac.modalities.get_all_ids() == ["scp"]
    assert oac.modalities.get_configuration("scp")["AET"] == storescp.aet
    assert oac.modalities.get_id_from_aet(storescp.aet) == "scp"
    with pytest.raises(ResourceNotFound):
        oac.modalities.get_configuration("nobody")
    assert oac.post("modalities/scp/echo", json={}).json() == {}
    with pytest.raises(ResourceNotFound):
        oac.post("modalities/nobody/echo", json={})

    oac.modalities.send("scp", instance_id)
    assert len(storescp.files()) == 1
    job = oac.modalities.send_async("scp", [series_id])
    assert job.wait_completed(timeout=30, polling_interval=0.1)
    assert job.info.status == JobStatus.SUCCESS
    assert job.info.type == JobType.DICOM_MODALITY_STORE
    assert job.content["InstancesCount"] == 10 and job.content["FailedInstancesCount"] == 0
    oac.modalities.store("scp", study_id, timeout=30)
    received = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
                for f in storescp.files()}
    assert received == {uids(x)[3] for x in small_data[:20]}
