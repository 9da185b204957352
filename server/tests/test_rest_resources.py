"""The REST API's resources against a running pipacs, with pyorthanc and plain HTTP clients."""

from __future__ import annotations

import gzip
import io
import json
import time
import zipfile
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pyorthanc
import pytest

from conftest import http_request
from pipacs.ids import resource_ids


def request(url: str, method: str = "GET", data: bytes | str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """(status, headers, body) of one request (a str body is sent UTF-8 encoded); error
    statuses are answers, not exceptions."""
    return http_request(url, method, data.encode() if isinstance(data, str) else data, headers)


def client(p: Any) -> pyorthanc.Orthanc:
    return pyorthanc.Orthanc(p.url, timeout=30)


def upload(p: Any, *paths: Path) -> list[dict[str, Any]]:
    o = client(p)
    return [o.post_instances(path.read_bytes()) for path in paths]


def uids(path: Path) -> tuple[str, str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return (str(ds.PatientID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID))


def stored_files(p: Any) -> list[Path]:
    return [f for f in p.storage.rglob("*") if f.is_file() and not f.name.startswith(".")]


def test_upload_answers_like_orthanc(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    first = upload(pipacs, small_data[0])[0]
    ids = resource_ids(*uids(small_data[0]))
    assert first == {"ID": ids[3], "ParentPatient": ids[0], "ParentStudy": ids[1],
                     "ParentSeries": ids[2], "Path": f"/instances/{ids[3]}",
                     "Status": "Success"}
    again = upload(pipacs, small_data[0])[0]
    assert again["Status"] == "AlreadyStored"
    assert len(stored_files(pipacs)) == 1


@pytest.mark.parametrize("junk", [b"hello", b"", b"\x00" * 200, b"PK\x03\x04broken zip"])
def test_non_dicom_upload_is_400_and_stores_nothing(pipacs, junk) -> None:  # type: ignore[no-untyped-def]
    status, _, body = request(pipacs.url + "/instances", "POST", junk)
    assert status == 400
    answer = json.loads(body)
    assert answer["HttpStatus"] == 400 and answer["Uri"] == "/instances"
    assert stored_files(pipacs) == []
    assert pipacs.get("/statistics")["CountInstances"] == 0


def test_zip_upload_stores_every_dicom_file(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, path in enumerate(small_data[:5]):
            zf.writestr(f"dir/{i}.dcm", path.read_bytes())
        zf.writestr("README.txt", "not DICOM")
    answer = client(pipacs).post_instances(buf.getvalue())
    assert isinstance(answer, list) and len(answer) == 5
    assert {a["Status"] for a in answer} == {"Success"}
    assert {a["ID"] for a in answer} == {resource_ids(*uids(p))[3] for p in small_data[:5]}
    assert pipacs.get("/statistics")["CountInstances"] == 5


def test_lists_expansion_and_paging(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, *small_data[:20])  # one patient, one study (CT), two series
    o = client(pipacs)
    assert len(o.get_patients()) == 1
    assert len(o.get_studies()) == 1
    assert len(o.get_series()) == 2
    instances = o.get_instances()
    assert len(instances) == 20
    assert o.get_instances(params={"since": 5, "limit": 3}) == instances[5:8]
    expanded = o.get_series(params={"expand": ""})
    assert {s["Type"] for s in expanded} == {"Series"}
    assert sum(len(s["Instances"]) for s in expanded) == 20


def test_resource_json_shapes(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, *small_data[:10])
    ids = resource_ids(*uids(small_data[0]))
    o = client(pipacs)
    patient = o.get_patients_id(ids[0])
    assert set(patient) >= {"ID", "Type", "MainDicomTags", "Studies", "IsStable", "LastUpdate",
                            "IsProtected"}
    assert patient["Studies"] == [ids[1]] and patient["IsProtected"] is False
    study = o.get_studies_id(ids[1])
    assert study["ParentPatient"] == ids[0] and study["Series"] == [ids[2]]
    assert study["PatientMainDicomTags"]["PatientID"] == uids(small_data[0])[0]
    assert "PatientID" not in study["MainDicomTags"]
    series = o.get_series_id(ids[2])
    assert series["Status"] == "Unknown" and series["ExpectedNumberOfInstances"] is None
    assert len(series["Instances"]) == 10 and series["ParentStudy"] == ids[1]
    instance = o.get_instances_id(ids[3])
    assert instance["ParentSeries"] == ids[2]
    assert instance["FileSize"] == small_data[0].stat().st_size
    assert isinstance(instance["IndexInSeries"], int)
    assert instance["MainDicomTags"]["SOPInstanceUID"] == uids(small_data[0])[3]


def test_children_and_parents(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, *small_data[:40])  # the first patient: 2 studies, 4 series
    ids = resource_ids(*uids(small_data[0]))
    o = client(pipacs)
    assert len(o.get_patients_id_studies(ids[0])) == 2
    assert len(o.get_patients_id_series(ids[0])) == 4
    assert len(o.get_patients_id_instances(ids[0])) == 40
    assert len(o.get_studies_id_instances(ids[1])) == 20
    assert o.get_instances_id_patient(ids[3])["ID"] == ids[0]
    assert o.get_instances_id_study(ids[3])["ID"] == ids[1]
    assert o.get_instances_id_series(ids[3])["ID"] == ids[2]
    assert o.get_series_id_study(ids[2])["ID"] == ids[1]
    status, _, _ = request(f"{pipacs.url}/patients/{ids[0]}/patient")
    assert status == 404


def test_statistics_metadata_and_protection(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, *small_data[:10])
    ids = resource_ids(*uids(small_data[0]))
    o = client(pipacs)
    stats = o.get_series_id_statistics(ids[2])
    assert stats["CountInstances"] == 10
    assert int(stats["DiskSize"]) == sum(p.stat().st_size for p in small_data[:10])
    names = o.get_instances_id_metadata(ids[3])
    assert {"ReceptionDate", "Origin", "TransferSyntax", "SopClassUid"} <= set(names)
    assert o.get_instances_id_metadata_name(ids[3], "Origin") == "RestApi"
    url = f"{pipacs.url}/instances/{ids[3]}/metadata"
    assert request(url + "/ReceptionDate", "PUT", "x")[0] == 403
    assert request(url + "/1025", "PUT", "hello")[0] == 200
    assert request(url + "/1025")[2] == b"hello"
    assert request(url + "/1025", "DELETE")[0] == 200
    assert request(url + "/1025")[0] == 404
    assert request(f"{url}?expand")[0] == 200
    purl = f"{pipacs.url}/patients/{ids[0]}/protected"
    assert request(purl)[2] == b"0"
    assert request(purl, "PUT", "1")[0] == 200
    assert request(purl)[2] == b"1"
    assert o.get_patients_id(ids[0])["IsProtected"] is True
    assert request(purl, "PUT", "maybe")[0] == 400
    attachments = f"{pipacs.url}/instances/{ids[3]}/attachments"
    assert json.loads(request(attachments)[2]) == ["dicom"]
    assert request(attachments + "/dicom/data")[2] == small_data[0].read_bytes()
    assert int(request(attachments + "/dicom/size")[2]) == small_data[0].stat().st_size


def test_delete_answers_the_remaining_ancestor(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, *small_data[:20])
    ids = resource_ids(*uids(small_data[0]))
    status, _, body = request(f"{pipacs.url}/series/{ids[2]}", "DELETE")
    assert status == 200
    assert json.loads(body)["RemainingAncestor"]["ID"] == ids[1]
    assert request(f"{pipacs.url}/series/{ids[2]}")[0] == 404
    assert pipacs.get("/statistics")["CountInstances"] == 10
    assert len(stored_files(pipacs)) == 10
    status, _, body = request(f"{pipacs.url}/patients/{ids[0]}", "DELETE")
    assert status == 200 and json.loads(body) == {"RemainingAncestor": None}
    assert stored_files(pipacs) == []
    assert request(f"{pipacs.url}/patients/{ids[0]}", "DELETE")[0] == 404


def test_errors_as_orthanc_gives_them(pipacs) -> None:  # type: ignore[no-untyped-def]
    status, _, body = request(pipacs.url + "/instances/nope")
    assert status == 404
    assert json.loads(body)["OrthancStatus"] == 17
    status, _, body = request(pipacs.url + "/tools/find", "POST", "{bad json")
    assert status == 400 and json.loads(body)["HttpStatus"] == 400
    assert request(pipacs.url + "/tools/find", "POST", "[1, 2]")[0] == 400
    assert request(pipacs.url + "/tools/find", "POST", '{"Level": "Nope", "Query": {}}')[0] \
        == 400


def test_errors_without_description(make_pipacs) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(HttpDescribeErrors=False)
    status, _, body = request(p.url + "/instances/nope")
    assert status == 404 and body == b""


def test_tools_find(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, *small_data)
    o = client(pipacs)
    first = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    name = str(first.PatientName)
    studies = o.post_tools_find({"Level": "Study", "Query": {"PatientName": name.lower()}})
    assert len(studies) == 2  # PN is case-insensitive by default
    assert o.post_tools_find({"Level": "Study", "Query": {"PatientName": name.lower()},
                              "CaseSensitive": True}) == []
    wild = o.post_tools_find({"Level": "Series", "Query": {"PatientName": name[:4] + "*",
                                                           "Modality": "CT"}})
    assert len(wild) == 4  # two patients share the prefix; CT studies have two series
    dated = o.post_tools_find({"Level": "Study", "Query": {"StudyDate": "19000101-"}})
    assert len(dated) == 4
    assert o.post_tools_find({"Level": "Study", "Query": {"StudyDate": "-18991231"}}) == []
    limited = o.post_tools_find({"Level": "Instance", "Query": {}, "Limit": 5, "Since": 10})
    everything = o.post_tools_find({"Level": "Instance", "Query": {}})
    assert limited == everything[10:15]
    expanded = o.post_tools_find({"Level": "Patient", "Query": {"PatientID": first.PatientID},
                                  "Expand": True})
    assert len(expanded) == 1 and expanded[0]["MainDicomTags"]["PatientID"] == first.PatientID
    by_tag = o.post_tools_find({"Level": "Patient", "Query": {"0010,0020": first.PatientID}})
    assert by_tag == [expanded[0]["ID"]]
    modalities = o.post_tools_find({"Level": "Study", "Query": {"ModalitiesInStudy": "MR"}})
    assert len(modalities) == 2


def test_tools_lookup(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, small_data[0])
    u = uids(small_data[0])
    ids = resource_ids(*u)
    for level, value in enumerate(u):
        found = client(pipacs).post_tools_lookup(value)
        assert [f["ID"] for f in found] == [ids[level]]
        assert found[0]["Type"] == ("Patient", "Study", "Series", "Instance")[level]
    assert client(pipacs).post_tools_lookup("nothing-like-this") == []


def test_changes(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, small_data[0])
    changes = client(pipacs).get_changes(params={"limit": 2})
    assert len(changes["Changes"]) == 2 and changes["Done"] is False
    rest = client(pipacs).get_changes(params={"since": changes["Last"], "limit": 100})
    assert rest["Done"] is True and len(rest["Changes"]) == 2
    last = client(pipacs).get_changes(params={"last": ""})
    assert last["Last"] == rest["Last"]


def test_gzip_for_json_never_for_dicom(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, *small_data[:10])
    ids = resource_ids(*uids(small_data[0]))
    _, headers, body = request(f"{pipacs.url}/instances/{ids[3]}/tags",
                               headers={"Accept-Encoding": "gzip"})
    assert headers.get("Content-Encoding") == "gzip"
    assert "0010,0010" in json.loads(gzip.decompress(body))
    _, headers, body = request(f"{pipacs.url}/instances/{ids[3]}/file",
                               headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in headers and body == small_data[0].read_bytes()
    _, headers, _ = request(f"{pipacs.url}/instances/{ids[3]}/tags")
    assert "Content-Encoding" not in headers


def test_gzip_disabled(make_pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(HttpCompressionEnabled=False)
    upload(p, small_data[0])
    ids = resource_ids(*uids(small_data[0]))
    _, headers, _ = request(f"{p.url}/instances/{ids[3]}/tags",
                            headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in headers


def test_authentication(make_pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(AuthenticationEnabled=True, RegisteredUsers={"alice": "s3cret"})
    assert request(p.url + "/system")[0] == 401
    good = pyorthanc.Orthanc(p.url, username="alice", password="s3cret")
    assert good.get_system()["Name"] == "TestPi"
    good.post_instances(small_data[0].read_bytes())
    bad = pyorthanc.Orthanc(p.url, username="alice", password="wrong")
    with pytest.raises(httpx.HTTPError, match="HTTP code: 401"):
        bad.get_system()
    ids = resource_ids(*uids(small_data[0]))
    assert good.get_instances_id_metadata_name(ids[3], "HttpUsername") == "alice"


def test_keep_alive_setting(make_pipacs) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(KeepAlive=False)
    _, headers, _ = request(p.url + "/system")
    assert headers.get("Connection") == "close"
    with httpx.Client() as c:
        r = c.get(p.url + "/system")
        assert r.headers.get("connection") == "close"


def test_log_level_and_plugins(pipacs) -> None:  # type: ignore[no-untyped-def]
    assert request(pipacs.url + "/tools/log-level")[2] == b"verbose"
    assert request(pipacs.url + "/tools/log-level", "PUT", "trace")[0] == 200
    assert request(pipacs.url + "/tools/log-level")[2] == b"trace"
    assert request(pipacs.url + "/tools/log-level", "PUT", "loud")[0] == 400
    assert json.loads(request(pipacs.url + "/plugins")[2]) == []


def test_shutdown(pipacs) -> None:  # type: ignore[no-untyped-def]
    assert request(pipacs.url + "/tools/shutdown", "POST", "")[0] == 200
    assert pipacs.proc.wait(15) == 0
    pipacs.proc = None


def test_reset_restarts_the_server(pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    upload(pipacs, small_data[0])
    pid = pipacs.proc.pid
    assert request(pipacs.url + "/tools/reset", "POST", "")[0] == 200
    deadline = time.monotonic() + 30
    while True:  # the same process runs pipacs again (exec), so wait for it to answer
        try:
            if request(pipacs.url + "/statistics")[0] == 200 and "restarting" in pipacs.log():
                break
        except OSError:
            pass
        assert pipacs.proc.poll() is None, pipacs.log()
        assert time.monotonic() < deadline, pipacs.log()
        time.sleep(0.1)
    assert pipacs.proc.pid == pid
    assert pipacs.get("/statistics")["CountInstances"] == 1
    assert pipacs.log().count("has started") == 2


def test_pyorthanc_high_level_objects(pipacs, small_data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """pyorthanc's resource classes, written for Orthanc, work unchanged."""
    o = client(pipacs)
    pyorthanc.upload(o, str(small_data[0].parents[2]), recursive=True)
    first = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    patients = pyorthanc.find_patients(o, query={"PatientID": str(first.PatientID)})
    assert len(patients) == 1
    patient = patients[0]
    assert patient.patient_id == first.PatientID and patient.name == str(first.PatientName)
    assert len(patient.studies) == 2 and patient.protected is False
    patient.protected = True
    assert patient.protected is True and o.get_patients_id(patient.id_)["IsProtected"] is True
    study = next(s for s in patient.studies if s.uid == first.StudyInstanceUID)
    series = next(s for s in study.series if s.uid == first.SeriesInstanceUID)
    assert series.modality == first.Modality and len(series.instances) == 10
    instance = next(i for i in series.instances if i.uid == first.SOPInstanceUID)
    assert instance.get_dicom_file_content() == small_data[0].read_bytes()
    assert instance.simplified_tags["PatientID"] == first.PatientID
    zipped = tmp_path / "study.zip"
    study.download(str(zipped))
    with zipfile.ZipFile(zipped) as zf:
        assert len(zf.namelist()) == 20
    found = pyorthanc.query_orthanc(o, "Series", query={"Modality": "MR"})
    assert len(found) == 2
