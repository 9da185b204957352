"""Cross-site requests (issue 13, item 7), against a real pipacs with authentication on.

A page on another site makes the browser send a "simple" request (text/plain, no CORS
preflight) with the Basic credentials it has cached: that anonymized a study. Here urllib
plays the browser, sending what one sends (Origin, the credentials, text/plain). A
state-changing request from a foreign Origin (or, without one, a foreign Referer) is a 403
naming the origin, and nothing changes; a browser's JSON body must say application/json;
same-origin pages, curl -d and other clients that send no Origin keep working.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import PipacsProcess
from test_security import PASSWORD, USER, basic

EVIL = "http://evil.example"


@pytest.fixture
def server(make_pipacs: Any, small_data: list[Path]) -> PipacsProcess:
    p: PipacsProcess = make_pipacs(AuthenticationEnabled=True, RegisteredUsers={USER: PASSWORD})
    p.store(small_data[0])
    return p


def call(p: PipacsProcess, method: str, path: str, body: bytes | None = None,
         **headers: str) -> tuple[int, Any]:
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    status, _, raw = p.request(method, path, body,
                               {"Authorization": basic(USER, PASSWORD), **headers})
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def studies(p: PipacsProcess) -> list[str]:
    status, found = call(p, "GET", "/studies")
    assert status == 200
    return sorted(found)


def test_a_foreign_pages_simple_post_is_refused(server: PipacsProcess) -> None:
    [study] = studies(server)
    status, answer = call(server, "POST", f"/studies/{study}/anonymize", b"{}",
                          Origin=EVIL, Content_Type="text/plain;charset=UTF-8")
    assert status == 403, answer
    assert EVIL in answer["Message"] and answer["HttpStatus"] == 403
    assert studies(server) == [study]  # nothing was anonymized
    assert "cross-site request from 'http://evil.example'" in server.log()
    # The same with a JSON type (a browser would preflight it), other methods, a Referer.
    for method, path, headers in [
        ("POST", f"/studies/{study}/anonymize", {"Origin": EVIL,
                                                  "Content_Type": "application/json"}),
        ("DELETE", f"/studies/{study}", {"Origin": EVIL}),
        ("PUT", f"/studies/{study}/metadata/1024", {"Origin": "null"}),
        ("POST", "/tools/shutdown", {"Origin": "http://127.0.0.1"}),  # another port
        ("POST", f"/studies/{study}/anonymize", {"Referer": EVIL + "/page.html"}),
    ]:
        status, answer = call(server, method, path, b"{}", **headers)
        assert status == 403, (method, path, headers, answer)
    assert studies(server) == [study]
    # Reading stays open to other sites' pages (images in a page elsewhere, as Orthanc).
    assert call(server, "GET", f"/studies/{study}", Origin=EVIL)[0] == 200


def test_same_origin_pages_and_other_clients_keep_working(server: PipacsProcess) -> None:
    [study] = studies(server)
    here = f"http://127.0.0.1:{server.http_port}"
    # A page of this server (the viewer, the welcome page) sends JSON as JSON.
    status, answer = call(server, "POST", f"/studies/{study}/anonymize", b"{}",
                          Origin=here, Content_Type="application/json")
    assert status == 200, answer
    status, answer = call(server, "POST", "/tools/find",
                          b'{"Level": "Study", "Query": {}}', Referer=here + "/viewer/",
                          Content_Type="application/json; charset=utf-8")
    assert status == 200 and len(answer) == 2, answer
    # A browser's JSON body that does not say so is a 415, even from this server's pages.
    status, answer = call(server, "POST", "/tools/find", b'{"Level": "Study", "Query": {}}',
                          Origin=here, Content_Type="text/plain")
    assert status == 415 and "application/json" in answer["Details"], answer
    # Clients without an Origin send what they send: urllib's and curl -d's form type.
    status, answer = call(server, "POST", "/tools/find", b'{"Level": "Study", "Query": {}}')
    assert status == 200 and len(answer) == 2
    curl = subprocess.run(
        ["curl", "-s", "-u", f"{USER}:{PASSWORD}", "-d", '{"Level": "Study", "Query": {}}',
         server.url + "/tools/find"], capture_output=True, text=True, timeout=30, check=True)
    assert len(json.loads(curl.stdout)) == 2, curl.stdout
