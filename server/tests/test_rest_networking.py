"""Modalities, query/retrieve, peers and jobs between running pipacs servers and dcmtk."""

from __future__ import annotations

import json
import socket
from typing import Any

import pydicom

from conftest import free_port
from pipacs.ids import resource_ids
from test_rest_content import wait_job
from test_rest_resources import client, request, uids, upload


def pair(make_pipacs: Any, **a_overrides: Any) -> tuple[Any, Any]:
    """Two servers that know each other: A (modality "b", peer "b") and B (modality "a")."""
    a = make_pipacs(start=False, DicomAet="PIPACSA", **a_overrides)
    b = make_pipacs(start=False, DicomAet="PIPACSB")
    a.config["DicomModalities"] = {"b": ["PIPACSB", "127.0.0.1", b.dicom_port]}
    a.config["OrthancPeers"] = {"b": [b.url + "/"]}
    b.config["DicomModalities"] = {"a": ["PIPACSA", "127.0.0.1", a.dicom_port]}
    a.start()
    b.start()
    return a, b


def test_modalities_list_and_echo(make_pipacs, storescp) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(DicomModalities={"scp": [storescp.aet, "127.0.0.1", storescp.port],
                                     "down": ["DOWN", "127.0.0.1", free_port()]})
    o = client(p)
    assert sorted(o.get_modalities()) == ["down", "scp"]
    expanded = o.get_modalities(params={"expand": ""})
    assert expanded["scp"]["AET"] == storescp.aet and expanded["scp"]["Port"] == storescp.port
    assert request(f"{p.url}/modalities/scp/echo", "POST", "{}")[0] == 200
    status, _, body = request(f"{p.url}/modalities/down/echo", "POST", "{}")
    assert status == 500 and json.loads(body)["OrthancStatus"] == 9
    assert request(f"{p.url}/modalities/nobody/echo", "POST", "{}")[0] == 404


def test_store_to_a_modality(make_pipacs, storescp, small_data) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(DicomModalities={"scp": [storescp.aet, "127.0.0.1", storescp.port]},
                    LogExportedResources=True)
    upload(p, *small_data[:20])
    ids = resource_ids(*uids(small_data[0]))
    answer = client(p).post_modalities_id_store("scp", json={"Resources": [ids[1]],
                                                             "Synchronous": True})
    assert answer["InstancesCount"] == 20 and answer["FailedInstancesCount"] == 0
    assert answer["RemoteAet"] == storescp.aet and answer["ParentResources"] == [ids[1]]
    received = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
                for f in storescp.files()}
    assert received == {uids(x)[3] for x in small_data[:20]}
    exports = client(p).get_exports()
    assert exports["Exports"][0]["ID"] == ids[1]
    assert exports["Exports"][0]["RemoteModality"] == "scp"
    status, _, body = request(f"{p.url}/modalities/scp/store", "POST",
                              json.dumps({"Resources": [ids[3]], "Asynchronous": True}))
    assert status == 200
    job = wait_job(p, json.loads(body)["ID"])
    assert job["State"] == "Success" and job["Type"] == "DicomModalityStore"
    assert request(f"{p.url}/modalities/scp/store", "POST", '["no-such-id"]')[0] == 404


def test_query_and_retrieve_between_two_servers(make_pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    a, b = pair(make_pipacs)
    upload(b, *small_data[:40])
    patient_id = uids(small_data[0])[0]
    status, _, body = request(f"{a.url}/modalities/b/query", "POST", json.dumps(
        {"Level": "Study", "Query": {"PatientID": patient_id, "StudyDescription": ""}}))
    assert status == 200
    qid = json.loads(body)["ID"]
    answers = json.loads(request(f"{a.url}/queries/{qid}/answers")[2])
    assert answers == ["0", "1"]
    content = json.loads(request(f"{a.url}/queries/{qid}/answers/0/content?simplify")[2])
    assert content["PatientID"] == patient_id
    assert content["StudyInstanceUID"] in {uids(x)[1] for x in small_data[:40]}
    assert request(f"{a.url}/queries/{qid}/level")[2] == b"Study"
    status, _, body = request(f"{a.url}/queries/{qid}/answers/0/retrieve", "POST", "PIPACSA")
    assert status == 200, body
    assert json.loads(body)["TargetAet"] == "PIPACSA"
    assert a.get("/statistics")["CountInstances"] == 20
    status, _, body = request(f"{a.url}/queries/{qid}/retrieve", "POST",
                              json.dumps({"TargetAet": "PIPACSA", "Synchronous": False}))
    job = wait_job(a, json.loads(body)["ID"])
    assert job["State"] == "Success" and job["Type"] == "DicomMoveScu"
    assert a.get("/statistics")["CountInstances"] == 40
    assert request(f"{a.url}/queries/nope/answers")[0] == 404


def test_move_from_a_modality(make_pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    a, b = pair(make_pipacs)
    upload(b, *small_data[:20])
    series_uid = uids(small_data[0])[2]
    status, _, body = request(f"{a.url}/modalities/b/move", "POST", json.dumps(
        {"Level": "Series", "Resources": [{"StudyInstanceUID": uids(small_data[0])[1],
                                           "SeriesInstanceUID": series_uid}],
         "TargetAet": "PIPACSA"}))
    assert status == 200, body
    assert a.get("/statistics")["CountInstances"] == 10


def test_store_to_an_http_peer(make_pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    a, b = pair(make_pipacs)
    upload(a, *small_data[:10])
    assert client(a).get_peers() == ["b"]
    assert client(a).get_peers_id_system("b")["DicomAet"] == "PIPACSB"
    series = resource_ids(*uids(small_data[0]))[2]
    answer = client(a).post_peers_id_store("b", json=[series])
    assert answer["InstancesCount"] == 10 and answer["Peer"] == [b.url + "/"]
    assert int(answer["Size"]) == sum(x.stat().st_size for x in small_data[:10])
    assert client(b).get_series_id(series)["Instances"] == client(a).get_series_id(
        series)["Instances"]
    assert client(b).get_instances_id_file(resource_ids(*uids(small_data[0]))[3]) == \
        small_data[0].read_bytes()


def test_peer_down_fails_the_job(make_pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(OrthancPeers={"gone": [f"http://127.0.0.1:{free_port()}/"]})
    upload(p, small_data[0])
    iid = resource_ids(*uids(small_data[0]))[3]
    status, _, body = request(f"{p.url}/peers/gone/store", "POST", json.dumps([iid]))
    assert status == 500 and json.loads(body)["OrthancStatus"] == 9
    status, _, body = request(f"{p.url}/peers/gone/store", "POST",
                              json.dumps({"Resources": [iid], "Asynchronous": True}))
    job = wait_job(p, json.loads(body)["ID"])
    assert job["State"] == "Failure" and job["ErrorDescription"]


def test_http_timeout_towards_a_silent_peer(make_pipacs) -> None:  # type: ignore[no-untyped-def]
    """A peer that accepts and never answers fails the request after HttpTimeout."""
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        p = make_pipacs(HttpTimeout=1, OrthancPeers={"silent": [f"http://127.0.0.1:{port}/"]})
        status, _, body = request(f"{p.url}/peers/silent/system")
        assert status == 500 and "timed out" in json.loads(body)["Details"]
    finally:
        silent.close()
