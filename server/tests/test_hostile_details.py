"""Hostile clients, the smaller findings (issue 13, item 8), against a real pipacs.

- A request path with line breaks ("%0d%0a", decoded by the server) wrote a forged line into
  the log: every record is one line, control characters escaped.
- Archive entries were named after PatientName, StudyDescription, ...: a study described as
  ".." made an entry "<patient>/../<series>/CT000000.dcm". The ZIP is read back with
  Python's zipfile and every member path checked.
- With AuthenticationEnabled false, the user name of any Authorization header was believed
  and recorded as the instance's HttpUsername (and given to Python hooks as "Username").
- Behind the TLS front with RemoteAccessAllowed true, every client was 127.0.0.1 (the
  front's own address) in the metadata, the log and the hooks. The client here connects from
  127.0.0.7, a loopback address that is not the front's.
- POST /tools/shutdown exits 0, as Orthanc (the unit must restart always); the log says who
  asked.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import ssl
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest

from conftest import PipacsProcess, http_request
from pipacs.ids import resource_ids
from test_rest_resources import uids
from test_rest_tls import self_signed

FORGED = "E 2099-01-01 00:00:00,000 pipacs: FORGED"


def forged_and_refused(p: PipacsProcess, refusals: int) -> tuple[list[str], list[str]]:
    """The log's lines that start as the forged one, and those that report a refusal, once
    `refusals` of them are written (after the answers)."""
    lines = p.wait_log(lambda text: text.count(FORGED[10:]) >= refusals).splitlines()
    return ([line for line in lines if line.startswith(FORGED[:10])],
            [line for line in lines if FORGED[10:] in line])


def test_control_characters_in_paths_do_not_forge_log_lines(make_pipacs: Any) -> None:
    p: PipacsProcess = make_pipacs(AuthenticationEnabled=True, RegisteredUsers={"bob": "pw"})
    paths = [f"/patients{breaks}{urllib.parse.quote(FORGED)}"
             for breaks in ("%0a", "%0d%0a", "%0d", "%e2%80%a8", "%1b[1A%1b[2K")]
    wrong = {"Authorization": "Basic " + base64.b64encode(b"bob:wrong").decode()}
    for path in paths:
        assert http_request(p.url + path, headers=wrong)[0] == 401
    forged, refused = forged_and_refused(p, 5)
    assert not forged and len(refused) == 5, p.log()
    # A cross-site request's refusal quotes its path and origin as well.
    right = {"Authorization": "Basic " + base64.b64encode(b"bob:pw").decode()}
    for path in paths:
        status = http_request(p.url + path, "POST", b"{}",
                              {"Origin": "http://evil.example%0a" + FORGED, **right})[0]
        assert status == 403
    forged, refused = forged_and_refused(p, 10)
    assert not forged and len(refused) == 10, p.log()
    assert all(line.startswith(("I ", "W ")) for line in refused), refused


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
def test_archive_entries_have_no_dot_dot_absolute_or_control_parts(
        pipacs: PipacsProcess, small_data: list[Path], tmp_path: Path) -> None:
    names = [
        {"PatientID": "", "PatientName": "..", "AccessionNumber": "", "StudyDescription": ".",
         "Modality": "", "SeriesDescription": ".."},
        {"PatientID": "..", "PatientName": "", "AccessionNumber": "..",
         "StudyDescription": "", "Modality": "..", "SeriesDescription": "/etc"},
        {"PatientID": "...", "PatientName": " . ", "AccessionNumber": "",
         "StudyDescription": "..\x7f", "Modality": "CT", "SeriesDescription": "C:\\..\\x"},
    ]
    files = []
    for i, tags in enumerate(names):
        ds = pydicom.dcmread(small_data[i * 20])
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.PatientID = tags["PatientID"] or ""
        path = tmp_path / f"{i}.dcm"
        ds.save_as(path)
        files.append(path)
    pipacs.store(*files)
    ids = [resource_ids(*uids(f))[1] for f in files]
    status, _, body = pipacs.request("POST", "/tools/create-archive",
                                     json.dumps({"Resources": ids}).encode())
    assert status == 200, body
    members = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert len(members) == 3, members
    for name in members:
        parts = name.split("/")
        assert not name.startswith("/") and "\\" not in name and ":" not in name, name
        assert all(part.strip(". ") for part in parts), name  # no "", ".", "..", " . "
        assert not re.search("[\x00-\x1f\x7f-\x9f]", name), name
    with zipfile.ZipFile(io.BytesIO(body)) as zf:  # and it extracts where it is told to
        zf.extractall(tmp_path / "out")
    assert len([f for f in (tmp_path / "out").rglob("*") if f.is_file()]) == 3


def tls_request(p: PipacsProcess, cert: Path, source: str, method: str, path: str,
                body: bytes, **headers: str) -> tuple[int, bytes]:
    """(status, body) of a request over TLS from the loopback address `source`."""
    context = ssl.create_default_context(cafile=str(cert))
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{p.http_port}\r\n" \
           f"Connection: close\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", p.http_port), timeout=10,
                                  source_address=(source, 0)) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(head.encode() + b"\r\n" + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


RECORDER = """
import json, pathlib
LOG = pathlib.Path(__file__).with_name("seen.jsonl")

def on_stored_instance(instance_id, tags, origin):
    with LOG.open("a") as f:
        f.write(json.dumps(["stored", origin["RemoteIp"], origin["Username"]]) + "\\n")
"""


def test_the_tls_front_passes_the_real_client_and_no_unchecked_user(
        make_pipacs: Any, small_data: list[Path], tmp_path: Path) -> None:
    pem = self_signed(tmp_path)
    scripts = tmp_path / "python"
    scripts.mkdir()
    (scripts / "recorder.py").write_text(RECORDER)
    p: PipacsProcess = make_pipacs(SslEnabled=True, SslCertificate=str(pem),
                                   RemoteAccessAllowed=True, PythonScripts=[str(scripts)])
    mallory = "Basic " + base64.b64encode(b"mallory:anything").decode()
    status, body = tls_request(p, tmp_path / "cert.pem", "127.0.0.7", "POST", "/instances",
                               small_data[0].read_bytes(), Authorization=mallory,
                               Content_Type="application/dicom")
    assert status == 200, body
    answer = json.loads(body)
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    url = f"https://127.0.0.1:{p.http_port}/instances/{answer['ID']}/metadata?expand"
    with urllib.request.urlopen(url, context=context, timeout=10) as r:
        metadata = json.loads(r.read())
    assert metadata["RemoteIP"] == "127.0.0.7", metadata
    assert "HttpUsername" not in metadata, metadata  # authentication is off: no user
    seen = [json.loads(line) for line in (scripts / "seen.jsonl").read_text().splitlines()]
    assert ["stored", "127.0.0.7", ""] in seen, seen
    # The log names the client too (a cross-site request's refusal, here).
    status, body = tls_request(p, tmp_path / "cert.pem", "127.0.0.7", "DELETE",
                               f"/instances/{answer['ID']}", b"", Origin="http://evil.example")
    assert status == 403, body
    refusal = "DELETE /instances/" + answer["ID"] + " from 127.0.0.7 refused"
    assert refusal in p.wait_log(lambda text: refusal in text), p.log()


def test_a_requested_stop_exits_0_and_says_who_asked(make_pipacs: Any) -> None:
    """Exit code 0 as Orthanc (the unit must say Restart=always, see README); the log names
    the client and its user, for the teacher who finds the PACS stopped."""
    p: PipacsProcess = make_pipacs(AuthenticationEnabled=True, RegisteredUsers={"bob": "pw"})
    right = {"Authorization": "Basic " + base64.b64encode(b"bob:pw").decode()}
    assert http_request(p.url + "/tools/shutdown", "POST", b"", right)[0] == 200
    assert p.proc is not None
    assert p.proc.wait(20) == 0
    assert "stop requested over HTTP by 127.0.0.1 (user 'bob')" in p.log()
