"""Instance content, archives, modification and jobs through the REST API of a running pipacs."""

from __future__ import annotations

import io
import json
import time
import zipfile
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pipacs.ids import resource_ids
from test_rest_resources import client, request, uids, upload


def part10(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def base_dataset(sop_class: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "CONTENT1"
    ds.PatientName = "Content^Test"
    ds.Modality = "OT"
    return ds


def multiframe(frames: int = 3) -> tuple[bytes, np.ndarray]:
    ds = base_dataset("1.2.840.10008.5.1.4.1.1.7.3")  # multi-frame grayscale word
    pixels = (np.arange(frames * 8 * 10, dtype=np.uint16).reshape(frames, 8, 10) * 37) % 4000
    ds.Rows, ds.Columns, ds.NumberOfFrames = 8, 10, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    return part10(ds), pixels


def pdf_instance() -> tuple[bytes, bytes]:
    document = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"
    ds = base_dataset("1.2.840.10008.5.1.4.1.1.104.1")
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = document + b"\x00"  # padded to an even length
    return part10(ds), document


def instance_id(raw: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(raw))
    return resource_ids(str(ds.PatientID), str(ds.StudyInstanceUID),
                        str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))[3]


def wait_job(p: Any, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = json.loads(request(f"{p.url}/jobs/{job_id}")[2])
        if job["State"] in ("Success", "Failure"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_file_tags_and_header(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, small_data[0])
    iid = resource_ids(*uids(small_data[0]))[3]
    o = client(pipacs)
    assert o.get_instances_id_file(iid) == small_data[0].read_bytes()
    ds = pydicom.dcmread(small_data[0])
    tags = o.get_instances_id_tags(iid)
    assert tags["0010,0010"] == {"Name": "PatientName", "Type": "String",
                                 "Value": str(ds.PatientName)}
    assert tags["7fe0,0010"]["Type"] == "Null"
    simplified = o.get_instances_id_simplified_tags(iid)
    assert simplified["SOPInstanceUID"] == ds.SOPInstanceUID
    assert simplified["Rows"] == str(ds.Rows)
    assert o.get_instances_id_tags(iid, params={"short": ""})["0020,000d"] == \
        ds.StudyInstanceUID
    header = o.get_instances_id_header(iid)
    assert header["0002,0010"]["Value"] == ds.file_meta.TransferSyntaxUID
    shared = o.get_series_id_shared_tags(resource_ids(*uids(small_data[0]))[2],
                                         params={"simplify": ""})
    assert shared["SeriesInstanceUID"] == ds.SeriesInstanceUID


def test_frames_rendered_one_at_a_time(pipacs) -> None:  # type: ignore[no-untyped-def]
    raw, pixels = multiframe(3)
    client(pipacs).post_instances(raw)
    iid = instance_id(raw)
    url = f"{pipacs.url}/instances/{iid}"
    assert json.loads(request(url + "/frames")[2]) == [0, 1, 2]
    assert request(url + "/frames/1/raw")[2] == pixels[1].tobytes()
    status, headers, body = request(url + "/frames/2/image-uint16")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), pixels[2])
    preview = np.asarray(Image.open(io.BytesIO(request(url + "/frames/0/preview")[2])))
    assert preview.shape == (8, 10) and preview.min() == 0 and preview.max() == 255
    status, headers, body = request(url + "/rendered?window-center=100&window-width=50",
                                    headers={"Accept": "image/jpeg"})
    assert headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    status, _, body = request(url + "/frames/0/rendered?width=20")
    assert Image.open(io.BytesIO(body)).size == (20, 16)
    uint8 = np.asarray(Image.open(io.BytesIO(request(url + "/image-uint8")[2])))
    assert np.array_equal(uint8, np.clip(pixels[0], 0, 255))
    assert request(url + "/frames/3/preview")[0] == 404


def test_pdf(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    raw, document = pdf_instance()
    client(pipacs).post_instances(raw)
    status, headers, body = request(f"{pipacs.url}/instances/{instance_id(raw)}/pdf")
    assert status == 200 and headers["Content-Type"] == "application/pdf"
    assert body == document
    upload(pipacs, small_data[0])
    iid = resource_ids(*uids(small_data[0]))[3]
    assert request(f"{pipacs.url}/instances/{iid}/pdf")[0] == 404


def test_archive_is_streamed_and_complete(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, *small_data[:20])
    study = resource_ids(*uids(small_data[0]))[1]
    status, headers, body = request(f"{pipacs.url}/studies/{study}/archive")
    assert status == 200 and headers["Content-Type"] == "application/zip"
    assert headers.get("Transfer-Encoding") == "chunked"  # streamed, no Content-Length
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        names = zf.namelist()
        assert len(names) == 20
        assert {zf.read(n) for n in names} == {p.read_bytes() for p in small_data[:20]}
    assert all(n.count("/") == 3 and n.endswith(".dcm") for n in names)
    assert pydicom.dcmread(small_data[0]).PatientID in names[0]


def test_media_has_a_dicomdir(pipacs, small_data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, *small_data[:10])
    series = resource_ids(*uids(small_data[0]))[2]
    status, _, body = request(f"{pipacs.url}/series/{series}/media")
    assert status == 200
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        zf.extractall(tmp_path / "media")
    fs = FileSet(tmp_path / "media" / "DICOMDIR")
    assert len(fs) == 10
    assert {str(i.SOPInstanceUID) for i in fs} == {uids(p)[3] for p in small_data[:10]}


def test_create_archive_job(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, *small_data[:20])
    ids = [resource_ids(*uids(p))[2] for p in (small_data[0], small_data[10])]
    status, _, body = request(f"{pipacs.url}/tools/create-archive", "POST",
                              json.dumps({"Resources": ids, "Synchronous": False}))
    assert status == 200
    job = wait_job(pipacs, json.loads(body)["ID"])
    assert job["State"] == "Success" and job["Type"] == "Archive"
    assert job["Content"]["InstancesCount"] == 20
    status, _, archive = request(f"{pipacs.url}/jobs/{job['ID']}/archive")
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert len(zf.namelist()) == 20
    synchronous = request(f"{pipacs.url}/tools/create-archive", "POST", json.dumps(ids))
    with zipfile.ZipFile(io.BytesIO(synchronous[2])) as zf:
        assert len(zf.namelist()) == 20


def test_modify_series_stores_new_instances(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, *small_data[:10])
    ids = resource_ids(*uids(small_data[0]))
    o = client(pipacs)
    answer = o.post_series_id_modify(ids[2], {"Replace": {"SeriesDescription": "changed"}})
    assert answer["Type"] == "Series" and answer["InstancesCount"] == 10
    assert answer["IsAnonymization"] is False and answer["ID"] != ids[2]
    new = o.get_series_id(answer["ID"])
    assert new["MainDicomTags"]["SeriesDescription"] == "changed"
    assert new["ParentStudy"] == ids[1]  # same study, new series UID
    assert o.get_series_id_metadata_name(answer["ID"], "ModifiedFrom") == ids[2]
    assert pipacs.get("/statistics")["CountInstances"] == 20
    status, _, body = request(f"{pipacs.url}/series/{ids[2]}/modify", "POST",
                              json.dumps({"Replace": {"SeriesInstanceUID": "1.2.3"}}))
    assert status == 400 and b"Force" in body


def test_modify_instance_answers_the_file(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, small_data[0])
    iid = resource_ids(*uids(small_data[0]))[3]
    status, headers, body = request(f"{pipacs.url}/instances/{iid}/modify", "POST",
                                    json.dumps({"Replace": {"PatientName": "NEW^NAME"},
                                                "Remove": ["StationName"]}))
    assert status == 200 and headers["Content-Type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(body))
    assert str(ds.PatientName) == "NEW^NAME" and "StationName" not in ds
    assert pipacs.get("/statistics")["CountInstances"] == 1


def test_anonymize_study_asynchronously(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, *small_data[:20])
    ids = resource_ids(*uids(small_data[0]))
    status, _, body = request(f"{pipacs.url}/studies/{ids[1]}/anonymize", "POST",
                              json.dumps({"Asynchronous": True}))
    assert status == 200 and set(json.loads(body)) == {"ID", "Path"}
    job = wait_job(pipacs, json.loads(body)["ID"])
    assert job["State"] == "Success" and job["Progress"] == 100
    content = job["Content"]
    assert content["IsAnonymization"] is True and content["InstancesCount"] == 20
    new_study = client(pipacs).get_studies_id(content["ID"])
    assert new_study["PatientMainDicomTags"]["PatientName"] == "Anonymized"
    assert new_study["PatientMainDicomTags"]["PatientID"] != uids(small_data[0])[0]
    assert new_study["MainDicomTags"]["StudyInstanceUID"] != uids(small_data[0])[1]
    inst = new_study["Series"][0]
    tags = client(pipacs).get_series_id_shared_tags(inst, params={"simplify": ""})
    assert tags["PatientIdentityRemoved"] == "YES"
    assert "InstitutionName" not in tags
    assert json.loads(request(f"{pipacs.url}/jobs")[2]) == [job["ID"]]


def test_keep_source_false_removes_the_original(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, *small_data[:10])
    ids = resource_ids(*uids(small_data[0]))
    client(pipacs).post_series_id_modify(ids[2], {"Replace": {"SeriesDescription": "x"},
                                                  "KeepSource": False})
    assert request(f"{pipacs.url}/series/{ids[2]}")[0] == 404
    assert pipacs.get("/statistics")["CountInstances"] == 10


def test_limit_jobs_keeps_the_last_ones(make_pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(LimitJobs=2)
    upload(p, *small_data[:10])
    series = resource_ids(*uids(small_data[0]))[2]
    for n in range(3):
        client(p).post_series_id_modify(series, {"Replace": {"SeriesDescription": str(n)}})
    jobs = json.loads(request(f"{p.url}/jobs?expand")[2])
    assert len(jobs) == 2
    assert [j["Content"]["InstancesCount"] for j in jobs] == [10, 10]


@pytest.mark.parametrize("body", ["{", '{"Replace": "x"}', '{"Remove": ["NoSuchTag"]}'])
def test_bad_modification_bodies(pipacs, small_data, body) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, small_data[0])
    series = resource_ids(*uids(small_data[0]))[2]
    assert request(f"{pipacs.url}/series/{series}/modify", "POST", body)[0] == 400
    assert pipacs.get("/statistics")["CountInstances"] == 1
