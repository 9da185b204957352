"""Resource content of Orthanc 1.10.1's REST API (attachments, pixel arrays, the tag tree,
bulk operations, create-dicom, split and merge), the same requests to pipacs and Orthanc."""

from __future__ import annotations

import base64
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orthanc_api import OPERATIONS, Pair, start_pair

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, small_data: list[Path]) -> Iterator[Pair]:
    # the first patient's two studies: 2 x 2 series x 10 instances
    yield from start_pair(tmp_path_factory.mktemp("api-content"), small_data[:40])


def first(pair: Pair, plural: str) -> str:
    return str(sorted(pair.get(f"/{plural}"))[0])


def test_attachment_operations(pair: Pair) -> None:
    inst = first(pair, "instances")
    base = f"/instances/{inst}/attachments/dicom"
    for op in ("md5", "size", "is-compressed", "compressed-size", "compressed-md5"):
        a, b = pair.both("GET", f"{base}/{op}")
        assert a.status == b.status == 200 and a.body == b.body, (op, a.body, b.body)
        assert a.headers["ETag"] == b.headers["ETag"], op
    pair.same("POST", f"{base}/verify-md5", "")
    pair.same("POST", f"{base}/uncompress", "")  # stored uncompressed: nothing to do
    pair.same("PUT", base, b"x")  # the DICOM file: 403 on both
    pair.same("DELETE", base)
    pair.same("GET", f"/instances/{inst}/attachments/nope/md5")
    study = first(pair, "studies")
    pair.same("POST", f"/studies/{study}/attachments/dicom/verify-md5", "")
    a, _ = pair.both("PUT", f"/instances/{inst}/attachments/1025", b"hello")
    assert a.status == 501 and ("PUT", "/{level}/{id}/attachments/{name}") in OPERATIONS


def test_frame_routes(pair: Pair) -> None:
    inst = first(pair, "instances")
    pair.same("GET", f"/instances/{inst}/frames/0")
    pair.same("GET", f"/instances/{inst}/frames/5")
    for route in (f"/instances/{inst}/frames/0/numpy", f"/instances/{inst}/numpy",
                  f"/instances/{inst}/frames/0/numpy?rescale=1"):
        a, b = pair.both("GET", route)
        assert a.status == b.status == 200, route
        ours, theirs = np.load(io.BytesIO(a.body)), np.load(io.BytesIO(b.body))
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, route
        assert np.array_equal(ours, theirs), route
    a, b = pair.both("GET", f"/instances/{inst}/frames/0/raw.gz")
    assert a.status == b.status == 200
    assert gzip.decompress(a.body) == gzip.decompress(b.body)
    a, b = pair.both("GET", f"/instances/{inst}/frames/0/matlab")
    assert a.status == b.status == 200
    assert a.body == b.body, (a.body[:60], b.body[:60])
    a, b = pair.both("GET", f"/instances/{inst}/image-int16")
    assert a.status == b.status == 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(a.body))),
                          np.asarray(Image.open(io.BytesIO(b.body))))
    series = first(pair, "series")
    a, b = pair.both("GET", f"/series/{series}/numpy")
    assert a.status == b.status == 200
    assert np.array_equal(np.load(io.BytesIO(a.body)), np.load(io.BytesIO(b.body)))


def test_content_tree(pair: Pair) -> None:
    """Every tag of an instance (but the pixels), and the items of its sequences."""
    inst = first(pair, "instances")
    ours, theirs = pair.same("GET", f"/instances/{inst}/content")
    assert "0010-0010" in ours
    paths = [f"/instances/{inst}/content/{t}" for t in theirs if t != "7fe0-0010"]
    while paths:
        path = paths.pop()
        a, b = pair.both("GET", path)
        assert a.status == b.status, path
        kind = a.headers["Content-Type"].split(";")[0]
        assert kind == b.headers["Content-Type"].split(";")[0], path
        if kind != "application/json":
            assert a.body == b.body, (path, a.body[:80], b.body[:80])
            continue
        assert a.json() == b.json(), path
        paths.extend(f"{path}/{child}" for child in b.json()[:3])
    pair.same("GET", f"/instances/{inst}/content/7777-0010")


def test_modules_and_instances_tags(pair: Pair) -> None:
    for plural in ("studies", "series", "instances"):
        rid = first(pair, plural)
        for query in ("", "?short", "?simplify"):
            pair.same("GET", f"/{plural}/{rid}/module{query}")
    study = first(pair, "studies")
    pair.same("GET", f"/studies/{study}/module-patient")
    # a patient's module comes from one of its instances (OPERATIONS): the IDs agree
    patient = first(pair, "patients")
    a, b = pair.both("GET", f"/patients/{patient}/module?simplify")
    assert ("GET", "/patients/{id}/module") in OPERATIONS
    assert a.status == b.status == 200
    assert {k: a.json()[k] for k in ("PatientID", "PatientName", "PatientBirthDate")} == \
        {k: b.json()[k] for k in ("PatientID", "PatientName", "PatientBirthDate")}
    series = first(pair, "series")
    for query in ("", "?short", "?simplify"):
        ours, _ = pair.same("GET", f"/series/{series}/instances-tags{query}")
        assert len(ours) == 10


def test_bulk_content(pair: Pair) -> None:
    study = first(pair, "studies")
    patient = first(pair, "patients")
    pair.same("POST", "/tools/bulk-content", {"Resources": [study]})
    pair.same("POST", "/tools/bulk-content", {"Resources": [study, "nope"], "Level": "Series",
                                              "Metadata": False}, sort_by="ID")
    ours, _ = pair.same("POST", "/tools/bulk-content", {"Resources": [patient],
                                                        "Level": "Study"})
    assert len(ours) == 2


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_create_dicom_image_and_pdf(pair: Pair) -> None:
    img = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    study = first(pair, "studies")
    body = {"Tags": {"SeriesDescription": "created", "Modality": "OT"},
            "Content": _data_uri("image/png", buf.getvalue()), "Parent": study}
    a, b = pair.both("POST", "/tools/create-dicom", body)
    assert a.status == b.status == 200, (a.body, b.body)
    assert set(a.json()) == set(b.json())
    assert a.json()["ParentStudy"] == b.json()["ParentStudy"] == study
    assert ("POST", "/tools/create-dicom") in OPERATIONS
    ta = pair_tags(pair.ours, a.json()["ID"])
    tb = pair_tags(pair.theirs, b.json()["ID"])
    for key in ("PatientID", "PatientName", "StudyInstanceUID", "SeriesDescription", "Modality",
                "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
                "BitsAllocated", "StudyDate", "ContentDate", "SpecificCharacterSet"):
        assert ta.get(key) == tb.get(key), (key, ta.get(key), tb.get(key))
    assert "SOPClassUID" not in tb and ta["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.7"
    na = np.load(io.BytesIO(_get(pair.ours, f"/instances/{a.json()['ID']}/numpy")))
    nb = np.load(io.BytesIO(_get(pair.theirs, f"/instances/{b.json()['ID']}/numpy")))
    assert np.array_equal(na, nb)
    pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
    a, b = pair.both("POST", "/tools/create-dicom",
                     {"Tags": {"PatientName": "PDF^Test"},
                      "Content": _data_uri("application/pdf", pdf)})
    assert a.status == b.status == 200
    assert _get(pair.ours, f"/instances/{a.json()['ID']}/pdf") == \
        _get(pair.theirs, f"/instances/{b.json()['ID']}/pdf")
    ta, tb = pair_tags(pair.ours, a.json()["ID"]), pair_tags(pair.theirs, b.json()["ID"])
    assert ta["SOPClassUID"] == tb["SOPClassUID"]
    assert ta["MIMETypeOfEncapsulatedDocument"] == tb["MIMETypeOfEncapsulatedDocument"]


def _get(url: str, path: str) -> bytes:
    from conftest import http_request

    status, _, body = http_request(url + path)
    assert status == 200, (path, body[:200])
    return body


def pair_tags(url: str, inst: str) -> dict[str, str]:
    return json.loads(_get(url, f"/instances/{inst}/simplified-tags"))  # type: ignore[no-any-return]


def test_split_then_merge(pair: Pair) -> None:
    patient = next(p for p in sorted(pair.get("/patients"))  # not one create-dicom made
                   if len(pair.get(f"/patients/{p}")["Studies"]) == 2)
    studies = sorted(pair.get(f"/patients/{patient}")["Studies"])
    source, other = studies
    series = next(s for s in sorted(pair.get(f"/studies/{source}")["Series"])  # not the
                  if len(pair.get(f"/series/{s}")["Instances"]) == 10)  # create-dicom one
    a, b = pair.both("POST", f"/studies/{source}/split", {"Series": [series]})
    assert a.status == b.status == 200, (a.body, b.body)
    ja, jb = a.json(), b.json()
    assert set(ja) == set(jb)
    assert ja["InstancesCount"] == jb["InstancesCount"] == 10
    for url, answer in ((pair.ours, ja), (pair.theirs, jb)):
        new = json.loads(_get(url, f"/studies/{answer['TargetStudy']}"))
        assert len(new["Series"]) == 1
        remaining = json.loads(_get(url, f"/studies/{source}"))["Series"]
        assert series not in remaining and len(remaining) == \
            len(pair.get(f"/studies/{source}")["Series"])  # the split series left the study
    # merge the new study's series into the other study
    merged = []
    for url, answer in ((pair.ours, ja), (pair.theirs, jb)):
        moved = json.loads(_get(url, f"/studies/{answer['TargetStudy']}"))["Series"]
        merged.append(moved)
    a, b = (pair_call(pair.ours, f"/studies/{other}/merge", {"Resources": merged[0]}),
            pair_call(pair.theirs, f"/studies/{other}/merge", {"Resources": merged[1]}))
    assert set(a) == set(b) and a["TargetStudy"] == b["TargetStudy"] == other
    assert a["InstancesCount"] == b["InstancesCount"] == 10
    sa = json.loads(_get(pair.ours, f"/studies/{other}"))
    sb = json.loads(_get(pair.theirs, f"/studies/{other}"))
    assert len(sa["Series"]) == len(sb["Series"]) == 3


def pair_call(url: str, path: str, body: dict[str, object]) -> dict[str, object]:
    from conftest import http_request

    status, _, raw = http_request(url + path, "POST", json.dumps(body).encode())
    assert status == 200, (path, raw[:300])
    return json.loads(raw)  # type: ignore[no-any-return]


def test_bulk_modify_and_anonymize(pair: Pair) -> None:
    """Same counts and the same kinds of new resources; without "Level" the instances are
    modified one by one and keep their series (same series IDs on both servers)."""
    ours = set(json.loads(_get(pair.ours, "/series")))  # not one split/merge made anew
    series = next(s for s in sorted(pair.get("/series"))
                  if s in ours and len(pair.get(f"/series/{s}")["Instances"]) == 10)
    instances = sorted(pair.get(f"/series/{series}")["Instances"])[:2]
    body = {"Resources": instances, "Replace": {"ImageComments": "bulk"}}
    a, b = pair.both("POST", "/tools/bulk-modify", body)
    assert a.status == b.status == 200, (a.body, b.body)
    ja, jb = a.json(), b.json()
    assert ja["InstancesCount"] == jb["InstancesCount"] == 2
    assert [r["Type"] for r in ja["Resources"]] == [r["Type"] for r in jb["Resources"]]
    assert [r["ID"] for r in ja["Resources"][2:]] == [r["ID"] for r in jb["Resources"][2:]]
    body = {"Resources": [series], "Level": "Series"}
    a, b = pair.both("POST", "/tools/bulk-anonymize", body)
    assert a.status == b.status == 200, (a.body, b.body)
    ja, jb = a.json(), b.json()
    assert ja["IsAnonymization"] is jb["IsAnonymization"] is True
    assert ja["InstancesCount"] == jb["InstancesCount"]
    assert [r["Type"] for r in ja["Resources"]] == [r["Type"] for r in jb["Resources"]]


def test_bulk_delete(pair: Pair) -> None:
    pair.same("POST", "/tools/bulk-delete", {"Resources": ["nope"]}, json_body=False)
    inst = first(pair, "instances")
    pair.same("POST", "/tools/bulk-delete", {"Resources": [inst]}, json_body=False)
    pair.same("GET", f"/instances/{inst}")
    assert len(pair.get("/instances")) == len(json.loads(_get(pair.ours, "/instances")))
