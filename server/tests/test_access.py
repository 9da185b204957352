"""Who may do what (issue 15): students read, teachers upload and change, the admin runs the
server. Route by route, against a running pipacs with every plugin on.

The routes come from the real Bottle app built from the same configuration (as in
test_security), and EXPECTED below is this file's own account of what each one needs: a route
the app registers that EXPECTED does not name fails test_every_route_is_classified, so a route
added later must be given a class here (and in http/access.py, where anything not named is
admin-only). Each route is then asked by four clients: no credentials (AnonymousRole
"student"), a user with the student role, a teacher, the admin; refused means 401 for the
anonymous client (with the Basic challenge, so a browser offers a login) and 403 for a
logged-in user; allowed means anything else (made-up IDs give 404, empty bodies 400).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

from conftest import PipacsProcess
from conftest import http_request as request
from test_security import basic, concrete, serving_every_plugin

USERS = {"boss": "Adm1n-pass-word", "mrs-smith": "T3acher-pass-word", "pupil": "Stud3nt-pass"}
ROLES = {"mrs-smith": "teacher", "pupil": "student"}  # "boss" is not listed: admin
ACCESS = {"AnonymousRole": "student", "AnonymousNetworks": ["127.0.0.0/8", "::1/128"],
          "RegisteredUsers": USERS, "UserRoles": ROLES}

R = "/<plural:re:patients|studies|series|instances>/<pid>"
INST = "/dicom-web/studies/<study>/series/<series>/instances/<sop>"
READ = {("GET", r) for r in [
    "/", "/web", "/web/", "/web/<rel:path>", "/viewer", "/viewer/", "/viewer/<name>",
    "/system", "/statistics", "/plugins", "/changes", "/tools/now", "/tools/now-local",
    "/<plural:re:patients|studies|series|instances>", R, f"{R}/shared-tags", f"{R}/statistics",
    f"{R}/<rel:re:patient|study|series|studies|instances>", f"{R}/metadata",
    f"{R}/metadata/<name>", f"{R}/attachments", f"{R}/attachments/<name>",
    f"{R}/attachments/<name>/<op>", "/patients/<pid>/protected", "/instances/<pid>/file",
    "/instances/<pid>/tags", "/instances/<pid>/simplified-tags", "/instances/<pid>/header",
    "/instances/<pid>/pdf", "/instances/<pid>/frames",
    "/instances/<pid>/<kind:re:preview|rendered|image-uint8|image-uint16>",
    "/instances/<pid>/frames/<frame:int>/<kind:re:preview|rendered|image-uint8|image-uint16|raw>",
    "/worklists", "/worklists/<wid>", "/wado",
    "/dicom-web/studies", "/dicom-web/series", "/dicom-web/instances",
    "/dicom-web/studies/<study>", "/dicom-web/studies/<study>/series",
    "/dicom-web/studies/<study>/instances", "/dicom-web/studies/<study>/metadata",
    "/dicom-web/studies/<study>/rendered", "/dicom-web/studies/<study>/thumbnail",
    "/dicom-web/studies/<study>/series/<series>",
    "/dicom-web/studies/<study>/series/<series>/instances",
    "/dicom-web/studies/<study>/series/<series>/metadata",
    "/dicom-web/studies/<study>/series/<series>/rendered",
    "/dicom-web/studies/<study>/series/<series>/thumbnail",
    INST, f"{INST}/metadata", f"{INST}/rendered", f"{INST}/thumbnail", f"{INST}/bulk/<path:path>",
    f"{INST}/frames/<frames>", f"{INST}/frames/<frames>/rendered",
    f"{INST}/frames/<frames>/thumbnail",
    "/<plural:re:patients|studies|series>/<pid>/instances-tags", f"{R}/module",
    "/studies/<pid>/module-patient", "/instances/<pid>/content",
    "/instances/<pid>/content/<path:path>", "/instances/<pid>/frames/<frame:int>",
    "/instances/<pid>/numpy", "/instances/<pid>/matlab", "/instances/<pid>/image-int16",
    "/instances/<pid>/frames/<frame:int>/numpy", "/instances/<pid>/frames/<frame:int>/matlab",
    "/instances/<pid>/frames/<frame:int>/image-int16",
    "/instances/<pid>/frames/<frame:int>/raw.gz", "/series/<pid>/numpy", "/tools",
    "/tools/generate-uid", "/tools/dicom-conformance", "/plugins/explorer.js",
    "/ohif", "/ohif/", "/ohif/<rel:path>",
]} | {("POST", "/tools/find"), ("POST", "/tools/lookup"), ("POST", "/tools/bulk-content")}
TEACH = {
    ("POST", "/instances"), ("POST", "/dicom-web/studies"), ("POST", "/dicom-web/studies/<study>"),
    ("DELETE", R), ("POST", f"{R}/<kind:re:modify|anonymize>"), ("PUT", f"{R}/metadata/<name>"),
    ("DELETE", f"{R}/metadata/<name>"), ("PUT", "/patients/<pid>/protected"),
    ("GET", f"{R}/<kind:re:archive|media>"), ("POST", f"{R}/<kind:re:archive|media>"),
    ("POST", "/tools/<kind:re:create-archive|create-media|create-media-extended>"),
    ("POST", "/worklists/create"), ("PUT", "/worklists/<wid>"), ("DELETE", "/worklists/<wid>"),
    ("POST", "/tools/<kind:re:bulk-modify|bulk-anonymize>"), ("POST", "/tools/bulk-delete"),
    ("POST", "/tools/create-dicom"), ("POST", "/studies/<pid>/split"),
    ("POST", "/studies/<pid>/merge"), ("PUT", f"{R}/attachments/<name>"),
    ("DELETE", f"{R}/attachments/<name>"), ("POST", f"{R}/attachments/<name>/verify-md5"),
}
ADMIN = {
    ("GET", "/exports"), ("GET", "/jobs"), ("GET", "/jobs/<job_id>"),
    ("GET", "/jobs/<job_id>/<key>"), *(("POST", f"/jobs/<job_id>/{op}")
                                       for op in ("cancel", "pause", "resubmit", "resume")),
    ("GET", "/modalities"), ("GET", "/modalities/<name>"),
    ("GET", "/modalities/<name>/configuration"),
    *(("POST", f"/modalities/<name>/{op}") for op in ("echo", "move", "query", "store")),
    ("GET", "/peers"), ("GET", "/peers/<name>"), ("GET", "/peers/<name>/configuration"),
    ("POST", "/peers/<name>/store"), ("GET", "/peers/<name>/system"),
    ("GET", "/queries"), ("GET", "/queries/<qid>"), ("DELETE", "/queries/<qid>"),
    ("GET", "/queries/<qid>/<key:re:level|modality|query>"), ("GET", "/queries/<qid>/answers"),
    ("GET", "/queries/<qid>/answers/<n:int>"), ("GET", "/queries/<qid>/answers/<n:int>/content"),
    ("POST", "/queries/<qid>/answers/<n:int>/retrieve"), ("POST", "/queries/<qid>/retrieve"),
    ("GET", "/tools/log-level"), ("PUT", "/tools/log-level"),
    ("POST", "/tools/reset"), ("POST", "/tools/shutdown"),
    # Configuration, the network and the server's own upkeep.
    ("DELETE", "/<kind:re:modalities|peers>/<name>"),
    ("PUT", "/<kind:re:modalities|peers>/<name>"),
    ("DELETE", "/<table:re:changes|exports>"),
    ("POST", f"{R}/attachments/<name>/<op:re:compress|uncompress>"),
    ("POST", f"{R}/reconstruct"), ("POST", "/tools/reconstruct"),
    ("POST", "/modalities/<name>/<route:re:find-patient|find-study|find-series|find-instance>"),
    ("POST", "/modalities/<name>/find"), ("POST", "/modalities/<name>/find-worklist"),
    ("POST", "/modalities/<name>/storage-commitment"),
    ("POST", "/modalities/<name>/store-straight"),
    ("POST", "/peers/<name>/store-straight"), ("GET", "/storage-commitment/<sid>"),
    ("POST", "/storage-commitment/<sid>/remove"),
    ("POST", "/queries/<qid>/answers/<n:int>/"
             "<route:re:query-studies|query-series|query-instances>"),
    ("POST", "/tools/dicom-echo"), ("POST", "/tools/execute-script"),
    ("POST", "/tools/invalidate-tags"),
    *(("GET", f"/tools/{t}") for t in ("accepted-transfer-syntaxes", "default-encoding",
                                       "log-level-<category>", "metrics", "metrics-prometheus",
                                       "unknown-sop-class-accepted")),
    *(("PUT", f"/tools/{t}") for t in ("accepted-transfer-syntaxes", "default-encoding",
                                       "log-level-<category>", "metrics",
                                       "unknown-sop-class-accepted")),
}
# Admin routes that would stop or reload the server under test, or answer 403 to everyone
# (Lua from REST is off: Orthanc's default): only their refusals are asked.
NOT_RUN = {("POST", "/tools/reset"), ("POST", "/tools/shutdown"),
           ("POST", "/tools/execute-script")}

CLIENTS = [("anonymous", None, 0), ("student", ("pupil", USERS["pupil"]), 0),
           ("teacher", ("mrs-smith", USERS["mrs-smith"]), 1), ("admin", ("boss", USERS["boss"]), 2)]


def needed(method: str, rule: str) -> int:
    return 0 if (method, rule) in READ else 1 if (method, rule) in TEACH else 2


@pytest.fixture(scope="module")
def classroom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PipacsProcess, Any]]:
    yield from serving_every_plugin(tmp_path_factory, "classroom", **ACCESS)


def test_every_route_is_classified(classroom: tuple[PipacsProcess, Any]) -> None:
    _, (routes, _) = classroom
    unknown = sorted(set(routes) - READ - TEACH - ADMIN)
    assert not unknown, f"routes without a class in test_access.py (and http/access.py): {unknown}"
    assert not READ & TEACH and not READ & ADMIN and not TEACH & ADMIN


def test_route_by_route(classroom: tuple[PipacsProcess, Any]) -> None:
    p, (routes, _) = classroom
    wrong = []
    for method, rule in routes:
        path = concrete(rule)
        need = needed(method, rule)
        for who, login, rank in CLIENTS:
            if rank >= need and (method, rule) in NOT_RUN:
                continue
            headers = {"Authorization": basic(*login)} if login else {}
            status, answer, body = request(p.url + path, method, b"{}", headers)
            if rank >= need:
                # 501: an Orthanc operation pipacs says it does not offer (README).
                ok = status not in (401, 403) and (status < 500 or status == 501)
            elif login:
                ok = status == 403
            else:
                ok = status == 401 and "Basic" in answer.get("WWW-Authenticate", "")
            if not ok:
                wrong.append((who, method, path, status, body[:80]))
    assert not wrong, wrong


def test_wrong_credentials_are_refused_even_where_anonymous_clients_read(
        classroom: tuple[PipacsProcess, Any]) -> None:
    p, _ = classroom
    for login in [("pupil", "nope"), ("mrs-smith", USERS["boss"]), ("nobody", "x")]:
        status, _, _ = request(p.url + "/studies", headers={"Authorization": basic(*login)})
        assert status == 401, login


def test_teacher_uploads_and_writes_worklists_student_cannot(
        classroom: tuple[PipacsProcess, Any], small_data: list[Path]) -> None:
    p, _ = classroom
    teacher = {"Authorization": basic("mrs-smith", USERS["mrs-smith"])}
    dicom = small_data[0].read_bytes()
    assert request(p.url + "/instances", "POST", dicom)[0] == 401
    status, _, body = request(p.url + "/instances", "POST", dicom, teacher)
    assert status == 200, body
    instance = json.loads(body)["ID"]
    status, _, body = request(p.url + f"/instances/{instance}/tags")
    assert status == 200 and b"PatientID" in body  # the student sees it
    tags = {"PatientID": "WL-1", "PatientName": "Class^Room",
            "ScheduledProcedureStepSequence": [{"Modality": "CT"}]}
    status, _, body = request(p.url + "/worklists/create", "POST",
                              json.dumps({"Tags": tags}).encode(), teacher)
    assert status == 200, body
    assert request(p.url + "/worklists")[0] == 200
    assert request(p.url + f"/instances/{instance}", "DELETE")[0] == 401
    assert request(p.url + f"/instances/{instance}", "DELETE", None, teacher)[0] == 200
    assert request(p.url + "/tools/shutdown", "POST", b"", teacher)[0] == 403


def test_anonymous_networks_limit_who_reads_without_a_login(make_pipacs: Any) -> None:
    """A loopback client outside AnonymousNetworks must log in (the school's LAN, say)."""
    p = make_pipacs(AuthenticationEnabled=True, RegisteredUsers=USERS, UserRoles=ROLES,
                    AnonymousRole="student", AnonymousNetworks=["10.42.0.0/24"])
    status, headers, _ = request(p.url + "/studies")
    assert status == 401 and "Basic" in headers.get("WWW-Authenticate", "")
    auth = {"Authorization": basic("pupil", USERS["pupil"])}
    assert request(p.url + "/studies", headers=auth)[0] == 200
    assert request(p.url + "/tools/log-level", headers=auth)[0] == 403


def test_every_welcome_link_opens_for_a_student(classroom: tuple[PipacsProcess, Any]) -> None:
    """The welcome page (the captive portal's target) links only what a student may open."""
    p, _ = classroom
    status, _, page = request(p.url + "/")
    assert status == 200 and b"PIPACS" in page  # the AE title, for sending images
    links = re.findall(r'href="([^"]+)"', page.decode())
    assert {"viewer/", "web/", "dicom-web/studies", "worklists", "system"} <= set(links), links
    for link in links:
        status, _, body = request(urljoin(p.url + "/", link))
        assert status == 200, (link, status, body[:80])
