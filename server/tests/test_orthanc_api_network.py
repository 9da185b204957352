"""Networking of Orthanc 1.10.1's REST API (editing modalities and peers, the older C-FIND
routes, child queries, straight sends), the same requests to pipacs and Orthanc; each
server's modality and peer "self" is itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import http_request
from orthanc_api import OPERATIONS, Pair, normalize, start_pair

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, small_data: list[Path]) -> Iterator[Pair]:
    yield from start_pair(tmp_path_factory.mktemp("api-network"), small_data[:20])


def test_put_and_delete_modality(pair: Pair) -> None:
    body = {"AET": "OTHER", "Host": "127.0.0.1", "Port": 11112, "Manufacturer": "Generic"}
    pair.same("PUT", "/modalities/other", body, json_body=False)
    a, b = pair.both("GET", "/modalities/other/configuration")
    assert a.status == b.status == 200
    for key in ("AET", "Host", "Port", "Manufacturer", "AllowEcho", "AllowStore"):
        assert a.json()[key] == b.json()[key], key
    pair.same("PUT", "/modalities/bad", {"AET": "X", "Port": 1})  # no Host
    assert "other" in pair.same("GET", "/modalities")[0]
    pair.same("DELETE", "/modalities/other", json_body=False)
    pair.same("GET", "/modalities/other")
    pair.same("DELETE", "/modalities/other")


def test_put_and_delete_peer(pair: Pair) -> None:
    pair.same("PUT", "/peers/other", {"Url": "http://127.0.0.1:1/"}, json_body=False)
    assert sorted(pair.same("GET", "/peers")[0]) == ["other", "self"]
    a, b = pair.both("GET", "/peers/other/configuration")
    assert a.status == b.status == 200 and a.json()["Url"] == b.json()["Url"]
    pair.same("DELETE", "/peers/other", json_body=False)
    pair.same("GET", "/peers/other")


def test_older_find_routes(pair: Pair) -> None:
    patients, _ = pair.same("POST", "/modalities/self/find-patient", {"PatientID": "*"},
                            sort_by="PatientID")
    assert patients
    pid = patients[0]["PatientID"]
    studies, _ = pair.same("POST", "/modalities/self/find-study", {"PatientID": pid},
                           sort_by="StudyInstanceUID")
    uid = studies[0]["StudyInstanceUID"]
    series, _ = pair.same("POST", "/modalities/self/find-series",
                          {"PatientID": pid, "StudyInstanceUID": uid},
                          sort_by="SeriesInstanceUID")
    pair.same("POST", "/modalities/self/find-instance",
              {"PatientID": pid, "StudyInstanceUID": uid,
               "SeriesInstanceUID": series[0]["SeriesInstanceUID"]}, sort_by="SOPInstanceUID")
    a, b = pair.both("POST", "/modalities/self/find", {"PatientID": pid})
    assert a.status == b.status == 200
    tree = canonical(normalize(a.json()))
    assert tree == canonical(normalize(b.json()))  # C-FIND answers come in any order
    assert len(tree) == 1 and len(tree[0]["Studies"]) == len(studies)
    pair.same("POST", "/modalities/nobody/find-patient", {})


def canonical(value: Any) -> Any:
    """Lists sorted (by their items' JSON), recursively."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def test_child_queries(pair: Pair) -> None:
    ids = []
    for url in (pair.ours, pair.theirs):
        status, _, raw = http_request(url + "/modalities/self/query", "POST", json.dumps(
            {"Level": "Patient", "Query": {"PatientID": "*"}}).encode())
        assert status == 200
        ids.append(json.loads(raw)["ID"])
    children = []
    for url, qid in zip((pair.ours, pair.theirs), ids, strict=True):
        status, _, raw = http_request(url + f"/queries/{qid}/answers/0/query-studies", "POST",
                                      b"{}")
        assert status == 200, raw
        answer = json.loads(raw)
        assert set(answer) == {"ID", "Path"}
        children.append(answer["ID"])
    ours = http_request(pair.ours + f"/queries/{children[0]}/answers?expand&simplify")
    theirs = http_request(pair.theirs + f"/queries/{children[1]}/answers?expand&simplify")
    key = "StudyInstanceUID"
    a = sorted(x[key] for x in json.loads(ours[2]))
    b = sorted(x[key] for x in json.loads(theirs[2]))
    assert a == b and a
    assert http_request(pair.ours + f"/queries/{children[0]}/level")[2] == b"Study"


def test_store_straight(pair: Pair, small_data: list[Path]) -> None:
    data = small_data[30].read_bytes()  # not stored yet on either server
    a, b = pair.both("POST", "/modalities/self/store-straight", data)
    assert a.status == b.status == 200, (a.body, b.body)
    assert set(a.json()) == set(b.json()), (a.json(), b.json())
    pair.same("POST", "/modalities/self/store-straight", b"not DICOM")
    a, b = pair.both("POST", "/peers/self/store-straight", small_data[31].read_bytes())
    assert a.status == b.status == 200, (a.body, b.body)
    assert a.json()["ID"] == b.json()["ID"]


def test_storage_commitment_is_refused_clearly(pair: Pair) -> None:
    a, _ = pair.both("POST", "/modalities/self/storage-commitment", {"Resources": []})
    assert a.status == 501 and b"not supported: storage commitment" in a.body
    assert ("POST", "/modalities/{id}/storage-commitment") in OPERATIONS
