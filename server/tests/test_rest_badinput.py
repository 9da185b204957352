"""Malformed REST input against a running pipacs: a 4xx naming what is wrong, never a 500.

Bad JSON bodies, wrong types in /tools/find and the other POST bodies, absurd limits and
offsets, non-numeric query arguments, unknown IDs, path tricks in served folders and in
archive names, broken Content-Length headers, JSON bodies over 32 MB (a 413 before they are
read into memory); then a bounded hypothesis fuzz of /tools/find
bodies, of the query arguments of the routes that take numbers, and of every route of the
app (read from create_app) with made-up path parameters and bodies. After every test the
server is still up and its log holds no traceback. (Malformed uploads, POST /instances,
ZIP and STOW-RS, are test_upload_badinput.py's.)
"""

from __future__ import annotations

import io
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PipacsProcess, base_config, free_port

BIG = 10**30  # beyond any integer SQLite takes
SECRET = b"the secret next to the served folder"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, small_data: list[Path]
           ) -> Iterator[PipacsProcess]:
    """One pipacs with every plugin on, a modality and a peer that do not answer (nothing
    here may reach them: a bad body is refused first), and one study stored."""
    folder = tmp_path_factory.mktemp("restbad")
    (folder / "web").mkdir()
    (folder / "web" / "index.html").write_text("<p>served</p>")
    (folder / "secret.txt").write_bytes(SECRET)
    (folder / "worklists").mkdir()
    closed = free_port()
    p = PipacsProcess(folder, base_config(
        DicomWeb={"Enable": True},
        Worklists={"Enable": True, "Database": str(folder / "worklists")},
        Plugins=["libServeFolders.so"],
        ServeFolders={"/web": str(folder / "web")},
        WebViewer={"Enable": True},
        DicomModalities={"nobody": ["NOBODY", "127.0.0.1", closed]},
        OrthancPeers={"nowhere": {"Url": f"http://127.0.0.1:{closed}/"}},
    ))
    p.start()
    p.store(*small_data[:4])
    yield p
    p.stop()


@pytest.fixture(scope="module")
def ids(server: PipacsProcess, small_data: list[Path]) -> dict[str, str]:
    ds = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    instance = call(server, "POST", "/tools/lookup", str(ds.SOPInstanceUID))[1][0]["ID"]
    found = {"instance": instance, "study_uid": str(ds.StudyInstanceUID),
             "series_uid": str(ds.SeriesInstanceUID), "sop_uid": str(ds.SOPInstanceUID)}
    for level in ("patient", "study", "series"):
        found[level] = call(server, "GET", f"/instances/{instance}/{level}")[1]["ID"]
    return found


@pytest.fixture(autouse=True)
def still_up(server: PipacsProcess) -> Iterator[None]:
    yield
    assert server.proc is not None and server.proc.poll() is None, server.log()
    assert call(server, "GET", "/system")[0] == 200
    assert "Traceback" not in server.log(), server.log()


def call(p: PipacsProcess, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status, body): JSON decoded when it is JSON; error statuses are answers."""
    if isinstance(body, str):
        data: bytes | None = body.encode()
    elif body is None or isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body).encode()
    status, _, raw = p.request(method, path, data, headers, timeout=60)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def assert_refused(status: int, body: Any, code: int, words: str = "") -> None:
    """A 4xx with Orthanc's JSON error body that names the problem."""
    assert status == code, (status, body)
    assert isinstance(body, dict) and body["HttpStatus"] == code and body["Message"], body
    if words:
        text = (body["Message"] + " " + body.get("Details", "")).lower()
        assert words.lower() in text, body


# (method, path, body, status, words in the message); {x} are filled from `ids`.
CASES: list[tuple[str, str, Any, int, str]] = [
    # /tools/find: bad JSON and wrong types
    ("POST", "/tools/find", "not json", 400, "not valid JSON"),
    ("POST", "/tools/find", "", 400, "must contain JSON"),
    ("POST", "/tools/find", b"\xff\xfe{", 400, "not valid JSON"),
    ("POST", "/tools/find", "[" * 100_000 + "]" * 100_000, 400, "nested too deeply"),
    ("POST", "/tools/find", [], 400, "JSON object"),
    ("POST", "/tools/find", {"Level": "Study"}, 400, '"Query"'),
    ("POST", "/tools/find", {"Level": 5, "Query": {}}, 400, "Level"),
    ("POST", "/tools/find", {"Level": "Galaxy", "Query": {}}, 400, "Level"),
    ("POST", "/tools/find", {"Level": "Study", "Query": []}, 400, "Query"),
    ("POST", "/tools/find", {"Level": "Study", "Query": {"PatientName": 5}}, 400, "PatientName"),
    ("POST", "/tools/find", {"Level": "Study", "Query": {"0010,ZZZZ": "x"}}, 400, "0010,ZZZZ"),
    ("POST", "/tools/find", {"Level": "Study", "Query": {}, "Expand": 1}, 400, "Expand"),
    ("POST", "/tools/find", {"Level": "Study", "Query": {}, "CaseSensitive": "no"}, 400,
     "CaseSensitive"),
    # absurd limits and offsets
    ("POST", "/tools/find", {"Level": "Study", "Query": {}, "Limit": -1}, 400, "Limit"),
    ("POST", "/tools/find", {"Level": "Study", "Query": {}, "Limit": 1.5}, 400, "Limit"),
    ("POST", "/tools/find", {"Level": "Study", "Query": {}, "Limit": BIG}, 400, "Limit"),
    ("POST", "/tools/find", {"Level": "Study", "Query": {}, "Since": BIG}, 400, "Since"),
    ("POST", "/tools/find", '{"Level": "Study", "Query": {}, "Limit": 1e999}', 400, "Limit"),
    ("GET", "/patients?limit=abc", None, 400, "limit"),
    ("GET", "/patients?limit=-1", None, 400, "limit"),
    ("GET", f"/patients?limit={BIG}", None, 400, "limit"),
    ("GET", f"/studies?expand&since={BIG}", None, 400, "since"),
    ("GET", "/instances?since=1e3", None, 400, "since"),
    ("GET", "/changes?since=abc", None, 400, "since"),
    ("GET", f"/changes?since={BIG}", None, 400, "since"),
    ("GET", "/changes?limit=0", None, 400, "limit"),
    ("GET", "/changes?limit=100000", None, 400, "limit"),
    ("GET", f"/exports?limit={BIG}", None, 400, "limit"),
    ("GET", "/exports?since=-3", None, 400, "since"),
    ("GET", "/dicom-web/studies?limit=abc", None, 400, "limit"),
    ("GET", f"/dicom-web/studies?offset={BIG}", None, 400, "offset"),
    # rendering parameters
    ("GET", "/instances/{instance}/rendered?width=abc", None, 400, "width"),
    ("GET", "/instances/{instance}/rendered?width=-5", None, 400, "width"),
    ("GET", "/instances/{instance}/rendered?width=100000&height=100000", None, 400, "width"),
    ("GET", "/instances/{instance}/rendered?window-center=abc&window-width=3", None, 400, ""),
    ("GET", "/instances/{instance}/rendered?quality=500", None, 400, "quality"),
    ("GET", "/instances/{instance}/frames/99/preview", None, 404, ""),
    ("GET", "/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/0",
     None, 400, "frame"),
    # unknown IDs and names
    ("GET", "/instances/nope/file", None, 404, "nope"),
    ("GET", "/instances/{study}/file", None, 404, ""),
    ("GET", "/studies/{instance}", None, 404, ""),
    ("DELETE", "/patients/nope", None, 404, "nope"),
    ("GET", "/jobs/nope", None, 404, "nope"),
    ("POST", "/jobs/nope/resubmit", "", 404, "nope"),
    ("GET", "/queries/nope/answers", None, 404, "nope"),
    ("POST", "/modalities/unknown/echo", "", 404, "unknown"),
    ("POST", "/peers/unknown/store", ["{patient}"], 404, "unknown"),
    ("POST", "/tools/create-archive", ["nope"], 404, "nope"),
    ("GET", "/worklists/nope", None, 404, ""),
    # other POST and PUT bodies
    ("POST", "/tools/create-archive", {"Resources": 5}, 400, "resource ID"),
    ("POST", "/tools/create-archive", {"Resources": []}, 400, "no resources"),
    ("POST", "/tools/create-archive", {"Resources": [5]}, 400, "resource ID"),
    ("POST", "/tools/create-archive", {"Resources": ["{patient}"], "Synchronous": "yes"}, 400,
     "Synchronous"),
    ("POST", "/tools/create-archive",
     {"Resources": ["{patient}"], "Asynchronous": True, "Priority": "high"}, 400, "Priority"),
    ("POST", "/patients/{patient}/archive", [], 400, "object"),
    ("POST", "/modalities/nobody/query", {"Level": "Study", "Query": {}, "Limit": "abc"}, 400,
     "Limit"),
    ("POST", "/modalities/nobody/query", {"Level": "Study", "Query": {}, "Limit": []}, 400,
     "Limit"),
    ("POST", "/modalities/nobody/query", {"Level": "Study", "Query": {"NotATag": "x"}}, 400,
     "NotATag"),
    ("POST", "/modalities/nobody/query", {"Level": "Study", "Query": {"PatientName": 5}}, 400,
     "Query"),
    ("POST", "/modalities/nobody/move",
     {"Level": "Study", "Resources": [{"StudyInstanceUID": "1.2"}], "TargetAet": 5}, 400,
     "TargetAet"),
    ("POST", "/modalities/nobody/move", {"Level": "Study", "Resources": [{"NotATag": "1"}]},
     400, "NotATag"),
    ("POST", "/modalities/nobody/move", {"Level": "Study", "Resources": "x"}, 400, "Resources"),
    ("POST", "/modalities/nobody/store", {"Resources": 5}, 400, "resource ID"),
    ("POST", "/peers/nowhere/store", {"Resources": [7]}, 400, "resource ID"),
    ("POST", "/studies/{study}/modify", "x", 400, ""),
    ("PUT", "/instances/{instance}/metadata/Unknown", "x", 400, "Unknown"),
    ("PUT", f"/instances/{{instance}}/metadata/{BIG}", "x", 400, "metadata"),
    ("PUT", "/instances/{instance}/metadata/%C2%B2", "x", 400, "metadata"),
    ("PUT", "/instances/{instance}/metadata/1024", b"\xff", 400, "UTF-8"),
    ("PUT", "/patients/{patient}/protected", "2", 400, '"0" or "1"'),
    ("PUT", "/tools/log-level", "loud", 400, "verbosity"),
    ("POST", "/tools/lookup", b"\xff\xfe", 400, "UTF-8"),
    ("POST", "/tools/lookup", "", 400, "identifier"),
    ("POST", "/worklists/create", "x", 400, ""),
    ("POST", "/worklists/create", {"Tags": 5}, 400, "Tags"),
    # path tricks in served folders (and elsewhere)
    ("GET", "/web/../secret.txt", None, 403, "leaves the served folder"),
    ("GET", "/web/%2e%2e/secret.txt", None, 403, "leaves the served folder"),
    ("GET", "/web/..%2fsecret.txt", None, 403, "leaves the served folder"),
    ("GET", "/web/%2e%2e%5csecret.txt", None, 404, "not in the served folder"),
    ("GET", "/web/%00", None, 404, ""),
    ("GET", "/viewer/..%2f..%2fsecret.txt", None, 404, ""),
    ("GET", "/worklists/..%2f..%2fsecret.txt", None, 404, ""),
    ("DELETE", "/worklists/..", None, 404, ""),
    ("GET", "/instances/{instance}/attachments/..%2f..%2fsecret.txt/data", None, 404, ""),
]


@pytest.mark.parametrize(("method", "path", "body", "code", "words"), CASES,
                         ids=[f"{c[0]} {c[1][:70]}" for c in CASES])
def test_bad_request_is_refused_with_a_message(server: PipacsProcess, ids: dict[str, str],
                                               method: str, path: str, body: Any, code: int,
                                               words: str) -> None:
    path = path.format(**ids)
    if isinstance(body, list):
        body = [b.format(**ids) if isinstance(b, str) else b for b in body]
    elif isinstance(body, dict) and isinstance(body.get("Resources"), list):
        body = {**body, "Resources": [r.format(**ids) if isinstance(r, str) else r
                                      for r in body["Resources"]]}
    status, answer = call(server, method, path, body)
    assert SECRET not in (answer if isinstance(answer, bytes) else json.dumps(answer).encode())
    assert_refused(status, answer, code, words)


def raw_http(p: PipacsProcess, head: bytes, body: bytes = b"") -> bytes:
    """Send bytes as they are (headers no client library would send); the raw answer."""
    with socket.create_connection(("127.0.0.1", p.http_port), timeout=30) as s:
        s.sendall(head + body)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


@pytest.mark.parametrize(("length", "status"), [
    (b"99999999999999999", b"413"),  # larger than any body the server takes
    (b"abc", b"400"),
    (b"-5", b"400"),
    (b"10, 20", b"400"),
])
def test_broken_content_length(server: PipacsProcess, length: bytes, status: bytes) -> None:
    answer = raw_http(server, b"POST /tools/find HTTP/1.1\r\nHost: x\r\nContent-Length: "
                      + length + b"\r\nContent-Type: application/json\r\n\r\n", b"{}")
    assert answer.split(b" ", 2)[1] == status, answer[:300]
    assert answer.partition(b"\r\n\r\n")[2].strip(), answer  # a body that says why


def test_body_shorter_than_its_content_length(server: PipacsProcess) -> None:
    """The client promises 10 MB, sends a little and hangs up: the server just carries on."""
    answer = raw_http(server, b"POST /tools/find HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 10000000\r\n\r\n", b'{"Level": "Study"')
    assert answer == b""


@pytest.mark.parametrize("path", ["/tools/find", "/tools/create-archive"])
def test_huge_json_body_is_refused_unread(server: PipacsProcess, path: str) -> None:
    """33 MB of JSON (valid: whitespace around an object) is a 413, not 33 MB in memory."""
    status, answer = call(server, "POST", path, b" " * (33 * 1024 * 1024) + b"{}")
    assert_refused(status, answer, 413, "larger than")


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
def test_archive_names_stay_inside_the_archive(server: PipacsProcess, small_data: list[Path],
                                               tmp_path: Path) -> None:
    """Names in a ZIP come from patient and study tags: crafted ones stay relative, with no
    "..", no drive, no backslash; and a ZIP upload's own entry names write nothing."""
    ds = pydicom.dcmread(small_data[10])
    ds.PatientID = "../../../etc/passwd"
    ds.PatientName = "..\\..\\Windows^C:"
    ds.StudyDescription = "/abs/olute"
    ds.SeriesDescription = "..\x00.."
    ds.AccessionNumber = ".."
    ds.Modality = "../"  # an invalid CS, on purpose
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer)
    status, stored = call(server, "POST", "/instances", buffer.getvalue())
    assert status == 200, stored
    for kind in ("archive", "media"):
        status, raw = call(server, "GET", f"/patients/{stored['ParentPatient']}/{kind}")
        assert status == 200
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            names = zf.namelist()
        assert names
        for name in names:
            parts = name.split("/")
            assert not name.startswith("/") and "\\" not in name and ":" not in name, name
            assert ".." not in parts and "" not in parts and "\x00" not in name, name
    # A ZIP upload whose entry names climb out: its files are stored, none is written there.
    upload = io.BytesIO()
    with zipfile.ZipFile(upload, "w") as zf:
        zf.writestr("../../../../../tmp/pipacs-zip-escape.dcm", small_data[11].read_bytes())
        zf.writestr("/abs/pipacs-zip-escape.dcm", small_data[12].read_bytes())
    status, answer = call(server, "POST", "/instances", upload.getvalue())
    assert status == 200 and len(answer) == 2, answer
    assert not Path("/tmp/pipacs-zip-escape.dcm").exists()
    assert not list(server.folder.rglob("pipacs-zip-escape*"))


# ---------------------------------------------------------------- bounded fuzzing

JSON_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)
KEYWORDS = st.sampled_from(["PatientName", "PatientID", "StudyDate", "StudyTime", "Modality",
                            "ModalitiesInStudy", "StudyInstanceUID", "SOPInstanceUID",
                            "AccessionNumber", "PatientBirthDate", "0010,0010", "0008,0020",
                            "0020,000d", "ffff,ffff", "NotATag", "", "PixelData",
                            "NumberOfStudyRelatedInstances", "ReferencedStudySequence"])
QUERY_TEXT = st.text(alphabet=st.sampled_from(list("0123456789-*?\\^ .,:AZaz\x00é")),
                     max_size=24)
FIND_BODIES = st.fixed_dictionaries(
    {"Level": st.sampled_from(["Patient", "Study", "Series", "Instance", "image", "x"])
     | JSON_SCALARS,
     "Query": st.dictionaries(KEYWORDS | st.text(max_size=10), QUERY_TEXT | JSON_SCALARS,
                              max_size=4) | JSON_VALUES},
    optional={"Expand": JSON_SCALARS, "Limit": JSON_SCALARS, "Since": JSON_SCALARS,
              "CaseSensitive": JSON_SCALARS, "RequestedTags": JSON_VALUES,
              "Full": JSON_SCALARS})


def answered_sanely(status: int, answer: Any, what: str) -> None:
    if status == 501:  # an Orthanc operation pipacs does not offer (README), whatever the input
        assert str(answer.get("Details", "")).startswith("not supported:"), (what, answer)
        return
    assert status < 500, (what, status, answer)
    if status >= 400:
        assert isinstance(answer, dict) and answer.get("Message"), (what, status, answer)


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=FIND_BODIES | JSON_VALUES)
def test_fuzz_tools_find_bodies(server: PipacsProcess, body: Any) -> None:
    text = json.dumps(body)
    status, answer = call(server, "POST", "/tools/find", text)
    answered_sanely(status, answer, text)


ARGUMENT_TEXT = (st.integers(min_value=-(2**80), max_value=2**80).map(str)
                 | st.text(max_size=12) | st.sampled_from(["", "1e9", "0x10", "nan", "-0",
                                                           "1" * 40, "%", "1,2", " 5 "]))
ROUTES = ["/patients", "/studies?expand", "/series", "/instances", "/changes", "/exports",
          "/instances/{instance}/rendered", "/instances/{instance}/preview",
          "/instances/{instance}/frames/0/rendered", "/jobs", "/dicom-web/studies",
          "/dicom-web/studies/{study_uid}/series",
          "/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered",
          "/wado?requestType=WADO&studyUID={study_uid}&seriesUID={series_uid}"
          "&objectUID={sop_uid}&contentType=image%2Fjpeg"]
ARGUMENTS = ["since", "limit", "offset", "expand", "width", "height", "quality", "smooth",
             "window-center", "window-width", "viewport", "window", "rows", "columns",
             "frameNumber", "windowCenter", "windowWidth", "includefield", "fuzzymatching",
             "PatientName", "StudyDate", "last"]


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(route=st.sampled_from(ROUTES),
       args=st.dictionaries(st.sampled_from(ARGUMENTS), ARGUMENT_TEXT, min_size=1, max_size=3))
def test_fuzz_query_arguments(server: PipacsProcess, ids: dict[str, str], route: str,
                              args: dict[str, str]) -> None:
    path = route.format(**ids)
    path += ("&" if "?" in path else "?") + urllib.parse.urlencode(args)
    status, answer = call(server, "GET", path)
    answered_sanely(status, answer, path)


@pytest.fixture(scope="module")
def route_rules(server: PipacsProcess, tmp_path_factory: pytest.TempPathFactory
                ) -> list[tuple[str, str]]:
    """(method, rule) of every route of the server's Bottle app, built in-process from the
    same configuration (its own folders: one process per index)."""
    from pipacs import config as configuration
    from pipacs.context import ServerContext
    from pipacs.http.app import create_app

    folder = tmp_path_factory.mktemp("routes")
    for sub in ("web", "worklists"):
        (folder / sub).mkdir()
    cfg = {**server.config, "Worklists": {"Enable": True, "Database": "worklists"},
           "ServeFolders": {"/web": "web"}}
    settings, _ = configuration.build_settings(cfg, folder)
    context = ServerContext(settings)
    try:
        rules = [(r.method, r.rule) for r in create_app(context).routes]
    finally:
        context.stop()
    # Stopping or restarting the server is what those two routes are for.
    return [(m, r) for m, r in rules if r not in ("/tools/shutdown", "/tools/reset")]


SEGMENT = st.text(st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1,
                  max_size=16)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_every_route(server: PipacsProcess, ids: dict[str, str],
                          route_rules: list[tuple[str, str]], data: st.DataObject) -> None:
    """Any route of the app with made-up path parameters (or real IDs, except to DELETE)
    and a made-up body: never a 5xx. (Made-up names never hit the configured modality or
    peer, which would be a network error: those are not bad input.)"""
    import re

    method, rule = data.draw(st.sampled_from(route_rules))
    real = {"pid": [ids[k] for k in ("patient", "study", "series", "instance")],
            "study": [ids["study_uid"]], "series": [ids["series_uid"]], "sop": [ids["sop_uid"]]}

    def fill(m: re.Match[str]) -> str:
        name, _, spec = m.group(1).partition(":")
        kind, _, arg = spec.partition(":")
        if name in real and method != "DELETE" and data.draw(st.booleans()):
            return str(data.draw(st.sampled_from(real[name])))
        if kind == "re" and data.draw(st.booleans()):
            return str(data.draw(st.sampled_from(arg.split("|"))))
        if kind == "int" and data.draw(st.booleans()):
            return str(data.draw(st.integers(-(2**70), 2**70)))
        parts = data.draw(st.lists(SEGMENT, min_size=1, max_size=3 if kind == "path" else 1))
        return "/".join(urllib.parse.quote(p, safe="") for p in parts)

    path = re.sub(r"<([^>]+)>", fill, rule)
    body = None
    if method in ("POST", "PUT"):
        body = data.draw(JSON_VALUES.map(lambda v: json.dumps(v).encode())
                         | st.binary(max_size=64))
    status, answer = call(server, method, path, body)
    answered_sanely(status, answer, f"{method} {path} {body!r}")
