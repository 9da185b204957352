"""DICOMweb against a running pipacs: QIDO, WADO-RS, STOW-RS and WADO-URI with real clients."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image

from conftest import PipacsProcess, base_config
from conftest import http_request as http
from pipacs.ids import resource_ids


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, small_data: list[Path]) -> Iterator[Any]:
    """pipacs with the DICOMweb plugin on (through Plugins, as an Orthanc set-up would) and
    the first 40 instances (one patient, 2 studies, 4 series) stored over DICOM."""
    folder = tmp_path_factory.mktemp("dicomweb")
    p = PipacsProcess(folder, base_config(
        Plugins=["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"]))
    p.start()
    p.store(*small_data[:40])
    yield p
    p.stop()


@pytest.fixture(scope="module")
def client(server: PipacsProcess) -> DICOMwebClient:
    return DICOMwebClient(url=server.url + "/dicom-web")


def uids(small_data: list[Path], n: int = 40) -> list[tuple[str, str, str]]:
    out = []
    for path in small_data[:n]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out.append((ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
    return out


def value(dataset: dict[str, Any], tag: str) -> Any:
    return dataset[tag]["Value"][0]


# ---------------------------------------------------------------- QIDO-RS


def test_search_for_studies(client: DICOMwebClient, small_data: list[Path]) -> None:
    studies = client.search_for_studies()
    assert len(studies) == 2
    first = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    mine = next(s for s in studies if value(s, "0020000D") == first.StudyInstanceUID)
    assert value(mine, "00100020") == first.PatientID
    assert mine["00100010"]["vr"] == "PN"
    assert value(mine, "00100010") == {"Alphabetic": str(first.PatientName)}
    assert value(mine, "00201206") == 2  # NumberOfStudyRelatedSeries, an IS number
    assert value(mine, "00201208") == 20
    assert mine["00080061"]["Value"] == [first.Modality]
    assert value(mine, "00081190").endswith(f"/dicom-web/studies/{first.StudyInstanceUID}")


def test_search_filters(client: DICOMwebClient, small_data: list[Path]) -> None:
    first = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    assert len(client.search_for_studies(search_filters={"PatientID": first.PatientID})) == 2
    assert client.search_for_studies(search_filters={"PatientID": "nobody"}) == []
    by_uid = client.search_for_studies(
        search_filters={"StudyInstanceUID": first.StudyInstanceUID})
    assert [value(s, "0020000D") for s in by_uid] == [first.StudyInstanceUID]
    assert len(client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"})) == 1
    assert len(client.search_for_studies(search_filters={"00100020": first.PatientID})) == 2
    # PN: wildcards; case-sensitive by default (QidoCaseSensitive true)
    name = str(first.PatientName)
    assert len(client.search_for_studies(search_filters={"PatientName": name[:5] + "*"})) == 2
    assert client.search_for_studies(search_filters={"PatientName": name.lower()}) == []
    assert len(client.search_for_studies(search_filters={"StudyDate": "19000101-"})) == 2
    assert client.search_for_studies(search_filters={"StudyDate": "-19000101"}) == []


def test_limit_offset_includefield(client: DICOMwebClient, server: PipacsProcess) -> None:
    all_series = client.search_for_series()
    assert len(all_series) == 4
    page = client.search_for_series(limit=2, offset=1)
    assert [value(s, "0020000E") for s in page] == [value(s, "0020000E") for s in all_series[1:3]]
    status, headers, _ = http(server.url + "/dicom-web/series?limit=1")
    assert status == 200 and "additional results" in headers.get("Warning", "")
    studies = client.search_for_studies(fields=["StudyDescription", "00080201"])
    assert all("00081030" in s for s in studies)
    # a tag the index does not keep comes from the files
    assert all(value(s, "00080201") for s in studies)


def test_nested_searches(client: DICOMwebClient, small_data: list[Path]) -> None:
    all_uids = uids(small_data)
    study, series, _ = all_uids[0]
    in_study = client.search_for_series(study_instance_uid=study)
    assert len(in_study) == 2
    assert {value(s, "0020000E") for s in in_study} == {u[1] for u in all_uids if u[0] == study}
    assert all(value(s, "00201209") == 10 for s in in_study)
    instances = client.search_for_instances(study_instance_uid=study, series_instance_uid=series)
    assert {value(i, "00080018") for i in instances} == \
        {u[2] for u in all_uids if u[1] == series}
    one = instances[0]
    for tag in ("00080016", "00280010", "00280011", "00280100", "00200013"):
        assert tag in one, tag
    assert len(client.search_for_instances(study_instance_uid=study)) == 20
    assert len(client.search_for_instances()) == 40
    assert len(client.search_for_instances(search_filters={"SeriesInstanceUID": series})) == 10


def test_bad_queries(server: PipacsProcess) -> None:
    base = server.url + "/dicom-web"
    for query in ("limit=-5", "limit=abc", "limit=99999999999999999999", "offset=x",
                  "StudyDate=yesterday", "includefield=NoSuchKeyword", "fuzzymatching=maybe"):
        status, _, body = http(f"{base}/studies?{query}")
        assert status == 400, (query, status, body)
    for path in ("/studies/1.2.x/series", "/studies/" + "1." * 40 + "1/metadata",
                 "/studies/abc", "/studies/1.2.3/series/%20/instances"):
        status, _, _ = http(base + path)
        assert status == 400, path
    assert http(base + "/studies/1.2.3/metadata")[0] == 404
    assert http(base + "/studies/1.2.3")[0] == 404


# ---------------------------------------------------------------- WADO-RS


def test_retrieve(client: DICOMwebClient, small_data: list[Path]) -> None:
    all_uids = uids(small_data)
    study, series, sop = all_uids[0]
    files = {u[2]: p.read_bytes() for u, p in zip(all_uids, small_data, strict=False)}
    got = client.retrieve_study(study)
    assert len(got) == 20
    assert {d.SOPInstanceUID for d in got} == {u[2] for u in all_uids if u[0] == study}
    assert len(client.retrieve_series(study, series)) == 10
    ds = client.retrieve_instance(study, series, sop)
    assert ds.SOPInstanceUID == sop
    original = pydicom.dcmread(io.BytesIO(files[sop]))
    assert ds.PixelData == original.PixelData


def test_retrieve_is_streamed_as_stored(server: PipacsProcess, small_data: list[Path]) -> None:
    study, series, sop = uids(small_data, 1)[0]
    url = f"{server.url}/dicom-web/studies/{study}/series/{series}/instances/{sop}"
    status, headers, body = http(url)
    assert status == 200
    assert headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
    ds = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    public_id = resource_ids(ds.PatientID, study, series, sop)[3]
    assert server.get(f"/instances/{public_id}/file") in body  # the stored file as it is
    status, _, _ = http(url, headers={"Accept": "application/json"})
    assert status == 406
    mpeg2 = "1.2.840.10008.1.2.4.100"  # pipacs does not write it (test_transcode: others)
    status, _, _ = http(url, headers={
        "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={mpeg2}'})
    assert status == 406


def test_metadata(client: DICOMwebClient, small_data: list[Path], server: PipacsProcess) -> None:
    study, series, sop = uids(small_data, 1)[0]
    for _ in range(2):  # the second time from the cache
        meta = client.retrieve_study_metadata(study)
        assert len(meta) == 20
        mine = next(m for m in meta if value(m, "00080018") == sop)
        assert value(mine, "00280010") > 0
        assert "BulkDataURI" in mine["7FE00010"]
        assert "InlineBinary" not in mine["7FE00010"]
    assert len(client.retrieve_series_metadata(study, series)) == 10
    one = client.retrieve_instance_metadata(study, series, sop)
    assert value(one, "00080018") == sop
    original = pydicom.dcmread(small_data[0])
    back = pydicom.Dataset.from_json(
        {k: v for k, v in one.items() if "BulkDataURI" not in v})
    assert back.PatientName == original.PatientName
    assert back.ImagePositionPatient == original.ImagePositionPatient
    bulk = client.retrieve_bulkdata(one["7FE00010"]["BulkDataURI"])
    assert bulk[0] == original.PixelData


def test_metadata_cached_once_series_are_stable(make_pipacs: Any,
                                                small_data: list[Path]) -> None:
    p = make_pipacs(DicomWeb={"Enable": True})
    p.store(*small_data[:10])
    cache = p.folder / "index" / "dicomweb-series"  # one file per series
    deadline = time.monotonic() + 15
    while len(list(cache.rglob("*-*-*"))) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len([f for f in cache.rglob("*") if f.is_file()]) == 1
    study = pydicom.dcmread(small_data[0], stop_before_pixels=True).StudyInstanceUID
    meta = DICOMwebClient(url=p.url + "/dicom-web").retrieve_study_metadata(study)
    assert len(meta) == 10
    urllib.request.urlopen(urllib.request.Request(
        f"{p.url}/studies/{p.get('/studies')[0]}", method="DELETE"), timeout=10).read()
    assert [f for f in cache.rglob("*") if f.is_file()] == []


def test_frames_and_rendered(client: DICOMwebClient, small_data: list[Path]) -> None:
    study, series, sop = uids(small_data, 1)[0]
    original = pydicom.dcmread(small_data[0])
    frames = client.retrieve_instance_frames(study, series, sop, frame_numbers=[1])
    assert frames == [original.PixelData]
    jpeg = client.retrieve_instance_rendered(study, series, sop)
    assert jpeg[:2] == b"\xff\xd8"
    png = client.retrieve_instance_rendered(study, series, sop, media_types=("image/png",),
                                            params={"window": "40,400", "viewport": "64,64"})
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and max(image.size) == 64
    frame = client.retrieve_instance_frames_rendered(study, series, sop, frame_numbers=[1],
                                                     params={"quality": "50"})
    assert frame[:2] == b"\xff\xd8"
    series_img = client.retrieve_series_rendered(study, series)
    assert series_img[:2] == b"\xff\xd8"


def test_bad_wado_requests(server: PipacsProcess, small_data: list[Path]) -> None:
    study, series, sop = uids(small_data, 1)[0]
    inst = f"{server.url}/dicom-web/studies/{study}/series/{series}/instances/{sop}"
    assert http(inst + "/frames/0")[0] == 400
    assert http(inst + "/frames/a,b")[0] == 400
    assert http(inst + "/frames/99")[0] == 404
    assert http(inst + "/rendered?quality=1000")[0] == 400
    assert http(inst + "/rendered?window=abc")[0] == 400
    assert http(inst + "/rendered?viewport=1")[0] == 400
    assert http(inst + "/rendered", headers={"Accept": "image/gif"})[0] == 406
    assert http(inst + "/bulk/zzzz")[0] == 404
    assert http(inst + "/thumbnail")[0] == 200


# ---------------------------------------------------------------- STOW-RS


def multipart(parts: list[bytes], boundary: str = "XxXbOuNdArY") -> tuple[bytes, str]:
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
        for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_store_instances(make_pipacs: Any, small_data: list[Path]) -> None:
    p = make_pipacs(DicomWeb={"Enable": True})
    client = DICOMwebClient(url=p.url + "/dicom-web")
    datasets = [pydicom.dcmread(path) for path in small_data[:3]]
    answer = client.store_instances(datasets)
    stored = answer.ReferencedSOPSequence
    assert [i.ReferencedSOPInstanceUID for i in stored] == [d.SOPInstanceUID for d in datasets]
    assert all(i.RetrieveURL.startswith(p.url + "/dicom-web/studies/") for i in stored)
    assert "FailedSOPSequence" not in answer
    assert p.get("/statistics")["CountInstances"] == 3
    tags = p.get("/instances/" + p.get("/instances")[0] + "/metadata?expand")
    assert tags["Origin"] == "RestApi"
    # a STOW into a named study refuses instances of another one (and says so)
    other = pydicom.dcmread(small_data[25])
    body, ctype = multipart([small_data[3].read_bytes(), small_data[25].read_bytes()])
    status, _, raw = http(f"{p.url}/dicom-web/studies/{datasets[0].StudyInstanceUID}", "POST",
                          body, {"Content-Type": ctype})
    assert status == 202
    result = json.loads(raw)
    failed = result["00081198"]["Value"]
    assert value(failed[0], "00081155") == other.SOPInstanceUID
    assert value(failed[0], "00081197") == 0xA900
    assert len(result["00081199"]["Value"]) == 1


def test_bad_stow(make_pipacs: Any, small_data: list[Path]) -> None:
    p = make_pipacs(DicomWeb={"Enable": True})
    url = p.url + "/dicom-web/studies"
    body, ctype = multipart([b"this is not DICOM at all" * 10])
    status, _, raw = http(url, "POST", body, {"Content-Type": ctype})
    assert status == 409
    assert value(json.loads(raw)["00081198"]["Value"][0], "00081197") == 0xC000
    good = small_data[0].read_bytes()
    body, ctype = multipart([good])
    cases = [
        (body[:-20], ctype),  # cut short: no closing boundary
        (b"garbage without any boundary", ctype),
        (body, 'multipart/related; type="application/dicom"'),  # no boundary parameter
        (b"--XxXbOuNdArY--\r\n", ctype),  # no part at all
    ]
    for data, header in cases:
        status, _, raw = http(url, "POST", data, {"Content-Type": header})
        assert status == 400, (header, data[:40], raw)
    assert http(url, "POST", good, {"Content-Type": "application/dicom"})[0] == 415
    status, _, _ = http(url, "POST", body, {
        "Content-Type": ctype.replace("application/dicom", "application/dicom+json")})
    assert status == 415
    assert http(url + "/not-a-uid", "POST", body, {"Content-Type": ctype})[0] == 400
    assert p.get("/statistics")["CountInstances"] == 0
    assert "Traceback" not in p.log()


# ---------------------------------------------------------------- WADO-URI and options


def test_wado_uri(server: PipacsProcess, small_data: list[Path]) -> None:
    study, series, sop = uids(small_data, 1)[0]
    base = f"{server.url}/wado?requestType=WADO&studyUID={study}&seriesUID={series}" \
           f"&objectUID={sop}"
    status, headers, body = http(base + "&contentType=application/dicom")
    assert status == 200 and pydicom.dcmread(io.BytesIO(body)).SOPInstanceUID == sop
    status, headers, body = http(base)
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    status, _, body = http(base + "&contentType=image/png&rows=32&columns=32")
    assert Image.open(io.BytesIO(body)).size == (32, 32)
    assert http(f"{server.url}/wado?requestType=WADO&objectUID=1.2.3")[0] == 404
    assert http(f"{server.url}/wado?requestType=WADO")[0] == 400
    assert http(f"{server.url}/wado?objectUID={sop}")[0] == 400
    assert http(base + "&contentType=text/html")[0] == 406


def test_options(make_pipacs: Any, small_data: list[Path]) -> None:
    p = make_pipacs(DicomWeb={"Enable": True, "Root": "/dw/", "WadoRoot": "/legacy-wado",
                              "Host": "pacs.example:8080", "Ssl": True,
                              "QidoCaseSensitive": False, "StudiesMetadata": "MainDicomTags"})
    p.store(*small_data[:2])
    first = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    client = DICOMwebClient(url=p.url + "/dw")
    studies = client.search_for_studies(
        search_filters={"PatientName": str(first.PatientName).lower()})
    assert len(studies) == 1
    assert value(studies[0], "00081190") == \
        f"https://pacs.example:8080/dw/studies/{first.StudyInstanceUID}"
    meta = client.retrieve_study_metadata(first.StudyInstanceUID)
    assert "00280010" not in meta[0] and value(meta[0], "00100020") == first.PatientID
    assert http(p.url + "/dicom-web/studies")[0] == 404
    assert http(f"{p.url}/legacy-wado?requestType=WADO&objectUID={first.SOPInstanceUID}")[0] \
        == 200
    q = make_pipacs(DicomWeb={"Enable": False})
    assert http(q.url + "/dicom-web/studies")[0] == 404
