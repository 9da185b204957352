"""/tools/* of Orthanc 1.10.1's REST API, the same requests to pipacs and Orthanc."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orthanc_api import OPERATIONS, UID, Pair, start_pair

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, small_data: list[Path]) -> Iterator[Pair]:
    yield from start_pair(tmp_path_factory.mktemp("api-tools"), small_data[:4])


def test_tools_list(pair: Pair) -> None:
    ours, theirs = pair.same("GET", "/tools")
    assert ("GET", "/tools") in OPERATIONS
    assert ours == theirs


@pytest.mark.parametrize("setting,good,bad", [
    ("default-encoding", "Utf8", "Klingon"),
    ("unknown-sop-class-accepted", "1", "maybe"),
    ("metrics", "0", "2"),
    ("log-level-dicom", "verbose", "loud"),
    ("log-level-http", "trace", "loud"),
    ("log-level-sqlite", "verbose", ""),
    ("log-level-jobs", "default", "x"),
    ("log-level-generic", "verbose", "x"),
    ("log-level-plugins", "verbose", "x"),
    ("log-level-lua", "verbose", "x"),
])
def test_settings_read_write_refuse(pair: Pair, setting: str, good: str, bad: str) -> None:
    """GET, PUT a good value (read back), PUT a bad one (same error), then restore."""
    before, _ = pair.same("GET", f"/tools/{setting}", json_body=False)
    pair.same("PUT", f"/tools/{setting}", good, json_body=False)
    after, _ = pair.same("GET", f"/tools/{setting}", json_body=False)
    assert after.decode() == good
    pair.same("PUT", f"/tools/{setting}", bad)
    pair.same("PUT", f"/tools/{setting}", before, json_body=False)


def test_accepted_transfer_syntaxes(pair: Pair) -> None:
    a, b = pair.both("GET", "/tools/accepted-transfer-syntaxes")
    assert a.status == b.status == 200
    ours, theirs = set(a.json()), set(b.json())
    # the documented difference (orthanc_api.OPERATIONS), nothing else
    assert ("GET", "/tools/accepted-transfer-syntaxes") in OPERATIONS
    assert theirs - ours <= {"1.2.840.10008.1.2.4.94", "1.2.840.10008.1.2.4.95",
                             "1.2.840.10008.1.2.6.1", "1.2.840.10008.1.2.6.2"}, theirs - ours
    assert ours - theirs <= {"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                             "1.2.840.10008.1.2.4.203"}, ours - theirs
    chosen = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.70"]
    try:
        pair.same("PUT", "/tools/accepted-transfer-syntaxes", chosen)
        pair.same("PUT", "/tools/accepted-transfer-syntaxes", '"1.2.840.10008.1.2.4.7*"')
        pair.same("PUT", "/tools/accepted-transfer-syntaxes", "9.9.9")  # not JSON: 400
        pair.same("PUT", "/tools/accepted-transfer-syntaxes", '"9.9.9"')  # matches none: []
    finally:
        pair.both("PUT", "/tools/accepted-transfer-syntaxes", '"*"')


def test_accepted_syntaxes_reach_the_scp(pair: Pair, small_data: list[Path]) -> None:
    """After PUT, a C-STORE in a syntax no longer accepted is refused by both."""
    from conftest import dcmtk

    pair.same("PUT", "/tools/accepted-transfer-syntaxes", ["1.2.840.10008.1.2.1"])
    try:
        for port, aet in ((pair.ours_dicom, "PIPACS"), (pair.theirs_dicom, "ORTHANC")):
            refused = dcmtk("storescu", "-xi", "-aec", aet, "127.0.0.1", str(port),
                            str(small_data[5]), check=False)  # offers implicit VR only
            assert refused.returncode != 0, (aet, refused.stdout, refused.stderr)
            accepted = dcmtk("storescu", "-aec", aet, "127.0.0.1", str(port),
                             str(small_data[5]), check=False)
            assert accepted.returncode == 0, (aet, accepted.stdout, accepted.stderr)
    finally:
        pair.both("PUT", "/tools/accepted-transfer-syntaxes", '"*"')


def test_generate_uid(pair: Pair) -> None:
    for level in ("study", "series", "instance"):
        a, b = pair.both("GET", f"/tools/generate-uid?level={level}")
        assert a.status == b.status == 200
        assert UID.match(a.body.decode()) and UID.match(b.body.decode())
    a, b = pair.both("GET", "/tools/generate-uid?level=patient")
    assert a.status == b.status == 200 and len(a.body) == len(b.body)
    a, b = pair.both("GET", "/tools/generate-uid?level=nope")
    assert a.status >= 400 and b.status >= 400


def test_conformance_metrics_invalidate(pair: Pair) -> None:
    a, b = pair.both("GET", "/tools/dicom-conformance")
    assert a.status == b.status == 200 and b"1.2.840.10008.5.1.4.1.1.2" in a.body
    pair.same("POST", "/tools/invalidate-tags", "", json_body=False)
    a, b = pair.both("GET", "/tools/metrics-prometheus")
    assert a.status == b.status == 200
    assert a.headers["Content-Type"] == b.headers["Content-Type"]


def test_not_supported_answers_say_so(pair: Pair) -> None:
    # Lua from REST is off by default on both (ExecuteLuaEnabled): the same 403.
    a, b = pair.both("POST", "/tools/execute-script", "print(42)")
    assert a.status == b.status == 403
    a, _ = pair.both("POST", "/tools/reconstruct", "")
    assert a.status == 501 and b"not supported" in a.body


def test_dicom_echo(pair: Pair) -> None:
    """Both echo pipacs' DICOM port (Orthanc takes an object, not a modality name)."""
    body = {"AET": "PIPACS", "Host": "127.0.0.1", "Port": pair.ours_dicom}
    pair.same("POST", "/tools/dicom-echo", body)
    body = {"AET": "NOBODY", "Host": "127.0.0.1", "Port": 1}
    a, b = pair.both("POST", "/tools/dicom-echo", body)
    assert a.status == b.status == 500, (a.body, b.body)


def test_delete_changes_and_exports(pair: Pair) -> None:
    for route in ("/changes", "/exports"):
        pair.same("DELETE", route, json_body=False)
    for route in ("/changes", "/changes?last"):
        ours, _ = pair.same("GET", route)  # "Last" equal on both too
        assert ours["Changes"] == [] and ours["Last"] > 0, route  # the numbering goes on


def test_method_override(pair: Pair) -> None:
    """POST with X-HTTP-Method-Override: PUT or DELETE is that method; other values 400."""
    patient = sorted(pair.get("/patients"))[0]
    route = f"/patients/{patient}/protected"
    pair.same("POST", route, "1", headers={"X-HTTP-Method-Override": "PUT"}, json_body=False)
    ours, theirs = pair.same("GET", route, json_body=False)
    assert ours == theirs == b"1"
    pair.same("POST", route, "0", headers={"X-HTTP-Method-Override": "PATCH"})
    pair.same("POST", "/system", "", headers={"X-HTTP-Method-Override": "GET"})
    pair.same("POST", route, "0", headers={"X-HTTP-Method-Override": "put"}, json_body=False)
    ours, theirs = pair.same("GET", route, json_body=False)
    assert ours == theirs == b"0"


def test_only_a_paused_job_resumes(pair: Pair) -> None:
    """A finished job: pause is accepted, resume is a 400 (Bad sequence of calls)."""
    import json
    import time

    from conftest import http_request

    study = sorted(pair.get("/studies"))[0]
    body = json.dumps({"Resources": [study], "Asynchronous": True}).encode()
    statuses = []
    for url in (pair.ours, pair.theirs):
        job = json.loads(http_request(url + "/tools/create-archive", "POST", body)[2])["ID"]
        deadline = time.monotonic() + 20
        while json.loads(http_request(f"{url}/jobs/{job}")[2])["State"] != "Success":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        statuses.append(http_request(f"{url}/jobs/{job}/resume", "POST", b"")[0])
    assert statuses == [400, 400]
